"""A worker's recent warnings and reload outcomes reach its parent on its reports
(edge/daemon/worker_report.py, edge/status/log_tap.py `LogNews`), over a real pipe.

Why: the parent's status page is the only place a plant engineer sees that a device in
worker 1 keeps failing; each entry must arrive once (not again with every report, nor
twice after a report the pipe had no room for), a full pipe must not lose what the ring
still holds, and a line a full pipe cut short must be finished before the next, or the
parent would read two reports run together and drop both.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from edge.config.workers import WorkerRole
from edge.daemon.worker_report import WorkerReporter
from edge.status.log_tap import LogNews, LogTap, Recent, RecentLog


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def reporter(fd: int, tap: LogTap, detail: dict[str, Any] | None = None) -> WorkerReporter:
    return WorkerReporter(
        WorkerRole(1, 2), fd, stats=dict, devices=dict, losses=dict,
        on_orphaned=lambda: None, log=structlog.get_logger(),
        detail=lambda: detail or {}, news=LogNews(tap.recent),
    )


def drain(fd: int) -> bytes:
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            out += chunk
    return out


def reports(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


def warn(tap: LogTap, asset: str) -> None:
    tap(None, "warning", {"event": "device_link_down", "asset": asset})


def test_a_ring_hands_out_only_what_came_after_a_mark() -> None:
    ring = Recent(keep=3)
    assert ring.after(0) == []
    for i in range(5):
        ring.add(datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), str(i))
    assert [s for _, s in ring.after(3)] == ["3", "4"]
    assert [s for _, s in ring.after(0)] == ["2", "3", "4"]  # the older ones are gone
    assert ring.after(5) == [] and ring.total == 5


def test_each_entry_travels_once_and_the_parent_keeps_it(pipe: tuple[int, int]) -> None:
    r, w = pipe
    tap = LogTap()
    rep = reporter(w, tap)
    warn(tap, "m1")
    tap(None, "error", {"event": "reload_rejected_keeping_running_config",
                        "problems": ["plant.yaml:3: machines.0.port: bad"]})
    rep.send()
    rep.send()  # nothing new: the second report carries no log
    first, second = reports(drain(r))
    assert "log" not in second
    kept = RecentLog()
    kept.absorb(first["log"])
    assert [t for _, t in kept.warnings] == [
        "warning: device_link_down asset=m1",
        "error: reload_rejected_keeping_running_config "
        "problems=['plant.yaml:3: machines.0.port: bad']"]
    # its reload outcome is no entry of the parent's (which logs one for the pool) ...
    assert "reloads" not in first["log"] and not len(kept.reloads)
    # ... but every report carries the latest, for the parent waiting for it
    assert first["reload"] == second["reload"] == [
        0.0, "rejected", "plant.yaml:3: machines.0.port: bad"]
    warn(tap, "m2")
    rep.send()
    [third] = reports(drain(r))
    assert [text for _, text in third["log"]["warnings"]] == ["warning: device_link_down asset=m2"]


def test_a_full_pipe_loses_nothing_and_never_runs_two_reports_together(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    tap = LogTap()
    rep = reporter(w, tap, {"filler": "x" * 20_000})  # a report longer than one pipe page
    filled = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filled += os.write(w, b"\n" * 4096)
    warn(tap, "m1")
    rep.send()  # no room at all: skipped, its news kept for the next one
    assert os.read(r, 8192).strip() == b""  # room for part of a report
    rep.send()  # part of the line goes out, the rest waits
    warn(tap, "m2")
    rep.send()  # the rest cannot go yet: nothing new is started
    data = drain(r)
    rep.send()  # the rest of the cut line, then this period's
    data += drain(r)
    rep.send()
    data += drain(r)
    got = reports(data)
    assert all(g["filler"] == "x" * 20_000 for g in got)
    seen = [text for g in got for _, text in g.get("log", {}).get("warnings", [])]
    assert seen == ["warning: device_link_down asset=m1", "warning: device_link_down asset=m2"]


def test_a_report_that_is_not_one_adds_nothing() -> None:
    kept = RecentLog()
    for bad in ({"warnings": [["not a time", "x"]]}, {"warnings": [["2026-01-01T00:00:00"]]},
                {"warnings": [["2026-01-01T00:00:00+00:00", "x"], 7]}):
        with pytest.raises((ValueError, TypeError, KeyError)):
            kept.absorb(bad)
    assert len(kept.warnings) == len(kept.reloads) == 0


def test_the_report_says_when_the_latest_reload_began(pipe: tuple[int, int]) -> None:
    """The parent passes a SIGHUP on at a moment of the host's monotonic clock and waits
    for the outcome of a reload that began after it: an earlier one's is not this one's."""
    r, w = pipe
    tap = LogTap()
    rep = reporter(w, tap)
    rep.send()
    [none] = reports(drain(r))
    assert "reload" not in none  # no reload yet
    before = time.monotonic()
    tap(None, "info", {"event": "reload_started", "file": "plant.yaml"})
    tap(None, "info", {"event": "reloaded", "machines": 2})
    rep.send()
    [report] = reports(drain(r))
    began, result, why = report["reload"]
    assert before <= began <= time.monotonic() and (result, why) == ("ok", "")
