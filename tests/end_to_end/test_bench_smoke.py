"""`python -m bench --quick` runs end to end and writes a well-formed result file.

This is a smoke test, not a performance test: it asserts that every figure was measured
(the suite, its subprocesses and the gateway all work together), never how fast anything
was. Speed on a shared CI box says nothing; the figures live in bench/report.md.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import SECTIONS

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_TOP = {
    "schema",
    "mode",
    "meta",
    "modbus_plan",
    "s7_plan",
    "gateway_runs",
    "ceilings",
    "ratios",
    "duration_s",
    "scenarios",
    "opcua",
    "peer",
    "targets",
    "plots",
}
EXPECTED_SCENARIO = {
    "samples_per_s",
    "gateway_cpu_s_per_1000_samples",
    "gateway_rss_mb_steady",
    "latency_ms_p50",
    "latency_ms_p99",
    "seq_gaps",
    "gateway_exit_code",
}
EXPECTED_RUN = {
    "machines",
    "points_per_machine",
    "samples_per_s",
    "offered_per_s",
    "achieved_over_offered",
    "gateway_cpu_s_per_1000_samples",
    "gateway_rss_mb_steady",
    "gateway_rss_mb_peak",
    "latency_ms_p50",
    "latency_ms_p99",
    "seq_gaps",
    "gateway_exit_code",
}
EXPECTED_RATIOS = {
    "achieved_over_offered",
    "modbus_requests_over_sequential_ceiling",
    "modbus_requests_over_concurrent_ceiling",
    "envelopes_over_mqtt_ceiling",
    "envelopes_over_sign_ceiling",
}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_bench_writes_results(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--results-dir",
        str(tmp_path),
        "--report",
        str(tmp_path / "report.md"),
    ]
    # Own session, so a hung run can be killed with everything it started.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"python -m bench --quick took more than 150 s:\n{out}")
    assert proc.returncode == 0, out

    results = json.loads((tmp_path / "latest.json").read_text())
    assert not EXPECTED_TOP - results.keys(), "missing keys"
    assert results["mode"] == "quick"

    plan = results["modbus_plan"]
    assert plan["points"] == 500
    assert plan["minimum_requests"] <= plan["plan_requests"]
    # what the planner promises is what goes on the wire
    assert plan["live_requests_per_cycle"] == plan["plan_requests"]

    s7 = results["s7_plan"]
    assert "error" not in s7, s7.get("error")
    assert s7["points"] == 500 and s7["minimum_requests"] <= s7["plan_requests"]
    assert s7["default"]["live_requests_per_cycle"] == s7["plan_requests"]
    assert s7["adapter_over_ceiling"] > 0 and math.isfinite(s7["adapter_over_ceiling"])

    (run,) = results["gateway_runs"]
    assert not EXPECTED_RUN - run.keys(), "missing keys"
    assert run["samples_per_s"] > 0
    assert run["gateway_exit_code"] == 0
    assert run["seq_gaps"] == 0

    assert not {"modbus", "mqtt", "signing"} - results["ceilings"].keys()
    assert not EXPECTED_RATIOS - results["ratios"].keys()
    for name in EXPECTED_RATIOS:
        assert math.isfinite(results["ratios"][name]), name
    # scenarios (c) MTConnect and (d) the mixed demo plant ran through the real gateway
    for name in ("mtconnect", "mixed"):
        sc = results["scenarios"][name]
        assert "error" not in sc, sc.get("error")
        assert not EXPECTED_SCENARIO - sc.keys(), name
        assert sc["samples_per_s"] > 0, name
        assert sc["gateway_exit_code"] == 0, name
        assert sc["seq_gaps"] == 0, name
    assert {"mtconnect", "opcua", "modbus", "shdr", "haas", "focas"} <= set(
        results["scenarios"]["mixed"]["adapters"])
    # scenario (b) and the peer are optional figures: present, either measured or explained
    assert results["opcua"], "opcua figure missing"
    assert results["peer"].get("ran") or results["peer"].get("reason") or results["peer"].get(
        "error")
    assert all({"target", "figure", "status"} <= t.keys() for t in results["targets"])
    assert "files" in results["plots"] or "skipped" in results["plots"]
    assert (tmp_path / "report.md").read_text().startswith("# Benchmark report")


def test_suite_duration_target_names_every_optional_section() -> None:
    """The 10-minute target is reported for sections 1-4 and for the whole run: a section
    added to `SECTIONS` but not to `report.ISSUE17_SECTIONS` would count as sections 1-4."""
    assert tuple(SECTIONS) == report.ISSUE17_SECTIONS
    rows = report.targets({"mode": "full", "duration_s": 700.0,
                           "writer": {"bench_seconds": 300.0}})
    suite = {r["target"]: (r["figure"], r["status"]) for r in rows if "suite" in r["target"]}
    assert [f for f, _ in suite.values()] == ["400 s", "700 s (300 s of them issue 17's: "
                                              "writer 300)"]
    assert [s for _, s in suite.values()] == ["met", "NOT met"]
