"""Issue 17, the per-sample path: CPU per 1,000 samples and p99, before/after, alternating.

The gateway of the `before` revision (`BENCH_BEFORE`, default: where this branch left
`main`, `git merge-base HEAD main`) is exported with `git archive` into the bench's work
directory and run from there (its directory and PYTHONPATH come first, so its `edge`,
`adapters` and `models` are imported; same interpreter and dependencies) in turn with this
tree's gateway, against one 50-machine simulator process and the bench's broker. Rounds
alternate the order (before/after, then after/before), so a load change on the shared host
hits both sides; repeating the round shows the noise.

* 1 s poll, 50 machines x 40 points (2,000 samples/s): the peer's scenario (ThingsBoard IoT
  Gateway, bench/report.md section 4), where CPU per 1,000 samples is compared;
* 100 ms poll (20,000 samples/s offered): the p99 target's load; read -> sealed and sealed ->
  received p99 say whether the latency is queueing in the gateway's loop before signing or
  the way from the outbox over the broker to the subscriber;
* 10 ms poll (200,000 samples/s offered, far above what one process carries): saturation,
  where CPU per 1,000 samples is what the per-poll path costs with the loop never idle.
  Only when asked: `BENCH_HOTPATH_POLLS` lists the poll intervals in seconds (default
  `1,0.1`; `1,0.1,0.01` adds it).
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from .gateway_load import LoadSpec, run_load
from .processes import ROOT, ProcessGroup, start_simulators

MACHINES = 50

KEYS = ("samples_per_s", "achieved_over_offered", "gateway_cpu_s_per_1000_samples",
        "gateway_cpu_pct_of_core", "latency_ms_p50", "latency_ms_p99", "records_per_envelope",
        "envelopes_per_s", "gateway_rss_mb_steady", "seq_gaps", "duplicates",
        "read_to_sealed_ms_p99", "sealed_to_received_ms_p99", "other_load_pct_of_core",
        "bench_cpu_pct_of_core", "broker_cpu_pct_of_core")


def before_revision() -> str:
    """`BENCH_BEFORE`, or the commit this branch started from on `main`."""
    rev = os.environ.get("BENCH_BEFORE")
    if rev:
        return rev
    done = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.strip()


def export(rev: str, into: Path) -> Path:
    """The tree of `rev` (read-only git), unpacked into `into`/before."""
    tree = into / "before"
    data = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT,
                          capture_output=True, timeout=120, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def plan(quick: bool, before: Path) -> list[tuple[str, str, LoadSpec]]:
    """(scenario, side, spec) in the order they run."""
    w = 4.0 if quick else 20.0
    settle, grace = (1.0, 2.0) if quick else (3.0, 3.0)
    rounds = 1 if quick else 3
    polls = [1.0] if quick else [float(p) for p in
                                 os.environ.get("BENCH_HOTPATH_POLLS", "1,0.1").split(",")]
    scenarios = [(_scenario(p), p) for p in polls]
    out = []
    for n in range(1, rounds + 1):
        sides = [("before", before), ("after", None)]
        if n % 2 == 0:
            sides.reverse()
        for scenario, interval in scenarios:
            for side, source in sides:
                out.append((scenario, side, LoadSpec(
                    MACHINES, interval=interval, window=w, settle=settle, grace=grace,
                    source=source, run_id=f"r{n}")))
    return out


def _scenario(interval: float) -> str:
    return f"{interval:g} s poll" if interval >= 1 else f"{1000 * interval:g} ms poll"


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    rev = before_revision()
    before = export(rev, group.workdir)
    sims = start_simulators(group, MACHINES)
    rows: list[dict[str, Any]] = []
    profiled: set[tuple[str, str]] = set()
    try:
        for scenario, side, spec in plan(quick, before):
            # one py-spy profile per side at 20,000 samples/s, after its window
            prof = 15.0 if not quick and spec.interval < 1 and (scenario, side) not in profiled \
                else 0.0
            profiled.add((scenario, side))
            print(f"  hotpath: {scenario}, {side} ({spec.run_id}) ...", flush=True)
            result = run_load(group, broker_port, spec, simulators=sims,
                              profile_seconds=prof)[0]
            row = {"scenario": scenario, "side": side, "round": spec.run_id,
                   "offered_per_s": spec.offered, **{k: result[k] for k in KEYS}}
            if "profile" in result:
                row["profile_stages"] = result["profile"].get("stages", [])
            rows.append(row)
            print(f"    {row['samples_per_s']:,.0f} samples/s, CPU "
                  f"{row['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, "
                  f"p99 {row['latency_ms_p99']:.0f} ms, other load "
                  f"{row['other_load_pct_of_core']:.0f} % core", flush=True)
    finally:
        group.stop(sims[0])
    return {"machines": MACHINES, "before": rev, "runs": rows, "ratios": ratios(rows)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per scenario: median of after / before over the rounds, CPU and p99."""
    out: dict[str, dict[str, float]] = {}
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        pairs: dict[str, dict[str, dict[str, Any]]] = {}
        for r in rows:
            if r["scenario"] == scenario:
                pairs.setdefault(r["round"], {})[r["side"]] = r
        both = [p for p in pairs.values() if len(p) == 2]
        if not both:
            continue
        out[scenario] = {
            "cpu_per_1000_after_over_before": statistics.median(
                p["after"]["gateway_cpu_s_per_1000_samples"]
                / p["before"]["gateway_cpu_s_per_1000_samples"] for p in both),
            "p99_after_over_before": statistics.median(
                p["after"]["latency_ms_p99"] / p["before"]["latency_ms_p99"] for p in both),
        }
    return out
