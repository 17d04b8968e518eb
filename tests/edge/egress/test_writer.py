"""The outbox's writer thread: grouped commits, reads that never wait for it, a chain that
never forks, losses counted and reported, and acknowledged rows kept claimed until their
delete commits.

Why: moving appends and acks off the event loop must keep the outbox's promises (durable
before sent, the chain head committed with its row, nothing evicted that may have been
delivered); these tests drive the real sealer, batcher and SQLite file and read it back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import until
from held_lock import WatchedLock

from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME, AppendOp, Outbox, OutboxCap, OutboxError, OutboxOp
from edge.egress.sealer import Sealer
from edge.egress.writer import OutboxWriter
from edge.signing.jws import Signer, b64url_decode, signing_input_hash
from models.plant import Destination

TOPIC = "t/m1/telemetry"


class FlakyOutbox(Outbox):
    """A real outbox whose disk "fails" `failures` times for the append of seq `fail_seq`
    (grouped, then alone)."""

    fail_seq = 5
    failures = 2

    def apply(self, ops: Sequence[OutboxOp]) -> list[dict[str, bool] | int]:
        if self.failures and any(isinstance(o, AppendOp) and o.seq == self.fail_seq
                                 for o in ops):
            self.failures -= 1
            raise OutboxError("disk I/O error (injected)")
        return super().apply(ops)


class Idle:
    """A sender as the batcher sees it: woken, never run."""

    name = "a"

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def record(i: int) -> dict[str, object]:
    return {"signal": "s", "value": i, "unit": None, "ts": "2026-12-06T07:00:00.000Z",
            "quality": "good"}


def chain_of(outbox: Outbox, topic: str = TOPIC) -> list[tuple[int, list[Any]]]:
    """(seq, values) of every envelope stored on `topic`, checking that each prev links."""
    out, last = [], None
    for row in outbox.peek("a", None, 10_000):
        if row.topic != topic:
            continue
        env = json.loads(row.payload)
        body = json.loads(b64url_decode(env["payload"]))
        assert body["prev"] == last, f"chain broken at seq {body['seq']}"
        last = signing_input_hash(env)
        out.append((body["seq"], [r.get("value") for r in body["records"]]))
    return out


def make(tmp_path: Path, cls: type[Outbox] = Outbox, cap: int = 1 << 30, *,
         ack_linger: float = 0.5) -> tuple[Outbox, OutboxWriter, Egress, Idle]:
    log = structlog.get_logger()
    outbox = cls(tmp_path / FILENAME, caps={"a": OutboxCap(cap)})
    writer = OutboxWriter(outbox, ack_linger=ack_linger)
    sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), writer,
                    [Destination(id="a", url="mqtt://127.0.0.1")], lambda _d: True)
    sender = Idle()
    return outbox, writer, Egress(sealer, [sender], log, max_delay=10.0), sender


async def test_appends_are_grouped_and_the_loop_never_waits_for_the_disk(tmp_path: Path) -> None:
    outbox, writer, egress, sender = make(tmp_path)
    outbox._lock = held = WatchedLock()  # type: ignore[assignment]
    with held:  # the writer is inside a long transaction (a checkpoint, say)
        t0 = time.monotonic()
        for i in range(500):
            egress.emit(TOPIC, "m1", "telemetry", [record(i)])
        assert outbox.peek("a") == [] and outbox.pending("a") == (0, 0)
        assert outbox.counters("a")["appended"] == 0  # reads do not wait for the writer
        assert time.monotonic() - t0 < 5  # (they would hang on the held lock)
        # the loop runs while the writer thread takes the group and blocks on the lock: an
        # answer it sent before committing would have run on the loop by then
        assert await asyncio.to_thread(held.waiting.wait, 10), "the writer never came"
        assert egress.envelopes == 0 and sender.woken == 0, "nothing reported before commit"
    await writer.drain()
    assert egress.envelopes == 500 and sender.woken == 500
    stored = chain_of(outbox)
    assert [s for s, _ in stored] == list(range(1, 501))
    assert [v for _, vs in stored for v in vs] == list(range(500))
    assert writer.stats.commits <= 3  # one waiting on the lock, the rest in max_batch groups
    await writer.close()
    outbox.close()


async def test_a_failed_append_rewinds_the_chain_and_the_loss_is_reported(
        tmp_path: Path) -> None:
    outbox, writer, egress, _ = make(tmp_path, FlakyOutbox)
    with outbox._lock:  # all ten queue before the first commit: 6..10 follow the failure
        for i in range(10):
            egress.emit(TOPIC, "m1", "telemetry", [record(i)])
    await writer.drain()
    assert egress.lost_records == 6 and egress.losses.unreported()
    for i in range(10, 13):
        egress.emit(TOPIC, "m1", "telemetry", [record(i)])
    await writer.drain()  # the first success queued the signed gap envelope
    await writer.drain()
    stored = chain_of(outbox)  # asserts every prev links: no fork, no skipped seq
    assert [s for s, _ in stored] == list(range(1, 8))
    assert [v for _, vs in stored for v in vs] == [0, 1, 2, 3, 10, 11, 12]
    [(_, [gap])] = chain_of(outbox, "t/m1/gap")  # reported, signed, on the gap topic
    assert gap is None  # a gap record has no value; its counts are below
    body = json.loads(b64url_decode(json.loads(outbox.peek("a", None, 100)[-1].payload)
                                    ["payload"]))
    assert body["stream"] == "gap" and body["records"][0]["records"] == 6
    assert egress.losses.snapshot()["unreported_gaps"] == 0
    await writer.close()
    outbox.close()


async def test_an_acknowledged_row_stays_claimed_until_its_delete_commits(
        tmp_path: Path) -> None:
    """Between PUBACK and the committed delete a row must neither be evicted (it was
    delivered: `dropped` would lie) nor published again by a sender whose cursor rewound."""
    probe, pw, pe, _ = make(tmp_path / "probe")
    pe.emit(TOPIC, "m1", "telemetry", [record(0)])
    await pw.close()
    size = probe.pending("a")[1]
    probe.close()
    outbox, writer, egress, _ = make(tmp_path, cap=int(size * 2.5))
    for i in range(2):
        egress.emit(TOPIC, "m1", "telemetry", [record(i)])
    await writer.drain()
    first, second = outbox.peek("a")
    assert writer.claim("a", first.id)
    with outbox._lock:  # the writer is busy: what follows waits in its queue
        egress.emit(TOPIC, "m1", "telemetry", [record(2)])  # over the cap: evicts...
        writer.ack("a", [first.id])  # PUBACK came; the delete is queued behind the append
        writer.release("a", first.id)  # the sender's `finally`: not an un-claim now
        assert not writer.claim("a", first.id), "acknowledged: not published again"
    await writer.drain()
    assert outbox.counters("a") == {"appended": 3, "acked": 1, "dropped": 1, "rejected": 0}
    assert [r.id for r in outbox.peek("a")] == [second.id + 1], "...the unclaimed row"
    assert not writer.claim("a", second.id)  # evicted: refused, never published
    await writer.close()
    outbox.close()


async def test_a_delete_shares_the_next_appends_commit_or_goes_after_the_linger(
        tmp_path: Path) -> None:
    """At 1 s polls each envelope cost two commits and two wake-ups of the thread, one for
    its append and one for its delete; deletes now wait for the next append. Meanwhile
    the row stays claimed: not published again, not evicted."""
    outbox, writer, egress, _ = make(tmp_path, ack_linger=0.3)
    egress.emit(TOPIC, "m1", "telemetry", [record(0)])
    await writer.drain()
    [first] = outbox.peek("a")
    assert writer.claim("a", first.id)
    writer.ack("a", [first.id])
    writer.release("a", first.id)
    assert not writer.claim("a", first.id), "acknowledged: never published again"
    await writer._writer.drain()  # the thread is idle: what it was given is committed
    assert outbox.pending("a")[0] == 1, "the delete is held, not handed to the thread"
    commits = writer.stats.commits
    egress.emit(TOPIC, "m1", "telemetry", [record(1)])
    await until(lambda: egress.envelopes == 2, what="the second append")
    assert writer.stats.commits == commits + 1, "the delete went with the append"
    assert [r.id for r in outbox.peek("a")] == [first.id + 1]
    assert outbox.counters("a")["acked"] == 1
    # no append follows: the delete goes by itself within the linger
    writer.ack("a", [first.id + 1])
    assert outbox.pending("a")[0] == 1
    await until(lambda: outbox.pending("a") == (0, 0), within=5, what="the lone delete")
    assert outbox.counters("a") == {"appended": 2, "acked": 2, "dropped": 0, "rejected": 0}
    await writer.close()
    outbox.close()


async def test_close_commits_the_deletes_still_held(tmp_path: Path) -> None:
    outbox, writer, egress, _ = make(tmp_path, ack_linger=3600)
    egress.emit(TOPIC, "m1", "telemetry", [record(0)])
    await writer.drain()
    [row] = outbox.peek("a")
    writer.ack("a", [row.id])
    await writer.close()
    assert outbox.peek("a") == [] and outbox.counters("a")["acked"] == 1
    outbox.close()


async def test_a_claim_and_an_eviction_in_progress_never_both_win(tmp_path: Path) -> None:
    """The writer picks victims under the claims lock, so a claim on the loop either comes
    first (the row is spared) or finds the row doomed (and is refused)."""
    outbox = Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(3 * 101)})
    h = "A" * 43
    seq = 0

    def put() -> dict[str, bool]:
        nonlocal seq
        seq += 1
        return outbox.append("t", seq, h, b"x" * 100, retain=False, dests=["a"])

    for _ in range(3):
        put()
    rows = outbox.peek("a")
    inside = threading.Event()
    proceed = threading.Event()
    real = outbox._victims

    def slow_victims(*args: Any) -> tuple[list[int], int]:
        got = real(*args)
        inside.set()
        proceed.wait(5)  # the transaction has chosen, not yet committed
        return got

    outbox._victims = slow_victims  # type: ignore[method-assign]
    appender = threading.Thread(target=put)
    appender.start()
    assert inside.wait(5)
    assert not outbox.claim("a", rows[0].id), "doomed by the transaction in progress"
    assert outbox.claim("a", rows[1].id)
    proceed.set()
    appender.join(5)
    assert [r.id for r in outbox.peek("a")] == [rows[1].id, rows[2].id, rows[2].id + 1]
    outbox.close()
