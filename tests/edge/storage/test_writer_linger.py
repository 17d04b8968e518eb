"""The writer thread lingers only while operations come faster than its linger.

Why: lingering groups operations per commit and per wake-up, which saves CPU at high rates,
but at sparse rates it groups nothing and adds the whole linger to every record's latency
(bench/report-issue17.md, 2r and 2s). These tests drive the real `WriterThread` with a fake
clock and a sleep that only notes what it was asked (and moves the clock on), so the
decision is seen exactly, without timing anything.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from edge.storage.writer import StoreWriter, WriterThread

LINGER = 0.005


class FakeTime:
    """The writer thread's clock and sleep: the test sets the time; a sleep is noted and
    moves the clock on by its length, as a real one would."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()  # read on the writer thread, set on the loop

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Journal:
    """A store that keeps what each transaction applied, in order."""

    def __init__(self) -> None:
        self.transactions: list[list[int]] = []

    def apply(self, ops: Sequence[int]) -> list[int]:
        self.transactions.append(list(ops))
        return list(ops)


async def groups(writer: StoreWriter[int, int], time: FakeTime, *, count: int, size: int,
                 apart: float, first: int) -> list[int]:
    """`count` groups of `size` operations submitted in one loop iteration each, `apart`
    seconds apart on the fake clock, each drained before the next; what they answered."""
    answers: list[int | Exception] = []
    for g in range(count):
        time.advance(apart)
        for i in range(size):
            writer.submit(first + g * size + i, answers.append)
        await writer.drain()
    assert all(isinstance(a, int) for a in answers), answers
    return [a for a in answers if isinstance(a, int)]


async def test_sparse_operations_never_wait_and_a_burst_does() -> None:
    time = FakeTime()
    journal = Journal()
    writer = StoreWriter(journal, WriterThread(name="store-writer", linger=LINGER,
                                               clock=time.clock, sleep=time.sleep))
    try:
        # one operation a second (a machine polled every 1 s): lingering would group
        # nothing, so the thread never sleeps, and neither do the drain markers between
        sparse = await groups(writer, time, count=12, size=1, apart=1.0, first=0)
        assert time.slept == []

        # groups of 4 operations 1 ms apart: the first ones of the burst are still paced by
        # the sparse past (the moving average comes down 1/8 a group), then the thread
        # sleeps its linger before every group
        burst = await groups(writer, time, count=50, size=4, apart=0.001, first=100)
        assert time.slept, "a burst of operations faster than the linger must linger"
        assert set(time.slept) == {LINGER}
        assert len(time.slept) >= 8, time.slept
        lingered = len(time.slept)
        burst += await groups(writer, time, count=10, size=4, apart=0.001, first=300)
        assert len(time.slept) == lingered + 10, "once lingering, every group of the burst"
        lingered += 10

        # back to one a second: one long gap is enough to stop lingering (latency first)
        after = await groups(writer, time, count=5, size=1, apart=1.0, first=1000)
        assert len(time.slept) == lingered
    finally:
        await writer.close()
    assert len(time.slept) == lingered, "the stop is never delayed"

    # nothing lost or reordered, whether the thread lingered or not
    assert sparse + burst + after == [op for t in journal.transactions for op in t]
    assert sparse == list(range(12))
    assert burst == list(range(100, 340))
    assert after == list(range(1000, 1005))


async def test_drains_and_stop_never_wait_even_in_a_burst() -> None:
    """A drain marker (`drain()`, `close()`) is someone waiting: it is never delayed, even
    while operations are coming fast enough to linger for."""
    time = FakeTime()
    journal = Journal()
    thread = WriterThread(name="store-writer", linger=LINGER, clock=time.clock,
                          sleep=time.sleep)
    writer = StoreWriter(journal, thread)
    try:
        await groups(writer, time, count=10, size=4, apart=0.001, first=0)
        lingered = len(time.slept)
        assert lingered > 0
        for _ in range(5):  # nothing queued: only markers reach the thread
            time.advance(0.001)
            await writer.drain()
        assert len(time.slept) == lingered
    finally:
        await thread.close()
    assert len(time.slept) == lingered


async def test_no_linger_never_sleeps() -> None:
    time = FakeTime()
    writer = StoreWriter(Journal(), WriterThread(name="store-writer", linger=0.0,
                                                 clock=time.clock, sleep=time.sleep))
    try:
        await groups(writer, time, count=10, size=4, apart=0.0001, first=0)
    finally:
        await writer.close()
    assert time.slept == []
