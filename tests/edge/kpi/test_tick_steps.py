"""The KPI tick in steps (`KpiService.tick_in_steps`, issue 17): other tasks run between its
groups of machines, and what it returns and stores is what the one-step `tick` gives with
the same events after it. Real SQLite stores, a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_kpi import Clock, berlin, make_plant, st

from edge.kpi.service import MACHINES_PER_STEP, KpiService
from edge.kpi.store import OeeOp, OeeStore, OeeStoreResult, SaveOp
from models.machine_state import Execution as X

MACHINES = tuple(f"m{i:02d}" for i in range(5 * MACHINES_PER_STEP))
FIRST, LAST = MACHINES[0], MACHINES[-1]  # exported in the first / the last step
END = berlin(14, 0, 5)  # the tick after the day shift ended at 14:00


class Recorded:
    """The store, applied at once, with the saves kept in queue order (the writer's FIFO)."""

    def __init__(self, store: OeeStore) -> None:
        self.store = store
        self.saves: list[SaveOp] = []

    def submit(self, op: OeeOp, done: Callable[[OeeStoreResult | Exception], None]) -> None:
        if isinstance(op, SaveOp):
            self.saves.append(op)
        self.store.submit(op, done)


def service(path: Path, clock: Clock) -> tuple[KpiService, Recorded]:
    store = OeeStore(path / "oee.sqlite3")
    writes = Recorded(store)
    kpi = KpiService(make_plant(machines=MACHINES), store, clock, writes=writes)
    for i, asset in enumerate(MACHINES):  # a day shift of work, each machine its own parts
        kpi.on_state(asset, st(X.ACTIVE, 0, 0, asset), berlin(6))
        kpi.on_state(asset, st(X.ACTIVE, 100 + i, i % 3, asset), berlin(13, 59))
    return kpi, writes


def part(kpi: KpiService, asset: str) -> None:
    """A poll reading one more part at the tick's time (`on_state` saves it at once)."""
    kpi.on_state(asset, st(X.ACTIVE, 1000, 7, asset), END)


def stored(kpi: KpiService) -> dict[str, Any]:
    return {a: (s.state, s.cursor, s.alive) for a in MACHINES
            if (s := kpi.store.load(a)) is not None} | {"last_tick": kpi.store.last_tick()}


async def stepped(kpi: KpiService, during: Callable[[], None]
                  ) -> tuple[list[tuple[str, dict[str, Any]]], list[SaveOp]]:
    """`tick_in_steps` with a poll task calling `during` the first time the tick lets it
    run; returns the records and the saves the tick had queued by then."""
    seen: list[list[SaveOp]] = []
    writes = kpi.writes
    assert isinstance(writes, Recorded)
    base = len(writes.saves)

    def poll() -> None:
        seen.append(writes.saves[base:])
        during()

    # ready before the tick starts: it runs at the tick's first pause, or after the tick
    # if the tick never lets the loop run (then `seen` is still empty when it returns)
    asyncio.get_running_loop().call_soon(poll)
    out = await kpi.tick_in_steps()
    assert seen, "the tick never let a poll run"
    return out, seen[0]


async def test_polls_run_mid_tick_and_results_match_the_one_step_tick(tmp_path: Path) -> None:
    clock = Clock(berlin(13, 59, 30))
    one, one_writes = service(tmp_path / "one", clock)
    many, many_writes = service(tmp_path / "many", clock)
    clock.t = END
    before = len(many_writes.saves)

    expected = one.tick()
    part(one, FIRST)
    part(one, LAST)
    got, mid = await stepped(many, lambda: (part(many, FIRST), part(many, LAST)))

    steps = len(MACHINES) // MACHINES_PER_STEP
    assert [len(op.deltas) for op in mid] == [MACHINES_PER_STEP], "no poll after one step"
    assert mid[0].last_tick is None  # the tick's time is stored by its last step
    assert len(many_writes.saves) - before == steps + 2  # a save per step, two part saves
    assert len(one_writes.saves) - before == 1 + 2
    assert got == expected  # closed shifts then running ones, the same figures
    closed = [(a, r["window"]["end"]) for a, r in got if r["window"]["closed"]]
    assert [a for a, _ in closed] == list(MACHINES)  # every machine, the same boundary
    assert len({end for _, end in closed}) == 1
    # The last part of each machine is in the store however its save and the tick's
    # export of it were ordered, and the stores are the same (tick's time included).
    assert stored(many) == stored(one)
    for asset in (FIRST, LAST):
        saved = many.store.load(asset)
        assert saved is not None and saved.state["pending_counts"] == [[1000, 7]]
    for asset in (FIRST, LAST):
        assert many.closed_shifts(asset, berlin(0), berlin(23)) == \
            one.closed_shifts(asset, berlin(0), berlin(23))
    assert many.tick(berlin(14, 0, 10)) == one.tick(berlin(14, 0, 10)) == []  # closed once


async def test_a_machine_a_reload_removes_mid_tick_is_skipped(tmp_path: Path) -> None:
    clock = Clock(berlin(13, 59, 30))
    one, _ = service(tmp_path / "one", clock)
    many, _ = service(tmp_path / "many", clock)
    clock.t = END
    gone = MACHINES[-3]  # in the last step: not reached when the poll runs
    kept = make_plant(machines=tuple(m for m in MACHINES if m != gone))

    expected = one.tick()
    one.reconfigure(kept)
    got, _ = await stepped(many, lambda: many.reconfigure(kept))

    assert got == [(a, r) for a, r in expected if a != gone]
    assert gone not in many.assets
    assert many.closed_shifts(gone, berlin(0), berlin(23)) == []
    assert {a: s for a, s in stored(many).items() if a != gone} == \
        {a: s for a, s in stored(one).items() if a != gone}
