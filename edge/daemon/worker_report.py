"""A worker process's report to its parent (`run --workers N`): one JSON line per period.

Why a pipe and not MQTT: the parent owns the gateway's one retained status (edge/daemon/
workers.py); workers must not publish it, or N processes would overwrite each other's
status and will. The pipe is inherited from the parent (its fd number in
$EDGE_WORKER_STATS_FD); a write that finds the parent gone stops the worker, so no worker
outlives its parent for longer than one period.

The worker's recent warnings ride along (`log`: only those new since the last report
written, edge/status/log_tap.py `LogNews`), so the parent's status page shows them without
a message per event, and so does its latest reload outcome (`reload`: when it began, its
result and why), which the parent that passed a SIGHUP on waits for to log one outcome for
the pool (edge/daemon/reload_outcomes.py). A line a full pipe cut short is finished before
the next one starts, so the parent never reads two reports run together.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.config.workers import WorkerRole
from edge.status.log_tap import LogNews

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
        news: LogNews | None = None,
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
        self.news = news
        self._rest = b""  # the end of a line the pipe had no room for
        os.set_blocking(fd, False)  # a parent that does not read costs a report, not a stall

    def line(self) -> tuple[bytes, dict[str, int]]:
        """The report, and the marks of the log entries it carries (`LogNews.delivered`)."""
        news, marks = self.news.pending() if self.news is not None else ({}, {})
        last = self.news.log.last_reload if self.news is not None else None
        body = {
            "worker": self.role.index,
            "pid": os.getpid(),
            "destinations": self.stats(),
            "devices": self.devices(),
            "losses": self.losses(),
            **self.detail(),
            **({"log": news} if news else {}),
            **({"reload": list(last)} if last is not None else {}),
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n", marks

    def send(self) -> None:
        """Write this period's report; BrokenPipeError/OSError when the parent is gone."""
        try:
            if self._rest:
                self._rest = self._rest[os.write(self.fd, self._rest):]
                if self._rest:
                    return  # still full: this period's report is skipped
            line, marks = self.line()
            written = os.write(self.fd, line)
        except BlockingIOError:
            return  # the parent is busy; the next report supersedes this one
        self._rest = line[written:]
        if self.news is not None:
            self.news.delivered(marks)  # in the pipe, or its end first in the next write

    async def run(self) -> None:
        while True:
            try:
                self.send()
            except OSError as exc:  # BrokenPipeError among them
                self.log.error("worker_parent_gone_stopping", error=str(exc))
                self.on_orphaned()
                return
            await asyncio.sleep(self.every)


__all__ = ["ENV_FD", "WorkerReporter"]
