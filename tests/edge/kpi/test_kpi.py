"""KpiService on a real SQLite store with an injected clock: the Vorne shift end to end,
restarts (clean, crash, SIGKILL of a real process), shift closing exactly once, queries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from recording_logger import RecordingLogger

from edge.kpi.oee import OeeEngine
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME, OeeStore
from edge.storage.writer import StoreWriter
from models.machine_state import Availability, MachineState
from models.machine_state import ControllerMode as M
from models.machine_state import Execution as X
from models.plant import EnergyRoles, Plant

EPS = 1e-9
BERLIN = ZoneInfo("Europe/Berlin")
VORNE_SHIFTS = {
    "timezone": "Europe/Berlin",
    "shifts": [
        {
            "name": "day",
            "start": "06:00",
            "end": "14:00",
            "breaks": [
                {"start": "09:00", "end": "09:15"},
                {"start": "11:30", "end": "12:00"},
                {"start": "12:45", "end": "13:00"},
            ],
        }
    ],
}
REPO = Path(__file__).resolve().parents[3]


def make_plant(shifts: dict[str, Any] | None = None, machines: tuple[str, ...] = ("m1",)) -> Plant:
    return Plant.model_validate(
        {
            "gateway": {"id": "gw", "site": "s1"},
            "machines": [
                {
                    "id": m,
                    "area": "a",
                    "line": "l",
                    "adapter": "modbus",
                    "ideal_cycle_time": 1.0,
                    "connection": {},
                }
                for m in machines
            ],
            "shifts": VORNE_SHIFTS if shifts is None else shifts,
        }
    )


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def berlin(h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(2024, 6, 5, h, mi, s, tzinfo=BERLIN)  # a Wednesday


def st(execution: X | None, parts: int | None, bad: int | None, asset: str = "m1") -> MachineState:
    return MachineState(
        asset,
        Availability.AVAILABLE,
        execution,
        M.AUTOMATIC,
        program="p1",
        part_count=parts,
        bad_part_count=bad,
    )


def closed(out: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for _, r in out if r["window"]["closed"]]


# The Vorne shift (docs/oee.md): 47 min stop, ideal 1 s, 19,271 parts, 423 rejects.
VORNE = [
    (berlin(6), st(X.ACTIVE, 0, 0)),
    (berlin(7), st(X.STOPPED, 3000, 50)),
    (berlin(7, 47), st(X.ACTIVE, 3000, 50)),
    (berlin(14), st(X.ACTIVE, 19271, 423)),
]


def test_scripted_shift_gives_the_vorne_figures_and_publishes(tmp_path: Path) -> None:
    clock = Clock(berlin(5, 55))
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        assert kpi.tick(berlin(5, 55)) == []  # between shifts: nothing to publish
        for at, state in VORNE[:-1]:
            kpi.on_state("m1", state, at)
            [(asset, live)] = kpi.tick(at + timedelta(minutes=1))  # the running shift
            assert asset == "m1" and live["window"]["name"] == "day"
            assert live["window"]["closed"] is False
        kpi.on_state("m1", VORNE[-1][1], VORNE[-1][0])
        out = kpi.tick(berlin(14, 0, 5))
        [rec] = closed(out)
        assert kpi.tick(berlin(14, 0, 10)) == []  # closed once; nothing running
    assert rec["window"] == {
        "kind": "shift",
        "name": "day",
        "day": "2024-06-05",
        "start": "2024-06-05T04:00:00.000Z",
        "end": "2024-06-05T12:00:00.000Z",
        "closed": True,
    }
    a, e, q, oee = (rec[k] for k in ("availability", "effectiveness", "quality", "oee"))
    assert [round(x, 4) for x in (a, e, q, oee)] == [0.8881, 0.8611, 0.9780, 0.7479]
    assert rec["time"]["pbt"] == 420 * 60 and rec["time"]["apt"] == 373 * 60
    assert rec["time"]["downtime"]["waiting"] == 47 * 60
    assert sum(rec["time"]["downtime"].values()) == pytest.approx(420 * 60 - 373 * 60)
    assert rec["counts"] == {
        "pq": 19271,
        "gq": 18848,
        "scrap": 423,
        "unplanned_pq": 0,
        "unrated_pq": 0,
    }
    assert rec["losses"]["speed_loss"] == pytest.approx(22380 - 19271)
    assert rec["losses"]["gap"] == 0 and rec["ts"] == "2024-06-05T12:00:05.000Z"


def test_publishes_every_minute_on_a_fixed_cadence(tmp_path: Path) -> None:
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant({}, ("m1", "m2")), store, Clock(berlin(8)))  # 24/7
        times = [berlin(8, 0, s) for s in range(0, 60, 5)] + [berlin(8, 1, 1), berlin(8, 1, 2)]
        published = [t for t in times if kpi.tick(t)]
        assert published == [berlin(8), berlin(8, 1, 1)]
        assert [a for a, _ in kpi.tick(berlin(8, 2))] == ["m1", "m2"]  # due at 8:02:00
        assert kpi.next_due(berlin(8, 2)) == berlin(8, 3)
        assert kpi.tick(berlin(7, 50))  # the clock was set back: the cadence restarts...
        assert kpi.tick(berlin(7, 50, 30)) == []  # ...rather than publishing every tick
        assert kpi.next_due(berlin(7, 50, 30)) == berlin(7, 51)


def reference(
    before: list[tuple[datetime, MachineState]],
    gap: tuple[datetime, datetime],
    after: list[tuple[datetime, MachineState]],
) -> OeeEngine:
    """The pure engine fed what the service should have seen, gap included."""
    eng = OeeEngine("m1", make_plant().shifts, 1.0, {})
    for events in (before, after):
        if events is after:
            eng.on_gap(*gap)
        for at, s in events:
            eng.on_state(at, s.execution, True, s.program, False, s.controller_mode)
            eng.on_counts(at, s.part_count or 0, s.bad_part_count or 0)
    return eng


def test_restart_mid_shift_loses_nothing_and_counts_the_downtime(tmp_path: Path) -> None:
    before = [*VORNE[:3], (berlin(9, 55), st(X.ACTIVE, 6000, 60))]
    after = [(berlin(10, 5), st(X.ACTIVE, 6300, 62)), (berlin(14), st(X.ACTIVE, 19271, 423))]
    clock = Clock(berlin(6))
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        for at, s in before:
            kpi.on_state("m1", s, at)
            kpi.tick(at)
        clock.t = berlin(10)
        kpi.close()  # clean shutdown at 10:00
    clock.t = berlin(10, 5)  # ... back 5 minutes later
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        for at, s in after:
            kpi.on_state("m1", s, at)
        [rec] = closed(kpi.tick(berlin(14, 1)))
    assert rec["time"]["downtime"]["unavailable"] == 300 and rec["losses"]["gap"] == 300
    assert rec["time"]["apt"] == (373 - 5) * 60
    # parts made while down (6000 -> 6300) are in neither PQ nor GQ
    assert rec["counts"]["pq"] == 6000 + (19271 - 6300)
    assert rec["counts"]["scrap"] == 60 + (423 - 62)
    ref = reference(before, (berlin(10), berlin(10, 5)), after)
    r = ref.window(berlin(6), berlin(14), now=berlin(14, 1))
    assert (rec["availability"], rec["effectiveness"], rec["quality"], rec["oee"]) == (
        r.availability,
        r.effectiveness,
        r.quality,
        r.oee,
    )


def test_crash_without_close_restores_the_last_tick(tmp_path: Path) -> None:
    clock = Clock(berlin(6))
    store = OeeStore(tmp_path / FILENAME)
    kpi = KpiService(make_plant(), store, clock)
    kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(6))
    kpi.tick(berlin(8))
    kpi.on_state("m1", st(X.ACTIVE, 100, 0), berlin(8, 0, 3))  # a part event: saved at once
    kpi.on_state("m1", st(X.STOPPED, 100, 0), berlin(8, 0, 4))  # no part: lost with the tick
    store.close()  # the process "dies": no kpi.close()
    clock.t = berlin(8, 10)
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        rec = kpi.window("m1", "range", berlin(6), berlin(8, 10))
    assert rec is not None and rec["window"]["closed"] is True
    assert rec["time"]["apt"] == 2 * 3600 + 3 and rec["counts"]["pq"] == 100
    assert rec["losses"]["gap"] == rec["time"]["downtime"]["unavailable"] == 600 - 3


def test_a_part_event_saves_only_its_machine(tmp_path: Path) -> None:
    """Saving every engine on any machine's part cost a fifth of the gateway's CPU at 50
    machines; the others wait for the tick (their `alive` stays that of the tick)."""
    clock = Clock(berlin(6))
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(machines=("m1", "m2")), store, clock)
        kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(6))
        kpi.on_state("m2", st(X.ACTIVE, 0, 0, "m2"), berlin(6))
        kpi.tick(berlin(8))
        kpi.on_state("m1", st(X.ACTIVE, 100, 0), berlin(8, 0, 3))
        m1, m2 = store.load("m1"), store.load("m2")
        assert m1 is not None and m1.alive == berlin(8, 0, 3)
        assert m2 is not None and m2.alive == berlin(8)


CHILD = r"""
import sys
from datetime import UTC, datetime, timedelta
from edge.kpi.service import KpiService
from edge.kpi.store import OeeStore
from models.machine_state import Availability, Execution, MachineState
from models.plant import EnergyRoles, Plant

