"""A store's writer thread: the event loop queues write operations, one thread commits them,
several to a transaction.

Why: a commit of the SQLite outbox or OEE store is cheap on average (tens of microseconds
into the page cache), but about once per MiB written the WAL auto-checkpoint runs inside
one of them, with its fsyncs, and holds the caller for 5-15 ms (more on SD/eMMC). On the
event loop that is a stall of every poll due at that moment (bench/outbox_stall.py
measures it). Here the loop only queues work; the thread takes whatever is queued (up to
`max_batch` operations) and hands it to the store's `apply`, which commits it in ONE
transaction: under load, commits (which dominate the cost) are shared by many operations.
SQLite releases the GIL while it works, so the loop keeps polling meanwhile.

Order: one FIFO queue, one thread, so operations are applied, and their `done` callbacks
run on the event loop, in the order the loop queued them. Hand-offs are grouped both ways:
what the loop submits in one iteration reaches the thread as one item, and the answers to
one transaction come back in one callback, so the thread and the loop wake each other
once per group, not once per operation. When a grouped transaction
fails, each operation of it is applied alone, so one bad operation (a disk error on a
large row, a sequence that no longer follows) does not take its neighbours with it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from models.errors import EdgeError

__all__ = ["Batched", "Done", "StoreWriter", "WriterStats"]

Op = TypeVar("Op")
R = TypeVar("R")
Op_contra = TypeVar("Op_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)

Done = Callable[[R | Exception], None]
"""Told on the event loop what became of one operation: its result, or why it failed
(the store's EdgeError, or ValueError for an operation the store refused)."""


class Batched(Protocol[Op_contra, R_co]):
    """A store that applies several operations in one transaction: all or nothing, one
    result per operation, in order."""

    def apply(self, ops: Sequence[Op_contra]) -> Sequence[R_co]: ...


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Transactions and operations so far: `ops / commits` is the grouping achieved."""

    commits: int
    ops: int
    queued: int


@dataclass(frozen=True, slots=True)
class _Job(Generic[Op, R]):
    op: Op
    done: Done[R] | None
    on_thread: bool = False


class StoreWriter(Generic[Op, R]):
    """One thread applying `store`'s write operations; `submit` queues and returns at once
    (unless the queue is full: back-pressure, see the module docstring).

    `linger`: after the first operation of a group, sleep this long before taking what else
    is queued and committing it all (a drain that comes first is not delayed). Each
    hand-off between the thread and the loop costs wake-ups and GIL switches; at the
    gateway's usual rates (tens of operations a second, spread over the poll interval) a
    few milliseconds group several operations per commit and per wake-up, which is what
    keeps the thread's CPU cost small (bench/writer_stall.py). `max_batch` bounds one
    transaction.

    `drain()` waits until everything queued so far is applied; `close()` drains and stops
    the thread, leaving the store open for its owner to close."""

    def __init__(self, store: Batched[Op, R], loop: asyncio.AbstractEventLoop, *,
                 name: str, max_batch: int = 512, max_queued: int = 2048,
                 linger: float = 0.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.linger = linger
        self._loop = loop
        self._queue: queue.Queue[list[_Job[Op, R]] | threading.Event | None] = queue.Queue(
            max(1, max_queued // 8))
        self._gathering: list[_Job[Op, R]] = []  # submitted in this loop iteration
        self._commits = 0
        self._ops = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Op, done: Done[R] | None = None, *, on_thread: bool = False) -> None:
        """Queue `op`; `done` runs on the event loop once it is committed or failed, or, with
        `on_thread`, on the writer thread right then (it must be thread-safe and quick): an
        answer nobody on the loop waits for then costs the loop no wake-up.

        Call on the event loop. What is submitted in one loop iteration goes to the thread
        as one item at the end of it (one wake-up of the thread, not one per operation)."""
        if not self._gathering:
            self._loop.call_soon(self._hand_over)
        self._gathering.append(_Job(op, done, on_thread))

    def _hand_over(self) -> None:
        jobs, self._gathering = self._gathering, []
        if jobs:
            self._queue.put(jobs)

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._commits, self._ops, self._queue.qsize())

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
            if self.linger > 0 and not isinstance(item, threading.Event):
                # asleep, not waiting on the queue: what the loop queues meanwhile costs it
                # no wake-up of this thread
                time.sleep(self.linger)
            jobs: list[_Job[Op, R]] = []
            markers: list[threading.Event] = []
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                    break  # a drain marker ends the group: what came before is committed
                else:
                    jobs += item
                if stop or len(jobs) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            replies: list[tuple[Done[R], R | Exception]] = []
            for i in range(0, len(jobs), self.max_batch):
                replies += self._write(jobs[i:i + self.max_batch])
            # one wake-up of the loop per group, the markers set after the replies ran
            if replies or markers:
                self._reply(replies, markers)

    def _write(self, jobs: list[_Job[Op, R]]) -> list[tuple[Done[R], R | Exception]]:
        results: Sequence[R | Exception]
        try:
            results = self.store.apply([j.op for j in jobs])
            self._commits += 1
        except Exception:  # whatever failed, each op is tried and answered alone
            results = [self._alone(j.op) for j in jobs]
        self._ops += len(jobs)
        replies: list[tuple[Done[R], R | Exception]] = []
        for job, result in zip(jobs, results, strict=True):
            if job.done is None:
                continue
            if not job.on_thread:
                replies.append((job.done, result))
                continue
            try:
                job.done(result)
            except Exception:  # the thread must live; the op itself is done
                continue
        return replies

    def _alone(self, op: Op) -> R | Exception:
        try:
            [result] = self.store.apply([op])
        except (EdgeError, ValueError) as exc:
            return exc
        except Exception as exc:  # this thread must outlive any bug: it is the store's
            return EdgeError(f"{self._thread.name}: {exc!r}")  # only writer
        self._commits += 1
        return result

    def _reply(self, replies: list[tuple[Done[R], R | Exception]],
               markers: list[threading.Event]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(_answer, replies, markers)


def _answer(replies: list[tuple[Done[R], R | Exception]], markers: list[threading.Event],
            ) -> None:
    """On the event loop: run the `done` callbacks of one group in order, then release
    whoever drains."""
    try:
        for done, result in replies:
            try:
                done(result)
            except Exception as exc:  # one broken callback must not silence the others
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "store writer: a `done` callback failed", "exception": exc})
    finally:
        for m in markers:
            m.set()
