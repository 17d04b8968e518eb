"""The stores' writer thread: the event loop queues write operations, one thread commits
them, several to a transaction, for every store it serves, in the order they were queued.

Why: a commit of the SQLite outbox or OEE store is cheap on average (tens of microseconds
into the page cache), but about once per MiB written the WAL auto-checkpoint runs inside
one of them, with its fsyncs, and holds the caller for 5-15 ms (more on SD/eMMC). On the
event loop that is a stall of every poll due at that moment (bench/writer_stall.py
measures it). Here the loop only queues work; the thread takes whatever is queued (up to
`max_batch` operations) and hands each store its run of it (`apply`), which commits it in
ONE transaction: under load, commits (which dominate the cost) are shared by many
operations. SQLite releases the GIL while it works, so the loop keeps polling meanwhile.

Order: one FIFO queue, one thread (`WriterThread`), however many stores write through it
(a `StoreWriter` each), so operations are committed, and their `done` callbacks run on
the event loop, in the order the loop queued them, across stores too. Two SQLite files
cannot share a transaction; what one thread gives instead is enough for the gateway's
promise: an OEE save queued before the outbox append of the state envelope showing the
same part count is committed before that append's transaction starts, so a SIGKILL can
never leave the platform with a part the OEE store has not saved (tests/edge/storage/
test_writer_order.py, tests/end_to_end/test_oee_gap.py). Consecutive operations of one
store share a transaction; where the queue switches store, a transaction ends.

Hand-offs are grouped both ways: what the loop submits in one iteration reaches the thread
as one item, and the answers to one group come back in one callback, so the thread and
the loop wake each other once per group, not once per operation. When a grouped
transaction fails, each operation of it is applied alone, so one bad operation (a disk
error on a large row, a sequence that no longer follows) does not take its neighbours with
it.

Back-pressure: the queue is bounded (`max_queued`). A saturated loop holds the GIL nearly
all the time, so this thread would get it back only every switch interval after each
SQLite call, and an unbounded queue grew while nothing was stored. Bounded, the loop
blocks on a full queue (releasing the GIL) and the writer commits at full speed: at
saturation the loop waits for the disk as it did when it wrote inline, below it never.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol, TypeVar

from models.errors import EdgeError

__all__ = ["Batched", "Done", "StoreWriter", "WriterStats", "WriterThread"]

Op = TypeVar("Op")
R = TypeVar("R")
Op_contra = TypeVar("Op_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)

Done = Callable[[R | Exception], None]
"""Told on the event loop what became of one operation: its result, or why it failed
(the store's EdgeError, or ValueError for an operation the store refused)."""

_Reply = Callable[[], None]  # one `done` with its outcome bound, to run on the loop


class Batched(Protocol[Op_contra, R_co]):
    """A store that applies several operations in one transaction: all or nothing, one
    result per operation, in order."""

    def apply(self, ops: Sequence[Op_contra]) -> Sequence[R_co]: ...


@dataclass(frozen=True, slots=True)
class WriterStats:
    """One store's transactions and operations so far (`ops / commits` is the grouping
    achieved), and the groups waiting in the thread's queue."""

    commits: int
    ops: int
    queued: int


@dataclass(frozen=True, slots=True)
class _Job(Generic[Op, R]):
    op: Op
    done: Done[R] | None
    on_thread: bool = False


class _Lane(Protocol):
    """A store as the thread sees it: apply the next `n` operations queued for it."""

    def write_next(self, n: int, thread_name: str) -> list[_Reply]: ...


@dataclass(slots=True)
class _Ticket:
    """`n` consecutive operations of one store, in queue order (the operations themselves
    wait in the store's own deque, typed)."""

    lane: _Lane
    n: int


class WriterThread:
    """The one thread that commits the queued writes of every `StoreWriter` built on it.

    `linger`: when operations have been arriving less than this far apart, sleep this long
    after the first operation of a group before taking what else is queued and committing
    it all (`_Linger` decides; a drain or a stop is never delayed). Each hand-off between
    the thread and the loop costs wake-ups and GIL switches; at high rates a few
    milliseconds group several operations per commit and per wake-up, which is what keeps
    the thread's CPU cost small (bench/writer_stall.py). `max_batch` bounds one
    transaction. `clock` and `sleep` are the thread's time (a test passes fake ones).

    The thread starts, and binds to the running event loop, at the first `submit` (the
    gateway builds its stages before its loop runs). `drain()` waits until everything
    queued so far is applied; `close()` drains and stops the thread, leaving the stores
    open for their owners to close."""

    def __init__(self, *, name: str, max_batch: int = 512, max_queued: int = 2048,
                 linger: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.max_batch = max_batch
        self.linger = linger
        self._pace = _Linger(linger, clock)
        self._sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.Queue[list[_Ticket] | threading.Event | None] = queue.Queue(
            max(1, max_queued // 8))
        self._gathering: list[_Ticket] = []  # submitted in this loop iteration
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def queued(self) -> int:
        """Groups handed over and not taken by the thread yet."""
        return self._queue.qsize()

    def enqueue(self, lane: _Lane) -> None:
        """One more operation of `lane`, already in its own deque (`StoreWriter.submit`
        calls this, on the event loop)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread.start()
        elif asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(f"{self.name}: bound to another event loop")
        if not self._gathering:
            self._loop.call_soon(self._hand_over)
        elif self._gathering[-1].lane is lane:
            self._gathering[-1].n += 1
            return
        self._gathering.append(_Ticket(lane, 1))

    def _hand_over(self) -> None:
        tickets, self._gathering = self._gathering, []
        if tickets:
            self._queue.put(tickets)

    async def drain(self) -> None:
        """Return once every operation queued before this call is applied (or failed) and
        its `done` has run."""
        if not self._thread.is_alive():
            return
        self._hand_over()
        marker = threading.Event()
        self._queue.put(marker)
        await asyncio.to_thread(marker.wait)  # set on the loop, after the replies ran

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        await self.drain()
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # --- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if isinstance(item, list) and self._pace.waits():
                # asleep, not waiting on the queue: what the loop queues meanwhile costs it
                # no wake-up of this thread
                self._sleep(self.linger)
            runs: list[_Ticket] = []
            taken = 0
            markers: list[threading.Event] = []
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                    break  # a drain marker ends the group: what came before is committed
                else:
                    for t in item:  # consecutive operations of one store: one run
                        if runs and runs[-1].lane is t.lane:
                            runs[-1].n += t.n
                        else:
                            runs.append(_Ticket(t.lane, t.n))
                        taken += t.n
                if stop or taken >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if taken:
                self._pace.took(taken)
            replies: list[_Reply] = []
            for run in runs:  # in queue order: a run commits before the next one starts
                for i in range(0, run.n, self.max_batch):
                    replies += run.lane.write_next(min(self.max_batch, run.n - i), self.name)
            # one wake-up of the loop per group, the markers set after the replies ran
            if replies or markers:
                self._reply(replies, markers)

    def _reply(self, replies: list[_Reply], markers: list[threading.Event]) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(_answer, replies, markers)


class _Linger:
    """Whether the writer thread should linger before a group of operations: only while
    operations arrive faster than `linger` apart.

    Why: lingering groups operations per commit and per wake-up, which saves CPU only when
    more operations arrive within the linger; when they arrive further apart it groups
    nothing and adds the whole linger to every record's latency. At 50 machines polled
    every 1 s (spread), a fixed 5 ms linger cost the same CPU as none but p50 7.7 against
    2.5 ms and p99 14.4 against 8.2 ms; at 100 ms polls, dropping it cost CPU (0.031 against
    0.025 s per 1,000 samples), and lingering only when operations come fast keeps that
    (bench/report-issue17.md, sections 2r and 2s).

    The pace is a moving average (weight 1/8) of the time per operation: the time between
    two wake-ups for operations divided by how many operations the earlier one took. While
    the thread lingers and groups two or more operations per wake-up the average stays
    below `linger`; once a wake-up finds only one, the gap is the linger plus the commit
    and the thread stops lingering. The first group after start never waits (no pace
    known yet). Known weak spot: bursts after idle time (every machine on one poll slot,
    `poll_slots: 1`, at 1 s) rarely make it linger, because the idle second divided by the
    last group's few operations keeps the average high; such a burst then takes a few
    wake-ups instead of one (more CPU, nothing lost or reordered). The bench figures of
    section 2s were measured with this rule."""

    WEIGHT = 1 / 8

    def __init__(self, linger: float, clock: Callable[[], float]) -> None:
        self.linger = linger
        self._clock = clock
        self._last: float | None = None  # when the previous group of operations was taken
        self._taken = 1  # how many operations it held
        self._gap: float | None = None  # the moving average, seconds per operation

    def waits(self) -> bool:
        """A group of operations has arrived: linger before taking it?"""
        now = self._clock()
        if self._last is not None:
            gap = (now - self._last) / self._taken
            self._gap = gap if self._gap is None else self._gap + (gap - self._gap) * self.WEIGHT
        self._last = now
        return self.linger > 0 and self._gap is not None and self._gap < self.linger

    def took(self, n: int) -> None:
        """The group just taken held `n` operations (with whatever else was queued)."""
        self._taken = max(1, n)


class StoreWriter(Generic[Op, R]):
    """`store`'s write operations queued on `thread`; `submit` queues and returns at once
    (unless the queue is full: back-pressure, see the module docstring).

    `drain()` waits until everything queued on the thread so far is applied (this store's
    and the others'); `close()` drains, and stops the thread only if this writer made its
    own (`alone`)."""

    def __init__(self, store: Batched[Op, R], thread: WriterThread) -> None:
        self.store = store
        self.thread = thread
        self._owns_thread = False
        self._jobs: deque[_Job[Op, R]] = deque()  # appended on the loop, popped on the thread
        self._commits = 0
        self._ops = 0

    @classmethod
    def alone(cls, store: Batched[Op, R], *, name: str, max_batch: int = 512,
              max_queued: int = 2048, linger: float = 0.0) -> StoreWriter[Op, R]:
        """A writer with a thread of its own (one store, nothing to order it against)."""
        writer = cls(store, WriterThread(name=name, max_batch=max_batch,
                                         max_queued=max_queued, linger=linger))
        writer._owns_thread = True
        return writer

    def submit(self, op: Op, done: Done[R] | None = None, *, on_thread: bool = False) -> None:
        """Queue `op`; `done` runs on the event loop once it is committed or failed, or, with
        `on_thread`, on the writer thread right then (it must be thread-safe and quick): an
        answer nobody on the loop waits for then costs the loop no wake-up.

        Call on the event loop. What is submitted in one loop iteration goes to the thread
        as one item at the end of it (one wake-up of the thread, not one per operation)."""
        self._jobs.append(_Job(op, done, on_thread))
        self.thread.enqueue(self)

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._commits, self._ops, self.thread.queued)

    async def drain(self) -> None:
        """Return once every operation queued before this call is applied (or failed) and
        its `done` has run."""
        await self.thread.drain()

    async def close(self) -> None:
        if self._owns_thread:
            await self.thread.close()
        else:
            await self.thread.drain()

    # --- on the thread ----------------------------------------------------------------

    def write_next(self, n: int, thread_name: str) -> list[_Reply]:
        """Apply the next `n` queued operations in one transaction (the thread calls
        this); the replies to run on the loop."""
        jobs = [self._jobs.popleft() for _ in range(n)]
        results: Sequence[R | Exception]
        try:
            results = self.store.apply([j.op for j in jobs])
            self._commits += 1
        except Exception:  # whatever failed, each op is tried and answered alone
            results = [self._alone(j.op, thread_name) for j in jobs]
        self._ops += len(jobs)
        replies: list[_Reply] = []
        for job, result in zip(jobs, results, strict=True):
            if job.done is None:
                continue
            if not job.on_thread:
                replies.append(partial(job.done, result))
                continue
            try:
                job.done(result)
            except Exception:  # the thread must live; the op itself is done
                continue
        return replies

    def _alone(self, op: Op, thread_name: str) -> R | Exception:
        try:
            [result] = self.store.apply([op])
        except (EdgeError, ValueError) as exc:
            return exc
        except Exception as exc:  # the thread must outlive any bug: it is the store's
            return EdgeError(f"{thread_name}: {exc!r}")  # only writer
        self._commits += 1
        return result


def _answer(replies: list[_Reply], markers: list[threading.Event]) -> None:
    """On the event loop: run the `done` callbacks of one group in order, then release
    whoever drains."""
    try:
        for reply in replies:
            try:
                reply()
            except Exception as exc:  # one broken callback must not silence the others
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "store writer: a `done` callback failed", "exception": exc})
    finally:
        for m in markers:
            m.set()
