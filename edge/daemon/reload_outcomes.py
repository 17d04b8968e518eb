"""One SIGHUP's outcome for a worker pool (`run --workers N`), from each worker's.

Why: each worker reloads its own slice and logs its own outcome. Counted per worker, one
SIGHUP was N entries on the page and N in `edge_gateway_reloads_total`, and a worker that
kept its running configuration while the others applied the file was counted `ok` beside
them. The parent, which passes the SIGHUP on, waits for each worker's outcome (its report
carries its last one, edge/status/log_tap.py `LastReload`) and logs one for the pool:
`ok` when every worker applied the file, `rejected` when none did (the parent then keeps
its own configuration too), `partial` otherwise. The lines name the workers, e.g.
`applied by worker 0` and `worker 1: cannot create state directory ...`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any, NamedTuple

from edge.status.log_tap import LastReload


class WorkerOutcome(NamedTuple):
    worker: int
    result: str
    """One of edge/status/log_tap.py RELOAD_RESULTS, or `unknown` (it stopped, or said
    nothing in time: `why` says which)."""
    why: str = ""
    """Empty for a plain `ok`; else what the worker said, or what the parent saw."""


NOT_RUNNING = "not running, starts with this file"
STOPPED = "stopped during the reload"


def reported(report: Mapping[str, Any]) -> LastReload | None:
    """The last reload outcome a worker's report carries (edge/daemon/worker_report.py),
    None when it has none or it is not that shape (a report is never trusted to be)."""
    try:
        began, result, why = report["reload"]
        return LastReload(float(began), str(result), str(why))
    except (KeyError, TypeError, ValueError):
        return None


def pool_outcome(outcomes: Sequence[WorkerOutcome]) -> tuple[str, list[str]]:
    """(the pool's result, one line per group of workers with the same outcome)."""
    results = {o.result for o in outcomes} or {"ok"}  # no worker asked: the parent's
    result = results.pop() if len(results) == 1 and results <= {"ok", "rejected"} else "partial"
    lines = []
    ordered = sorted(outcomes, key=lambda o: (o.result != "ok", o.result, o.why, o.worker))
    for (res, why), same in groupby(ordered, key=lambda o: (o.result, o.why)):
        workers = _workers([o.worker for o in same])
        if res == "ok" and not why:
            lines.append(f"applied by {workers}")
        elif res in ("ok", "unknown") or res == result == "rejected":  # `rejected: worker 1: x`
            lines.append(f"{workers}: {why}")
        else:  # `partial: applied by worker 0; worker 1: rejected: <reason>`
            lines.append(f"{workers}: {res}: {why}")
    return result, lines


def _workers(indexes: list[int]) -> str:
    return ("worker " if len(indexes) == 1 else "workers ") + ", ".join(map(str, indexes))


__all__ = ["NOT_RUNNING", "STOPPED", "WorkerOutcome", "pool_outcome", "reported"]
