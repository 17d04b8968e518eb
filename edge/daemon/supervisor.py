"""Background tasks of the daemon: loops that must not die silently, and fire-and-forget
publishes that must not block the loop that schedules them.

One owner for both, so shutdown can cancel and await everything the stages started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.egress.stack import LoopFactory


class Supervisor:
    """Implements edge.egress.stack.Supervising for every stage."""

    def __init__(self, logger: FilteringBoundLogger, *, restart_pause: float = 5.0) -> None:
        self.log = logger
        self.restart_pause = restart_pause
        self._side: set[asyncio.Task[None]] = set()

    def supervise(self, name: str, loop: LoopFactory) -> asyncio.Task[None]:
        """Run a background loop forever: an unexpected exception (a bug, a disk error) is
        logged with its traceback and the loop restarts after a pause, instead of dying
        silently and leaving, say, OEE unpublished while everything looks fine."""

        async def guarded() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("background_task_failed_restarting", task=name)
                    await asyncio.sleep(self.restart_pause)

        return asyncio.create_task(guarded(), name=name)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A publish (status, keys) nobody awaits; kept referenced until done, failures
        only logged at debug: the status loop publishes again anyway."""
        task = asyncio.create_task(coro)
        self._side.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[None]) -> None:
        self._side.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.debug("side_publish_failed", error=str(task.exception()))

    async def cancel_spawned(self) -> None:
        tasks = list(self._side)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
