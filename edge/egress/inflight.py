"""What every destination sender shares: a bounded set of publishes in flight, and the pace
of a replayed backlog.

Why one class for both senders (`DestinationSender` in edge/egress/sender.py and the
Sparkplug edge node's `SparkplugSender`): the rules are subtle and must not drift apart. A
slot is taken before a row is claimed, so no more than `limit` rows wait for their PUBACK
(throughput is not one round trip per message, memory stays bounded); waiting for a slot
gives up every `poll` seconds so the caller can notice a lost link; a lost link withdraws
every publish in flight at once; a stop waits for them (bounded by the caller).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["BacklogPace", "InFlight"]


class InFlight:
    """The unfinished publishes of one sender, at most `limit` at a time. Each tracked task
    must `release()` its slot when it ends (in a `finally`), whatever happened."""

    def __init__(self, limit: int, poll: float = 0.5) -> None:
        self.poll = poll  # seconds `acquire` waits before letting the caller look around
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def acquire(self) -> bool:
        """One slot, or False after `poll` seconds without one.

        asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        that races with completion, which would leave a sender running after shutdown.
        A free slot is taken without a timer: the common case, once per envelope (issue 17)."""
        if not self._slots.locked():
            return await self._slots.acquire()  # does not wait: a slot is free
        try:
            async with asyncio.timeout(self.poll):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        self._slots.release()

    def track(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of this set until it ends (it releases its own slot)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def withdraw(self) -> None:
        """Cancel every publish in flight and wait until each has ended (the link is gone:
        their rows stay in the outbox and are sent again)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait until nothing is in flight (callers bound it with a timeout)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class BacklogPace:
    """Spaces replayed rows `1 / rate` seconds apart, so after an outage or a restart live
    data and the broker keep up with the backlog (`outbox.backlog_rate`)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next: float | None = None

    async def wait(self) -> None:
        """Return at this row's slot: at once when the backlog is behind its pace."""
        now = asyncio.get_running_loop().time()
        slot = now if self._next is None else self._next
        if slot > now:
            await asyncio.sleep(slot - now)
        self._next = max(slot, now) + 1.0 / self.rate

