"""Recent warnings and the reload history, taken from the gateway's own structured logs.

Why from the logs: every warning the gateway has is already a structlog event (logged once
per interval by design), and reloads log `reloaded` / `reload_rejected_...`. A processor
in the logging chain keeps the last few in memory for the status page's gateway view, so
no component needs a second reporting path. Secrets never reach log calls, so none reach
the page either.

With `run --workers N` each worker keeps its own; what is new since its last report rides
on that report to the parent (`LogNews`, edge/daemon/worker_report.py), which keeps a copy
per worker (`RecentLog.absorb`, edge/daemon/workers.py) that outlives a restart of the
worker, and shows them beside its own (`merged`, edge/status/identity.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any, Literal

from edge.status.model import LogEntry
from models.sample import utc_now

RELOAD_EVENTS = {"reloaded": "ok", "reload_rejected_keeping_running_config": "rejected",
                 # the file was valid, but what it names could not be prepared (a keys
                 # directory that is a file...): refused as well, and said why
                 "reload_preparation_failed_keeping_running_config": "rejected",
                 "workers_changed_restarting": "ok"}
_SHOWN = ("asset", "destination", "error", "reason", "problems", "path", "hint",
          "category", "message", "location")  # the last three: `python_warning`
Kind = Literal["warnings", "reloads"]
RELOAD_RESULTS = ("ok", "rejected")
"""`edge_gateway_reloads_total`'s `result` values: each has a sample (0) before any reload,
as Prometheus asks of known label values, so `rate()` and alerts see the first one."""
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

    def add_reload(self, when: datetime, text: str) -> None:
        self.reloads.add(when, text)
        ok = text == "ok" or text.startswith("ok: ")  # "ok: workers 2 -> 3"
        result = RELOAD_RESULTS[0] if ok else RELOAD_RESULTS[1]
        self.reload_counts[result] += 1

    def kind(self, name: Kind) -> Recent:
        return self.warnings if name == "warnings" else self.reloads

    def absorb(self, news: Mapping[str, Any]) -> None:
        """Add what a worker's report carried (`LogNews.pending`); ValueError, TypeError or
        KeyError when it is not that shape."""
        parsed = {k: [(datetime.fromisoformat(str(t)), str(s)) for t, s in news.get(k, ())]
                  for k in self.KINDS}  # all parsed first: a bad report adds nothing
        for when, text in parsed["warnings"]:
            self.warnings.add(when, text)
        for when, text in parsed["reloads"]:  # each arrives once (LogNews), so counted once
            self.add_reload(when, text)


class LogNews:
    """A worker's side: what of its `RecentLog` the parent has not been sent yet. The
    marks move only once a report carrying the entries was written (`delivered`), so a
    report skipped because the pipe was full loses nothing the ring still holds."""

    def __init__(self, log: RecentLog) -> None:
        self.log = log
        self._sent: dict[str, int] = dict.fromkeys(RecentLog.KINDS, 0)

    def pending(self) -> tuple[dict[str, list[list[str]]], dict[str, int]]:
        """(the new entries by kind, as JSON; the marks to pass to `delivered`)."""
        news = {k: [[t.isoformat(), s] for t, s in self.log.kind(k).after(self._sent[k])]
                for k in RecentLog.KINDS}
        return ({k: v for k, v in news.items() if v},
                {k: self.log.kind(k).total for k in RecentLog.KINDS})

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


def reload_counts(own: RecentLog, workers: Sequence[RecentLog]) -> dict[str, int]:
    """Reload outcomes by result, this process's and every worker's (each worker's copy
    survives its restarts in the parent, so the sum only grows)."""
    out = dict(own.reload_counts)
    for log in workers:
        for result, n in log.reload_counts.items():
            out[result] = out.get(result, 0) + n
    return out


class LogTap:
    """A structlog processor: passes every event on unchanged, remembers a few."""

    def __init__(self, keep: int = KEEP) -> None:
        self.recent = RecentLog(keep)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event", ""))
        if event in RELOAD_EVENTS:
            detail = RELOAD_EVENTS[event]
            if event == "workers_changed_restarting":  # applied by the restart it makes
                detail += f": workers {event_dict.get('running')} -> {event_dict.get('workers')}"
            elif detail != "ok":
                why = event_dict.get("problems") or [event_dict.get("error", "")]
                detail += ": " + "; ".join(map(str, why))[:300]
            self.recent.add_reload(utc_now(), detail)
        if method in ("warning", "error", "critical", "exception"):
            extra = " ".join(f"{k}={event_dict[k]}" for k in _SHOWN if k in event_dict)
            self.recent.warnings.add(utc_now(), f"{method}: {event} {extra}".strip()[:500])
        return event_dict


TAP = LogTap()
"""The one tap of this process (logging is process-wide); configure_logging installs it."""
