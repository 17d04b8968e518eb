"""One SIGHUP's outcome for a worker pool, from each worker's (edge/daemon/reload_outcomes.py).

Why: the parent logs the one entry the page lists and `edge_gateway_reloads_total` counts;
`ok` must mean every worker applied the file, and a worker that kept its running
configuration must be named, not counted `ok` beside the others.
"""

from __future__ import annotations

import pytest

from edge.daemon.reload_outcomes import NOT_RUNNING, STOPPED, WorkerOutcome, pool_outcome, reported
from edge.status.log_tap import LastReload, LogTap


def test_every_worker_applied_is_ok_and_names_them() -> None:
    assert pool_outcome([WorkerOutcome(0, "ok"), WorkerOutcome(1, "ok")]) == (
        "ok", ["applied by workers 0, 1"])
    # one restarting reads the file as it starts: still ok, and said
    assert pool_outcome([WorkerOutcome(0, "ok"), WorkerOutcome(1, "ok", NOT_RUNNING)]) == (
        "ok", ["applied by worker 0", f"worker 1: {NOT_RUNNING}"])


def test_every_worker_refusing_is_rejected_with_each_reason_once() -> None:
    same = [WorkerOutcome(i, "rejected", "keys directory /k is not a directory") for i in (1, 0)]
    assert pool_outcome(same) == (
        "rejected", ["workers 0, 1: keys directory /k is not a directory"])
    other = [*same[:1], WorkerOutcome(0, "rejected", "disk full")]
    assert pool_outcome(other) == (
        "rejected", ["worker 0: disk full", "worker 1: keys directory /k is not a directory"])


@pytest.mark.parametrize("failed", [
    WorkerOutcome(1, "rejected", "cannot create state directory /s/worker-1"),
    WorkerOutcome(1, "partial", "RuntimeError: boom"),
    WorkerOutcome(1, "unknown", STOPPED),
    WorkerOutcome(1, "unknown", "no outcome within 60 s"),
])
def test_one_worker_not_applying_is_partial_and_named(failed: WorkerOutcome) -> None:
    result, lines = pool_outcome([WorkerOutcome(0, "ok"), failed])
    assert result == "partial"
    prefix = "" if failed.result == "unknown" else f"{failed.result}: "
    assert lines == ["applied by worker 0", f"worker 1: {prefix}{failed.why}"]


def test_the_parent_logs_the_pools_outcome_as_one_entry_and_one_count() -> None:
    tap = LogTap()
    result, lines = pool_outcome([WorkerOutcome(0, "ok"), WorkerOutcome(1, "rejected", "bad")])
    assert result == "partial"
    tap(None, "error", {"event": "reload_partially_applied", "pool": lines})
    tap(None, "info", {"event": "reloaded", "pool": ["applied by workers 0, 1"]})
    tap(None, "error", {"event": "reload_rejected_keeping_running_config",
                        "pool": ["workers 0, 1: bad"]})
    assert [t for _, t in tap.recent.reloads] == [
        "partial: applied by worker 0; worker 1: rejected: bad",
        "ok: applied by workers 0, 1", "rejected: workers 0, 1: bad"]
    assert tap.recent.reload_counts == {"ok": 1, "rejected": 1, "partial": 1}


def test_a_report_without_a_well_formed_outcome_has_none() -> None:
    assert reported({"reload": [1.5, "ok", ""]}) == LastReload(1.5, "ok", "")
    for bad in ({}, {"reload": None}, {"reload": [1.5, "ok"]}, {"reload": ["x", "ok", ""]}):
        assert reported(bad) is None
