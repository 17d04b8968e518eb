"""A worker process's report to its parent (`run --workers N`): one JSON line per period.

Why a pipe and not MQTT: the parent owns the gateway's one retained status (edge/daemon/
workers.py); workers must not publish it, or N processes would overwrite each other's
status and will. The pipe is inherited from the parent (its fd number in
$EDGE_WORKER_STATS_FD); a write that finds the parent gone stops the worker, so no worker
outlives its parent for longer than one period.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.config.workers import WorkerRole

ENV_FD = "EDGE_WORKER_STATS_FD"


class WorkerReporter:
    """Writes the worker's figures to fd `fd` every `every` seconds; `on_orphaned` runs
    when the parent has gone (the read end is closed)."""

    def __init__(
        self,
        role: WorkerRole,
        fd: int,
        *,
        stats: Callable[[], dict[str, dict[str, Any]]],
        devices: Callable[[], dict[str, str]],
        losses: Callable[[], dict[str, Any]],
        on_orphaned: Callable[[], None],
        log: FilteringBoundLogger,
        every: float = 1.0,
        detail: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.role = role
        self.fd = fd
        self.stats = stats
        self.devices = devices
        self.losses = losses
        self.detail = detail  # device_reasons, device_faults, unsignable: merged as they are
        self.on_orphaned = on_orphaned
        self.log = log
        self.every = every
        os.set_blocking(fd, False)  # a parent that does not read costs a report, not a stall

    def line(self) -> bytes:
        body = {
            "worker": self.role.index,
            "pid": os.getpid(),
            "destinations": self.stats(),
            "devices": self.devices(),
            "losses": self.losses(),
            **self.detail(),
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    async def run(self) -> None:
        while True:
            try:
                os.write(self.fd, self.line())
            except BlockingIOError:
                pass  # the parent is busy; the next report supersedes this one
            except (BrokenPipeError, OSError) as exc:
                self.log.error("worker_parent_gone_stopping", error=str(exc))
                self.on_orphaned()
                return
            await asyncio.sleep(self.every)


__all__ = ["ENV_FD", "WorkerReporter"]
