"""Recent warnings and the reload history, taken from the gateway's own structured logs.

Why from the logs: every warning the gateway has is already a structlog event (logged once
per interval by design), and reloads log `reloaded` / `reload_rejected_...`. A processor
in the logging chain keeps the last few in memory for the status page's gateway view, so
no component needs a second reporting path. Secrets never reach log calls, so none reach
the page either.

With `run --workers N` each worker keeps its own; the warnings new since its last report
ride on that report to the parent (`LogNews`, edge/daemon/worker_report.py), which keeps a
copy per worker (`RecentLog.absorb`, edge/daemon/workers.py) that outlives a restart of the
worker, and shows them beside its own (`merged`, edge/status/identity.py). A worker's
reload outcomes are not listed nor counted there: its report carries its last one
(`RecentLog.last_reload`), and the parent, which passed the SIGHUP on, logs one outcome
for the whole pool (edge/daemon/reload_outcomes.py), so one SIGHUP is one entry and one
count whatever the number of processes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from edge.status.model import LogEntry
from models.sample import utc_now

RELOAD_EVENTS = {"reloaded": "ok", "reload_rejected_keeping_running_config": "rejected",
                 # the file was valid, but what it names could not be prepared (a keys
                 # directory that is a file...): refused as well, and said why
                 "reload_preparation_failed_keeping_running_config": "rejected",
                 # a check failed unexpectedly (a bug), or the new egress did not start and
                 # the previous one was restored: the running configuration stays
                 "reload_failed_keeping_running_config": "rejected",
                 "reload_failed_restored_running_config": "rejected",
                 # a commit step raised (a bug; edge/daemon/signal_loop.py), or some
                 # workers applied the file and others did not (edge/daemon/workers.py)
                 "reload_failed": "partial",
                 "reload_partially_applied": "partial",
                 "workers_changed_restarting": "ok"}
_SHOWN = ("asset", "destination", "error", "reason", "problems", "path", "hint",
          "category", "message", "location")  # the last three: `python_warning`
Kind = Literal["warnings", "reloads"]
RELOAD_RESULTS = ("ok", "rejected", "partial")
"""`edge_gateway_reloads_total`'s `result` values: each has a sample (0) before any reload,
as Prometheus asks of known label values, so `rate()` and alerts see the first one. `ok`:
the whole gateway (with workers: the parent and every worker) runs the new file;
`rejected`: none of it does, the running configuration stays; `partial`: some of it does
(a worker refused what the others applied, or a commit step failed), the entry says which."""
KEEP = 50
"""Entries of each kind a process keeps (and the parent keeps per worker)."""


class Recent:
    """The last `keep` (when, text) entries, oldest first, and how many were ever added:
    a reader that remembers that count asks for only what came after it (`after`)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._kept: deque[tuple[datetime, str]] = deque(maxlen=keep)
        self.total = 0

    def add(self, when: datetime, text: str) -> None:
        self._kept.append((when, text))
        self.total += 1

    def earlier(self, entries: Sequence[tuple[datetime, str]]) -> None:
        """Put `entries` (a previous run's, edge/status/log_keep.py) before the kept ones,
        the newest of all still at most `keep`."""
        mine = list(self._kept)
        self._kept.clear()
        self._kept.extend([*entries, *mine])
        self.total += len(entries)

    def __iter__(self) -> Iterator[tuple[datetime, str]]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def after(self, mark: int) -> list[tuple[datetime, str]]:
        """The entries added since `total` was `mark`, as far as they are still kept."""
        new = min(self.total - mark, len(self._kept))
        return list(self._kept)[len(self._kept) - new:] if new > 0 else []


