"""The daemon's signal loop (edge/daemon/signal_loop.py) with a reload step it drives."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from edge.daemon.signal_loop import SignalLoop


class Step:
    """A reload step that waits to be let through and then does what it is told."""

    def __init__(self, *, fail_first: bool = False, commit: bool = False) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.commit = commit
        self._committing = False
        self.asked = asyncio.Event()  # the loop looked at `committing`: its choice is made
        self.task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.applied = 0
        self.cancelled = False

    @property
    def committing(self) -> bool:
        """Read by the loop once a stop arrives mid-reload, just before it cancels or waits."""
        self.asked.set()
        return self._committing

    async def apply(self) -> None:
        self.calls += 1
        self.task = asyncio.current_task()
        self.started.set()
        self._committing = self.commit
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail_first and self.calls == 1:
            raise RuntimeError("commit step broke")
        self.applied += 1


async def _reload(step: Step, loop: SignalLoop) -> asyncio.Task[None]:
    serving = asyncio.create_task(loop.serve())
    loop.reload.set()
    await asyncio.wait_for(step.started.wait(), 5)
    return serving


async def test_a_reload_that_raises_is_logged_and_the_loop_goes_on() -> None:
    step = Step(fail_first=True)
    loop = SignalLoop(step, structlog.get_logger())
    with capture_logs() as logs:
        serving = await _reload(step, loop)
        step.go.set()
        step.started = asyncio.Event()
        loop.reload.set()  # the next SIGHUP is still served, after the failed one ended
        await asyncio.wait_for(step.started.wait(), 5)  # `go` is set: applied at once
        loop.stop.set()
        await asyncio.wait_for(serving, 5)
    assert step.applied == 1
    failed = [e for e in logs if e["event"] == "reload_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["error"] == "RuntimeError: commit step broke"


async def test_a_stop_abandons_a_reload_still_preparing() -> None:
    step = Step()
    loop = SignalLoop(step, structlog.get_logger())
    serving = await _reload(step, loop)
    loop.stop.set()
    await asyncio.wait_for(serving, 5)
    assert step.cancelled and step.applied == 0


async def test_a_stop_waits_for_a_reload_that_is_committing() -> None:
    step = Step(commit=True)
    loop = SignalLoop(step, structlog.get_logger())
    serving = await _reload(step, loop)
    loop.stop.set()
    # the loop reads `committing` and, in the same step, cancels the reload or waits for it:
    # once it has asked, its choice shows on the reload's task
    await asyncio.wait_for(step.asked.wait(), 5)
    assert step.task is not None and step.task.cancelling() == 0 and not step.task.done()
    assert not serving.done() and not step.cancelled
    step.go.set()
    await asyncio.wait_for(serving, 5)
    assert step.applied == 1 and not step.cancelled
