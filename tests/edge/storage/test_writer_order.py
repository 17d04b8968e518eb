"""One writer thread for the OEE store and the outbox: an OEE save queued before an outbox
append is committed before that append's transaction starts.

Why: the gateway promises that a SIGKILL never loses a part the platform has seen
(tests/end_to_end/test_oee_gap.py). `KpiService.on_state` queues the save of a new part
count before the state envelope showing it is sealed; two SQLite files share no
transaction, so the promise rests on the order the one thread commits in. These tests
drive the real KPI service, sealer, batcher and both SQLite files, hold the OEE store's
lock (a checkpoint, say) while the loop goes on, and have the outbox, from inside each of
its transactions, read the OEE file through another connection: every part count an
envelope carries must already be saved there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from held_lock import WatchedLock

from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME, AppendOp, Outbox, OutboxCap, OutboxOp
from edge.egress.sealer import Sealer
from edge.egress.writer import LINGER, OutboxWriter
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME as OEE_FILE
from edge.kpi.store import OeeOp, OeeStore, OeeStoreResult
from edge.signing.jws import Signer, b64url_decode
from edge.storage.writer import StoreWriter, WriterThread
from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import Destination, Plant
from models.sample import utc_now

TOPIC = "t/m1/state"
PARTS = 6


def plant() -> Plant:
    return Plant.model_validate({
        "gateway": {"id": "gw", "site": "s1"},
        "machines": [{"id": "m1", "area": "a", "line": "l", "adapter": "modbus",
                      "ideal_cycle_time": 1.0, "connection": {}}],
        "shifts": {"timezone": "UTC", "shifts": [
            {"name": "day", "start": "00:00", "end": "23:59"}]},
    })


def saved_parts(store: OeeStore) -> int:
    """The part counter as the committed OEE state holds it (what a restart would find),
    read on the store's reader connection: another connection than the writer's."""
    saved = store.load("m1")
    if saved is None:
        return -1
    pending = saved.state["pending_counts"]  # counts of the engine's newest instant
    last = pending[-1][0] if pending else saved.state["last_total"]
    return -1 if last is None else int(last)


class OeeJournal(OeeStore):
    """A real OEE store that notes each transaction it commits, in order."""

    journal: list[str]

    def apply(self, ops: Sequence[OeeOp]) -> list[OeeStoreResult]:
        results = super().apply(ops)
        self.journal.append(f"oee x{len(ops)}")
        return results


class WitnessOutbox(Outbox):
    """A real outbox that, as each of its transactions starts (on the writer thread), reads
    the OEE file: (the part count the envelope carries, the count saved in the OEE store)."""

    oee: OeeJournal
    seen: list[tuple[int, int]]

    def apply(self, ops: Sequence[OutboxOp]) -> list[dict[str, bool] | int]:
        saved = saved_parts(self.oee)
        for op in ops:
            if isinstance(op, AppendOp):
                body = json.loads(b64url_decode(json.loads(op.payload)["payload"]))
                self.seen.append((body["records"][0]["part_count"], saved))
        self.oee.journal.append(f"outbox x{len(ops)}")
        return super().apply(ops)


class Machine:
    """The gateway's path for one machine's part: KPI service first, then the state
    envelope (edge/devices/fleet.py `on_samples` does it in this order)."""

    def __init__(self, tmp_path: Path, shared: bool) -> None:
        self.oee = OeeJournal(tmp_path / OEE_FILE)
        self.oee.journal = []
        self.outbox = WitnessOutbox(tmp_path / FILENAME, caps={"a": OutboxCap(1 << 30)})
        self.outbox.oee, self.outbox.seen = self.oee, []
        if shared:  # as the gateway wires it
            self.thread: WriterThread | None = WriterThread(name="store-writer", linger=LINGER)
            self.oee_writer = StoreWriter(self.oee, self.thread)
            self.writer = OutboxWriter(self.outbox, self.thread)
        else:  # a thread each: no order between the two stores
            self.thread = None
            self.oee_writer = StoreWriter.alone(self.oee, name="oee-writer")
            self.writer = OutboxWriter(self.outbox)
        self.kpi = KpiService(plant(), self.oee, writes=self.oee_writer)
        sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), self.writer,
                        [Destination(id="a", url="mqtt://127.0.0.1")], lambda _d: True)
        self.egress = Egress(sealer, [], structlog.get_logger(), max_delay=10.0)

    def part(self, count: int) -> None:
        state = MachineState("m1", Availability.AVAILABLE, Execution.ACTIVE,
                             ControllerMode.AUTOMATIC, program="p1", part_count=count,
                             bad_part_count=0)
        self.kpi.on_state("m1", state, utc_now())
        self.egress.emit(TOPIC, "m1", "state", [{"part_count": count}])

    async def close(self) -> None:
        await self.oee_writer.close()
        await self.writer.close()
        if self.thread is not None:
            await self.thread.close()
        self.outbox.close()
        self.oee.close()


async def test_a_part_count_save_commits_before_the_envelope_showing_it(tmp_path: Path) -> None:
    m = Machine(tmp_path, shared=True)
    m.oee._lock = held = WatchedLock()  # type: ignore[assignment]
    with held:  # the OEE store is inside a long transaction (a checkpoint, say)
        m.part(1)
        assert await asyncio.to_thread(held.waiting.wait, 10), "the writer never came"
        for count in range(2, PARTS + 1):  # the next parts queue behind the blocked save
            m.part(count)
        # the thread is blocked on the OEE save: the envelopes behind it wait too
        assert m.outbox.seen == [] and m.outbox.peek("a") == []
    await m.writer.drain()
    assert [n for n, _ in m.outbox.seen] == list(range(1, PARTS + 1))
    assert all(saved >= shown for shown, saved in m.outbox.seen), m.outbox.seen
    # each store's consecutive operations share a transaction; the order is the loop's
    assert m.oee.journal[0] == "oee x1"  # the one the thread took before blocking
    assert m.oee.journal[-1].startswith("outbox")
    assert saved_parts(m.oee) == PARTS
    await m.writer.close()  # the outbox's writer stops; the shared thread serves OEE on
    m.part(PARTS + 1)
    await m.oee_writer.drain()
    assert saved_parts(m.oee) == PARTS + 1
    await m.close()


async def test_with_a_thread_per_store_the_same_check_catches_the_lost_part(
        tmp_path: Path) -> None:
    """Why one thread: with two, the outbox commits while the OEE save waits, and a
    SIGKILL then would lose a part the platform had seen (the check above can fail)."""
    m = Machine(tmp_path, shared=False)
    m.oee._lock = held = WatchedLock()  # type: ignore[assignment]
    with held:
        m.part(1)
        await m.writer.drain()  # the outbox's own thread commits the envelope
        assert m.outbox.seen == [(1, -1)], "shown before its save committed"
    await m.close()
