"""The gateway view's history kept across a worker-count restart (edge/status/log_keep.py):
written 0600 for the next start, read once, and a bad file costs the history, not the start."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from edge.status.log_keep import FILENAME, keep, restore
from edge.status.log_tap import LogTap, RecentLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOG = structlog.get_logger()


def test_the_next_start_shows_the_parents_and_workers_entries_once(tmp_path: Path) -> None:
    parent, worker = RecentLog(), RecentLog()
    worker.warnings.add(T0, "warning: device_unavailable asset=m1")
    parent.warnings.add(T0 + timedelta(seconds=1), "warning: workers_changed_restarting")
    parent.add_reload(T0 + timedelta(seconds=1), "ok", "workers 2 -> 3")
    parent.reload_counts["rejected"] = 2  # two earlier refusals, no longer in the list
    keep(tmp_path, parent, [RecentLog(), worker], LOG)
    assert stat.S_IMODE((tmp_path / FILENAME).stat().st_mode) == 0o600

    after = RecentLog()
    after.warnings.add(T0 + timedelta(seconds=5), "warning: new in this run")
    restore(tmp_path, after, LOG)
    assert [s for _, s in after.warnings] == [
        "worker 1: warning: device_unavailable asset=m1",
        "warning: workers_changed_restarting",
        "warning: new in this run",  # this run's own after the kept ones
    ]
    assert list(after.reloads) == [(T0 + timedelta(seconds=1), "ok: workers 2 -> 3")]
    # `edge_gateway_reloads_total` goes on: the reload that changed the count is counted
    # once, by the process that serves `/metrics` after it
    assert after.reload_counts == {"ok": 1, "rejected": 2, "partial": 0}
    assert not (tmp_path / FILENAME).exists()  # read once
    restore(tmp_path, again := RecentLog(), LOG)
    assert not list(again.warnings)


def test_the_kept_history_is_bounded(tmp_path: Path) -> None:
    parent = RecentLog(keep=500)
    for i in range(500):
        parent.warnings.add(T0 + timedelta(seconds=i), f"warning: w{i}")
    keep(tmp_path, parent, [], LOG)
    after = RecentLog()
    restore(tmp_path, after, LOG)
    assert len(after.warnings) == 50 and list(after.warnings)[-1][1] == "warning: w499"


@pytest.mark.parametrize("text", ["{not json", '{"warnings": [["yesterday", "x"]]}', "[1, 2]",
                                  '{"reloads": 7}', '{"reload_counts": {"ok": -1}}',
                                  '{"reload_counts": {"ok": "many"}}'])
def test_a_corrupt_file_is_ignored_with_one_warning(tmp_path: Path, text: str) -> None:
    (tmp_path / FILENAME).write_text(text)
    after = RecentLog()
    with capture_logs() as logs:
        restore(tmp_path, after, LOG)
    assert [e["event"] for e in logs] == ["recent_log_unreadable_ignored"]
    assert not list(after.warnings) and not list(after.reloads)
    assert after.reload_counts == {"ok": 0, "rejected": 0, "partial": 0}
    assert not (tmp_path / FILENAME).exists()


def test_a_worker_count_change_is_listed_as_a_reload() -> None:
    tap = LogTap()
    tap(None, "warning", {"event": "workers_changed_restarting", "running": 2, "workers": 3})
    assert [s for _, s in tap.recent.reloads] == ["ok: workers 2 -> 3"]
    assert tap.recent.reload_counts == {"ok": 1, "rejected": 0, "partial": 0}


def test_a_failed_preparation_is_listed_and_counted_as_a_rejected_reload() -> None:
    """The file validated, but the new egress could not be prepared: the running
    configuration stays, as for an invalid file, and the page and
    `edge_gateway_reloads_total{result="rejected"}` say so (they counted nothing)."""
    tap = LogTap()
    tap(None, "error", {"event": "reload_preparation_failed_keeping_running_config",
                        "error": "keys directory /k is not a directory"})
    assert [s for _, s in tap.recent.reloads] == ["rejected: keys directory /k is not a directory"]
    assert tap.recent.reload_counts == {"ok": 0, "rejected": 1, "partial": 0}