path, mode = sys.argv[1], sys.argv[2]
plant = Plant.model_validate({"gateway": {"id": "gw", "site": "s"}, "machines": [
    {"id": "m1", "area": "a", "line": "l", "adapter": "modbus", "ideal_cycle_time": 1.0,
     "connection": {}}]})
t0 = datetime(2024, 6, 5, tzinfo=UTC)
kpi = KpiService(plant, OeeStore(path), lambda: t0)
i = 0
while mode == "storm" or i < 23:
    i += 1
    t = t0 + timedelta(seconds=i)
    kpi.on_state("m1", MachineState("m1", Availability.AVAILABLE, Execution.ACTIVE,
                                     part_count=i, bad_part_count=None), t)
    if mode == "storm" or i % 5 == 0:
        kpi.tick(t)
        print(i, flush=True)  # after the commit
print("ready", flush=True)
sys.stdin.read()  # wait for SIGKILL
"""


def child(path: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(proc: subprocess.Popen[str]) -> list[str]:
    """SIGKILL, then every line the child printed that the test has not read yet. Read from
    `proc.stdout` itself: `communicate()` reads the raw pipe and would miss lines an earlier
    `readline()` had already buffered (the last printed tick then looked older than it was)."""
    assert proc.stdout is not None and proc.stdin is not None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.stdin.close()
    return rest.split()


T0 = datetime(2024, 6, 5, tzinfo=UTC)


def test_sigkill_keeps_every_part_and_books_the_gap(tmp_path: Path) -> None:
    """Every part event is saved at once, so SIGKILL loses no part already seen (before
    issue 12 the parts since the last tick were lost); the time from the last save to the
    restart counts as unavailable (gap), and the parts the machine made meanwhile are booked
    in `losses.gap_parts` with the counter at both ends."""
    path = tmp_path / FILENAME
    proc = child(path, "steady")
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != "ready":
        lines.append(line)
    kill(proc)
    assert lines == ["5", "10", "15", "20"]  # events 21-23 came after the last tick
    restart = T0 + timedelta(seconds=100)
    with OeeStore(path) as store:
        kpi = KpiService(make_plant({}), store, Clock(restart))
        rec = kpi.window("m1", "range", T0, restart)
        kpi.on_state("m1", st(X.ACTIVE, 105, None), restart)  # re-baselined after the gap
        kpi.on_state("m1", st(X.ACTIVE, 107, None), restart + timedelta(seconds=2))
        after = kpi.window("m1", "range", restart, restart + timedelta(seconds=2))
    assert rec is not None and after is not None
    assert rec["time"]["apt"] == 22 and rec["counts"]["pq"] == 22  # 1 s .. 23 s
    assert rec["losses"]["gap"] == rec["time"]["downtime"]["unavailable"] == 77
    assert rec["time"]["downtime"]["no_data"] == 1  # before the first report
    assert after["counts"]["pq"] == 2 and after["time"]["apt"] == 2
    (gap,) = kpi.window("m1", "range", T0, restart + timedelta(seconds=2))["losses"]["gap_parts"]
    assert (gap["counter"], gap["parts"]) == ([23, 105], 82)  # 1 + 22 + 82 + 2 = 107


def test_sigkill_during_saves_leaves_a_sound_store(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    proc = child(path, "storm")
    assert proc.stdout is not None
    seen = 0
    while seen < 300:  # kill at an arbitrary point of a stream of saves
        seen = int(proc.stdout.readline())
    last = int(([str(seen), *kill(proc)])[-1])
    log = RecordingLogger()
    with OeeStore(path, logger=log) as store:
        saved = store.load("m1")
        assert saved is not None and not log.named("oee_store_corrupt_moved_aside")
        k = round((saved.alive - T0).total_seconds())
        assert k in (last, last + 1)  # the commit may precede its print
        eng = OeeEngine.from_state_dict(saved.state, make_plant({}).shifts, 1.0)
        assert eng.window(T0, saved.alive).pq == k - 1


def test_shift_end_across_a_restart_publishes_exactly_once(tmp_path: Path) -> None:
    clock = Clock(berlin(13, 59))
    path = tmp_path / FILENAME
    store = OeeStore(path)
    kpi = KpiService(make_plant(), store, clock)
    kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(13, 59))
    kpi.tick(berlin(13, 59, 58))
    store.close()  # killed at 13:59:59; back at 14:00:05
    clock.t = berlin(14, 0, 5)
    store = OeeStore(path)
    kpi = KpiService(make_plant(), store, clock)
    [rec] = closed(kpi.tick(berlin(14, 0, 5)))
    assert rec["losses"]["gap"] == 2  # 13:59:58 - 14:00 of the shift, unavailable
    assert rec["time"]["apt"] == 58
    assert kpi.tick(berlin(14, 0, 10)) == []
    store.close()  # killed right after the shift was closed, before anything else
    clock.t = berlin(14, 0, 20)
    with OeeStore(path) as store:
        kpi = KpiService(make_plant(), store, clock)
        assert kpi.tick(berlin(14, 0, 20)) == []
        assert kpi.closed_shifts("m1", berlin(0), berlin(23)) == [rec]
        assert kpi.window("m1", "shift", berlin(10)) == rec  # served from the store


def test_clean_shutdown_between_shift_end_and_tick_still_closes(tmp_path: Path) -> None:
    clock = Clock(berlin(13))
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(13))
        kpi.tick(berlin(13, 59, 59))
        kpi.close(berlin(14, 0, 1))
    clock.t = berlin(15)
    with OeeStore(tmp_path / FILENAME) as store:
        [rec] = closed(KpiService(make_plant(), store, clock).tick(berlin(15)))
    assert rec["time"]["apt"] == 3600 and rec["losses"]["gap"] == 0


def test_queries(tmp_path: Path) -> None:
    clock = Clock(berlin(10))
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, clock)
        kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(6))
        kpi.on_state("m1", st(X.READY, 1000, 10), berlin(9, 30))
        shift = kpi.window("m1", "shift")
        hour = kpi.window("m1", "last_hour")
        two = kpi.window("m1", "last_hour", hours=2)
        today = kpi.window("m1", "today")
        rng = kpi.window("m1", "range", berlin(6), berlin(7))
        assert kpi.window("m1", "shift", berlin(20)) is None
        with pytest.raises(ValueError, match="unknown"):
            kpi.window("m1", "week")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs start"):
            kpi.window("m1", "range", berlin(6))
        with pytest.raises(KeyError):
            kpi.window("nope", "today")
    assert shift and hour and two and today and rng
    assert shift["window"]["closed"] is False
    assert shift["window"]["end"] == "2024-06-05T08:00:00.000Z"
    assert shift["time"]["apt"] == (3.5 - 0.25) * 3600  # 06:00-09:30 minus the 09:00 break
    assert hour["time"]["apt"] == 900 and hour["time"]["downtime"]["waiting"] == 1800
    assert two["time"]["apt"] == 3600 + 900 and two["window"]["kind"] == "last_hour"
    assert today["window"]["day"] == "2024-06-05" and today["time"]["pbt"] == shift["time"]["pbt"]
    assert rng["window"]["closed"] is True and rng["time"]["apt"] == 3600


def test_event_edge_cases_and_store_failure(tmp_path: Path) -> None:
    log = RecordingLogger()
    clock = Clock(berlin(7))
    store = OeeStore(tmp_path / FILENAME)
    kpi = KpiService(make_plant(), store, clock, logger=log)
    kpi.on_state("m1", st(X.ACTIVE, 10, None), berlin(7))  # no bad counter: 0
    kpi.on_state("m1", st(X.ACTIVE, 20, None), berlin(7, 1))
    kpi.on_state("m1", st(X.ACTIVE, -1, 0), berlin(7, 2))  # refused, logged once
    kpi.on_state("ghost", st(X.ACTIVE, 1, 0, "ghost"), berlin(7, 2))  # unknown: ignored
    alarm = MachineState("m1", Availability.AVAILABLE, X.READY, M.AUTOMATIC, alarms=("E42",))
    kpi.on_state("m1", alarm, berlin(7, 3))
    kpi.on_unavailable("m1", berlin(7, 4))
    rec = kpi.window("m1", "range", berlin(7), berlin(7, 5), now=berlin(7, 5))
    assert rec is not None
    assert (rec["counts"]["pq"], rec["counts"]["scrap"]) == (10, 0)
    assert rec["time"]["downtime"]["alarm"] == 60 and rec["time"]["downtime"]["unavailable"] == 60
    assert len(log.named("oee_event_refused")) == 1
    store.close()  # the disk goes away: ticks still publish, the failure is logged once
    assert closed(kpi.tick(berlin(14, 1)))
    kpi.tick(berlin(14, 2))
    assert len(log.named("oee_store_save_failed")) == 1


def test_reconfigure_and_corrupt_store(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"garbage" * 1000)
    log = RecordingLogger()
    clock = Clock(berlin(7))
    with OeeStore(path, logger=log) as store:
        assert log.named("oee_store_corrupt_moved_aside")
        kpi = KpiService(make_plant(), store, clock)
        assert kpi.assets == ["m1"]
        kpi.on_state("m1", st(X.ACTIVE, 0, 0), berlin(7))
        clock.t = berlin(8)
        kpi.reconfigure(make_plant(machines=("m2",)))
        assert kpi.assets == ["m2"]
        clock.t = berlin(9)
        kpi.reconfigure(make_plant(machines=("m1", "m2")))  # m1 back: restored with a gap
        rec = kpi.window("m1", "range", berlin(7), berlin(9))
    assert rec is not None
    assert rec["time"]["apt"] == 3600 and rec["losses"]["gap"] == 3600


def test_reconfigure_applies_gateway_oee_settings(tmp_path: Path) -> None:
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(make_plant(), store, Clock(berlin(7)))
        plant = make_plant()
        oee = plant.gateway.oee.model_copy(
            update={"publish_every": 5, "raw_retention_days": 3, "window_retention_days": 30}
        )
        gateway = plant.gateway.model_copy(update={"oee": oee})
        kpi.reconfigure(plant.model_copy(update={"gateway": gateway}))
        assert kpi.publish_every == timedelta(seconds=5)
        assert store.raw_retention == timedelta(days=3)
        assert store.window_retention == timedelta(days=30)


async def test_with_the_writer_thread_a_tick_never_waits_and_a_shift_closes_once(
    tmp_path: Path,
) -> None:
    """The gateway's saves go through the store's writer thread: a tick with the store
    busy (a checkpoint, say) returns at once; the shift it closed is handed out by the
    next tick, once the save committed, exactly once; cursors advance only on commit, so
    saves queued back to back store every record exactly once."""
    clock = Clock(berlin(13))
    with OeeStore(tmp_path / FILENAME) as store:
        writer = StoreWriter.alone(store, name="oee-writer")
        kpi = KpiService(make_plant(), store, clock, writes=writer)
        with store._lock:  # the writer thread is held inside a transaction
            for i in range(1, 6):  # five part counts: five saves queued behind it
                kpi.on_state("m1", st(X.ACTIVE, i * 10, 0), berlin(13, i))
            out = kpi.tick(berlin(14, 0, 5))  # closes the day shift; nothing stored yet
            assert closed(out) == []
            assert kpi.next_due(berlin(14, 0, 5)) == berlin(14, 0, 5), "ask again at once"
        await writer.drain()
        [rec] = closed(kpi.tick(berlin(14, 0, 6)))
        assert rec["counts"]["pq"] == 40  # 10 -> 50
        assert closed(kpi.tick(berlin(14, 0, 7))) == []
        await writer.close()
    with OeeStore(tmp_path / FILENAME) as store:  # what a restart finds
        again = KpiService(make_plant(), store, Clock(berlin(14, 1)))
        assert closed(again.tick(berlin(14, 1))) == [], "stored as closed: not published again"
        [stored] = again.closed_shifts("m1", berlin(6), berlin(14))
        assert stored == rec
        saved = store.load("m1")
    with OeeStore(tmp_path / "inline.sqlite3") as store:  # the same, saved inline
        inline = KpiService(make_plant(), store, Clock(berlin(13)))
        for i in range(1, 6):
            inline.on_state("m1", st(X.ACTIVE, i * 10, 0), berlin(13, i))
        for s in (5, 6, 7):
            inline.tick(berlin(14, 0, s))
        KpiService(make_plant(), store, Clock(berlin(14, 1))).tick(berlin(14, 1))
        expected = store.load("m1")
    assert saved is not None and expected is not None
    assert saved.state["counts"] == expected.state["counts"]  # each record once, none lost
    assert saved.state["segments"] == expected.state["segments"]


def test_an_energy_meter_has_no_oee(tmp_path: Path) -> None:
    """A meter (`meter_for`) makes no parts: an engine would rate it 0 % available all
    shift. It gets none, so no `oee` record, figure or query answer exists for it."""
    plant = make_plant(machines=("m1",))
    meter = plant.machines[0].model_copy(update={
        "id": "m1-meter", "meter_for": "m1", "ideal_cycle_time": None,
        "energy": EnergyRoles(energy_kwh="kwh", power_w="w")})
    plant = plant.model_copy(update={"machines": [*plant.machines, meter]})
    clock = Clock(berlin(8))
    with OeeStore(tmp_path / "o.db") as store:
        kpi = KpiService(plant, store, clock)
        assert kpi.assets == ["m1"]
        kpi.on_state("m1-meter", MachineState("m1-meter"), berlin(8))  # ignored, not an error
        clock.t = berlin(9)
        assert [asset for asset, _ in kpi.tick()] == ["m1"]
        assert kpi.current_shift_result("m1-meter") is None
        with pytest.raises(KeyError):
            kpi.window("m1-meter", "shift")
        kpi.reconfigure(plant)
        assert kpi.assets == ["m1"]
