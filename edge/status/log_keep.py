"""The status page's recent warnings and reloads, kept across the restart a worker-count
change makes.

Why: a SIGHUP that changes `gateway.workers` makes `run` return `EXIT_RESTART`, and
edge/cli.py execs the command again in the same process: everything in memory is gone,
including the reload that changed the count, and the plant engineer who just sent the SIGHUP
saw an empty history. So the stopping parent writes what its gateway view shows (its own
entries and its workers', merged, the newest `KEEP` of each kind) to `FILENAME` in the state
directory, and the next start reads it once into its own and deletes it, with the reload
counts: `edge_gateway_reloads_total` goes on from them, so the reload that changed the count
is counted once, in the process that serves `/metrics` after it (the stopping one was gone
before any scrape could see it). It is a convenience: a missing or unreadable file costs
the history, never the start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from edge.status.log_tap import KEEP, RELOAD_RESULTS, RecentLog, merged

FILENAME = "recent-log.json"


def keep(state_dir: Path, own: RecentLog, workers: Sequence[RecentLog],
         log: FilteringBoundLogger) -> None:
    """Write the history for the next start (atomically, 0600); a worker's entry keeps its
    worker in the text (the next pool may number its workers otherwise)."""
    data: dict[str, object] = {
        kind: [[e.when.isoformat(), e.text if e.worker is None else f"{e.origin}: {e.text}"]
               for e in merged(own, workers, kind, KEEP)] for kind in RecentLog.KINDS}
    data["reload_counts"] = own.reload_counts  # the parent's: one per SIGHUP (log_tap.py)
    path = state_dir / FILENAME
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of a crash with our pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("recent_log_not_kept", path=str(path), error=str(exc))
        with contextlib.suppress(OSError):
            tmp.unlink()


def restore(state_dir: Path, into: RecentLog, log: FilteringBoundLogger) -> None:
    """Put what the previous run kept before `into`'s own entries, add its reload counts to
    `into`'s, and delete the file (read once)."""
    path = state_dir / FILENAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.debug("recent_log_none_kept", path=str(path))
        return
    except OSError as exc:
        log.warning("recent_log_unreadable_ignored", path=str(path), error=str(exc))
        return
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    try:
        data = json.loads(raw)
        kept = {kind: [(datetime.fromisoformat(str(t)), str(s)) for t, s in data.get(kind, ())]
                for kind in RecentLog.KINDS}  # all parsed first: a bad file adds nothing
        counts = {r: int(n) for r, n in data.get("reload_counts", {}).items()
                  if r in RELOAD_RESULTS}
        if any(n < 0 for n in counts.values()):
            raise ValueError("a negative reload count")
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("recent_log_unreadable_ignored", path=str(path), error=str(exc))
        return
    for kind, entries in kept.items():
        into.kind(kind).earlier(entries)
    for result, n in counts.items():
        into.reload_counts[result] += n


__all__ = ["FILENAME", "keep", "restore"]