class RecentLog:
    """One process's recent warnings and reload outcomes."""

    KINDS: tuple[Kind, ...] = ("warnings", "reloads")

    def __init__(self, keep: int = KEEP) -> None:
        self.warnings = Recent(keep)
        self.reloads = Recent(keep)
        self.reload_counts: dict[str, int] = dict.fromkeys(RELOAD_RESULTS, 0)
        """Every reload outcome ever seen, by result: the ring above forgets the oldest,
        and `edge_gateway_reloads_total` must never go down."""
        self.last_reload: LastReload | None = None
        """This process's latest reload outcome; a worker's report carries it to the
        parent, which waits for the one that began after it passed a SIGHUP on."""
        self._began = 0.0

    def reload_started(self) -> None:
        self._began = time.monotonic()

    def add_reload(self, when: datetime, result: str, why: str = "") -> None:
        """One reload outcome: `result` one of RELOAD_RESULTS, `why` the detail shown
        after it ("rejected: plant.yaml:3: ...", "ok: workers 2 -> 3")."""
        self.reloads.add(when, f"{result}: {why}" if why else result)
        self.reload_counts[result] += 1
        self.last_reload = LastReload(self._began, result, why)

    def kind(self, name: Kind) -> Recent:
        return self.warnings if name == "warnings" else self.reloads

    def absorb(self, news: Mapping[str, Any]) -> None:
        """Add the warnings a worker's report carried (`LogNews.pending`); ValueError,
        TypeError or KeyError when they are not that shape."""
        parsed = [(datetime.fromisoformat(str(t)), str(s)) for t, s in news.get("warnings", ())]
        for when, text in parsed:  # all parsed first: a bad report adds nothing
            self.warnings.add(when, text)


class LastReload(NamedTuple):
    """A process's latest reload outcome, as a worker reports it to its parent."""

    began: float
    """`time.monotonic()` when that reload began: the clock is the host's (CLOCK_MONOTONIC),
    the same in every process, so the parent tells the outcome of the SIGHUP it passed on
    from an earlier one."""
    result: str
    why: str


class LogNews:
    """A worker's side: what of its `RecentLog` the parent has not been sent yet. The
    marks move only once a report carrying the entries was written (`delivered`), so a
    report skipped because the pipe was full loses nothing the ring still holds."""

    KINDS: tuple[Kind, ...] = ("warnings",)
    """Its reload outcomes are not sent: the parent logs one for the pool (module doc)."""

    def __init__(self, log: RecentLog) -> None:
        self.log = log
        self._sent: dict[str, int] = dict.fromkeys(self.KINDS, 0)

    def pending(self) -> tuple[dict[str, list[list[str]]], dict[str, int]]:
        """(the new entries by kind, as JSON; the marks to pass to `delivered`)."""
        news = {k: [[t.isoformat(), s] for t, s in self.log.kind(k).after(self._sent[k])]
                for k in self.KINDS}
        return ({k: v for k, v in news.items() if v},
                {k: self.log.kind(k).total for k in self.KINDS})

    def delivered(self, marks: Mapping[str, int]) -> None:
        self._sent.update(marks)


def merged(own: RecentLog, workers: Sequence[RecentLog], kind: Kind,
           limit: int) -> tuple[LogEntry, ...]:
    """This process's entries of `kind` and each worker's (labelled with its index),
    oldest first, the newest `limit` of them."""
    entries = [LogEntry(t, s) for t, s in own.kind(kind)]
    for index, log in enumerate(workers):
        entries.extend(LogEntry(t, s, index) for t, s in log.kind(kind))
    if workers:
        entries.sort(key=lambda e: e.when)  # stable: equal times keep the parent's first
    return tuple(entries[-limit:])


class LogTap:
    """A structlog processor: passes every event on unchanged, remembers a few."""

    def __init__(self, keep: int = KEEP) -> None:
        self.recent = RecentLog(keep)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event", ""))
        if event == "reload_started":
            self.recent.reload_started()
        elif event in RELOAD_EVENTS:
            result = RELOAD_EVENTS[event]
            if event == "workers_changed_restarting":  # applied by the restart it makes
                why = f"workers {event_dict.get('running')} -> {event_dict.get('workers')}"
            else:  # the pool's parent names each worker's outcome (`pool`)
                lines = event_dict.get("pool") or (() if result == "ok" else (
                    event_dict.get("problems") or [event_dict.get("error", "")]))
                why = "; ".join(map(str, lines))[:300]
            self.recent.add_reload(utc_now(), result, why)
        if method in ("warning", "error", "critical", "exception"):
            extra = " ".join(f"{k}={event_dict[k]}" for k in _SHOWN if k in event_dict)
            self.recent.warnings.add(utc_now(), f"{method}: {event} {extra}".strip()[:500])
        return event_dict


TAP = LogTap()
"""The one tap of this process (logging is process-wide); configure_logging installs it."""
