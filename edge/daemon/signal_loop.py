"""The daemon's signal loop: one reload at a time until a stop is asked for.

Kept apart from `Gateway` so its rules can be tested without a plant: a SIGTERM during a
reload's parse or preparation abandons it (the running configuration stays), one during the
commit waits for it (a half-applied configuration would be worse than a late stop), and a
reload that fails in a way `Reloader.apply` does not catch is logged, never swallowed.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from structlog.typing import FilteringBoundLogger


class ReloadStep(Protocol):
    """What the loop needs of `edge.daemon.reload.Reloader`."""

    @property
    def committing(self) -> bool:
        """True once the new configuration is being applied (a stop must then wait)."""
        ...

    async def apply(self) -> None:
        """Read, check and apply the plant file once."""
        ...


class SignalLoop:
    def __init__(self, reloader: ReloadStep, log: FilteringBoundLogger) -> None:
        self.reloader = reloader
        self.log = log
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()

    async def serve(self) -> None:
        """Until `stop`: apply each `reload` request, one at a time."""
        while not self.stop.is_set():
            stop_wait = asyncio.create_task(self.stop.wait())
            reload_wait = asyncio.create_task(self.reload.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if self.reload.is_set() and not self.stop.is_set():
                self.reload.clear()
                await self._reload_once()

    async def _reload_once(self) -> None:
        reload = asyncio.create_task(self.reloader.apply(), name="reload")
        stop_wait = asyncio.create_task(self.stop.wait())
        await asyncio.wait({reload, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not reload.done() and not self.reloader.committing:
            reload.cancel()  # stop requested while parsing or preparing: abandon it
        await asyncio.gather(reload, return_exceptions=True)
        if not reload.cancelled() and (failure := reload.exception()) is not None:
            # apply() catches what a bad file can cause; anything else is a bug in a commit
            # step, which must be seen, not swallowed by the gather above
            self.log.error(
                "reload_failed",
                error=f"{type(failure).__name__}: {failure}",
                exc_info=failure,
            )
