"""The outbox as the event loop uses it in the gateway: reads direct, every write queued on
a writer thread (edge/storage/writer.py; the gateway's one, shared with the OEE store),
several to a transaction.

Why: the py-spy profile (bench/report-issue17.md) put the SQLite outbox (append + ack) at
about a fifth of the gateway's CPU, all of it on the event loop, and every WAL
auto-checkpoint held the loop for 5-15 ms, so polls due then stalled. Now the loop signs
and queues; the thread commits.

The outbox's guarantees stay (edge/egress/outbox.py):
- durable before sent: a sender reads rows with `peek`, which sees only committed rows, and
  is woken by the append's `done`, which runs after the commit;
- the chain head with the row: each `AppendOp` stores its envelope and its chain head in
  one transaction; the sealer advances its in-memory chain when it queues and rewinds it
  when an append fails (edge/egress/sealer.py), so the chain on disk never forks or skips;
- deleted only after PUBACK: `ack` is called by a sender after PUBACK; the rows stay
  claimed (never evicted) and `claim` refuses them until the delete is committed;
- order: one FIFO queue and one thread, so appends commit in the order the loop issued
  them, and no envelope of a topic overtakes another. In the gateway that thread is
  shared with the OEE store (edge/daemon/gateway.py), so an OEE save queued before an
  append is committed before it.

Deletes wait for company (`ACK_LINGER`): an acknowledged row's delete is held on the loop
until the next append is queued (it then shares that append's transaction and wake-up of
the thread) or at most `ack_linger` seconds. At 1 s polls every envelope used to cost two
wake-ups of the thread and two commits, one for its append and one, a millisecond after
its PUBACK, for its delete; the hand-offs were what made the writer thread dearer than
writing inline at that rate (bench/report-issue17.md, 2i and 2l). Nothing waits for a
delete: the row stays claimed meanwhile (never evicted, never published again), and a
crash before it commits replays the row, a duplicate the platform recognises by (`topic`,
`seq`) as after any crash between PUBACK and delete (edge/egress/outbox.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from functools import partial

from edge.egress.outbox import AckOp, AppendOp, Outbox, OutboxOp, OutboxRow
from edge.signing.jws import ChainState
from edge.storage.writer import StoreWriter, WriterStats, WriterThread

__all__ = ["ACK_LINGER", "LINGER", "OutboxWriter"]

LINGER = 0.005
"""Seconds the writer waits after an append or ack for more to share its commit, while
operations arrive faster than this apart (edge/storage/writer.py; slower, it does not
wait): a few milliseconds on the way to the broker, against envelopes batched for up to
`gateway.batch.max_delay` (50 ms) before they are sealed."""

ACK_LINGER = 0.5
"""Seconds an acknowledged row's delete may wait for the next append to share its commit
(see the module docstring): with polls at 1 s an append comes every few milliseconds from
some machine; a lone machine's delete goes by itself after this long."""


class OutboxWriter:
    """`outbox` with its writes on `thread` (the gateway's, shared with the OEE store; by
    default a thread of its own); the same surface the sealer and the senders use of an
    inline `Outbox` (`load_chain`, `submit`, `peek`, `claim`, `release`, `ack`, `pending`,
    `counters`, `last_id_at_open`)."""

    def __init__(self, outbox: Outbox, thread: WriterThread | None = None, *,
                 ack_linger: float = ACK_LINGER) -> None:
        self.outbox = outbox
        self.last_id_at_open = outbox.last_id_at_open
        self._writer: StoreWriter[OutboxOp, dict[str, bool] | int] = (
            StoreWriter.alone(outbox, name="outbox-writer", linger=LINGER) if thread is None
            else StoreWriter(outbox, thread))
        self._ack_linger = ack_linger
        self._acks: dict[str, list[int]] = {}  # acknowledged, delete not queued yet
        self._ack_timer = False  # a flush is scheduled

    # --- writes: queued ---------------------------------------------------------------

    def submit(self, op: AppendOp, done: Callable[[dict[str, bool] | Exception], None]) -> None:
        """Queue one sealed envelope; `done` runs on the loop with the accepted map, or the
        error, once the transaction that holds it is committed (or failed). Deletes held
        so far go with it."""
        self._flush_acks()
        self._writer.submit(op, partial(_accepted, done))

    def ack(self, dest: str, ids: Iterable[int]) -> None:
        """Delete rows the broker acknowledged (call only after PUBACK): at once they are
        claimed for good; the delete is queued with the next append, or after
        `ack_linger` seconds (module docstring)."""
        wanted = tuple(ids)
        if not wanted:
            return
        self.outbox.acknowledged(dest, wanted)
        self._acks.setdefault(dest, []).extend(wanted)
        if not self._ack_timer:
            self._ack_timer = True
            asyncio.get_running_loop().call_later(self._ack_linger, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = False
        self._flush_acks()

    def _flush_acks(self) -> None:
        """Queue the held deletes, one operation per destination."""
        if not self._acks:
            return
        acks, self._acks = self._acks, {}
        for dest, ids in acks.items():
            done = tuple(ids)
            # answered on the writer thread: only a failure needs handling, and the outbox's
            # claim bookkeeping is thread-safe, so a delete never wakes the event loop
            self._writer.submit(AckOp(dest, done), partial(self._acked, dest, done),
                                on_thread=True)

    def _acked(self, dest: str, ids: tuple[int, ...], result: dict[str, bool] | int | Exception,
               ) -> None:
        if isinstance(result, Exception):
            self.outbox.ack_failed(dest, ids)

    # --- reads: direct, never waiting for the writer ------------------------------------

    def load_chain(self) -> ChainState:
        return self.outbox.load_chain()

    def peek(self, dest: str, after_id: int | None = None, limit: int = 100) -> list[OutboxRow]:
        return self.outbox.peek(dest, after_id, limit)

    def claim(self, dest: str, row_id: int) -> bool:
        return self.outbox.claim(dest, row_id)

    def release(self, dest: str, row_id: int) -> None:
        self.outbox.release(dest, row_id)

    def pending(self, dest: str) -> tuple[int, int]:
        return self.outbox.pending(dest)

    def counters(self, dest: str) -> dict[str, int]:
        return self.outbox.counters(dest)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    async def drain(self) -> None:
        """Return once everything queued so far (held deletes too) is committed and its
        `done` has run."""
        self._flush_acks()
        await self._writer.drain()

    async def close(self) -> None:
        """Drain (held deletes too), and stop the thread if it is this writer's own; the
        outbox stays open for its owner to close."""
        self._flush_acks()
        await self._writer.close()


def _accepted(done: Callable[[dict[str, bool] | Exception], None],
              result: dict[str, bool] | int | Exception) -> None:
    done(result if isinstance(result, dict | Exception) else
         TypeError(f"outbox writer: an append answered {result!r}"))
