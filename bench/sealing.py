"""Issue 17 item 1: sealing cost before/after, and whether larger batches help p99.

Runs the gateway several times against one 50-machine simulator and the bench's broker, in
one process tree, so the figures are side by side and share the machine's load:

* CPU per 1,000 samples at 50 machines x 40 points, 1 s poll: envelopes canonicalized by
  the pure-Python `rfc8785` (before, `bench/rfc8785_gateway.py`) and by `edge.signing.jcs`;
* saturation (polled every 50 ms, 40,000 samples/s offered): samples/s reached either way;
* 20,000 samples/s offered (every 100 ms), the p99 target's load, with one poll per
  envelope (the default) and with 2 and 5 polls per envelope (`gateway.batch.
  polls_per_envelope`: fewer, larger envelopes, one signature over more samples, but
  records wait up to that many poll intervals).
"""

from __future__ import annotations

from typing import Any

from .gateway_load import LoadSpec, run_load
from .processes import ProcessGroup, start_simulators

MACHINES = 50

KEYS = ("samples_per_s", "achieved_over_offered", "gateway_cpu_s_per_1000_samples",
        "gateway_cpu_pct_of_core", "latency_ms_p50", "latency_ms_p99", "records_per_envelope",
        "envelopes_per_s", "gateway_rss_mb_steady", "seq_gaps", "duplicates")


def plan(quick: bool) -> list[tuple[str, LoadSpec]]:
    w = 4.0 if quick else 20.0
    settle, grace = (1.0, 2.0) if quick else (3.0, 3.0)

    def spec(interval: float, canon: str = "gateway", polls: int = 1) -> LoadSpec:
        delay = None if polls == 1 else polls * interval + 0.05  # the age bound covers them
        return LoadSpec(MACHINES, interval=interval, window=w, settle=settle, grace=grace,
                        max_delay=delay, polls_per_envelope=polls, canonicalizer=canon)

    runs = [
        ("1 s poll, rfc8785 (before)", spec(1.0, "rfc8785")),
        ("1 s poll, edge.signing.jcs (after)", spec(1.0)),
        ("saturation 50 ms, rfc8785 (before)", spec(0.05, "rfc8785")),
        ("saturation 50 ms, edge.signing.jcs (after)", spec(0.05)),
        ("20k/s offered, 1 poll per envelope (default)", spec(0.1)),
        ("20k/s offered, 2 polls per envelope", spec(0.1, polls=2)),
        ("20k/s offered, 5 polls per envelope", spec(0.1, polls=5)),
    ]
    return runs[:2] if quick else runs


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    sims = start_simulators(group, MACHINES)
    rows: list[dict[str, Any]] = []
    try:
        for label, spec in plan(quick):
            print(f"  sealing: {label} ...", flush=True)
            result = run_load(group, broker_port, spec, simulators=sims)[0]
            row = {"run": label, "canonicalizer": spec.canonicalizer,
                   "poll_interval_s": spec.interval, "max_delay_s": spec.max_delay,
                   "offered_per_s": spec.offered, **{k: result[k] for k in KEYS}}
            rows.append(row)
            print(f"    {row['samples_per_s']:,.0f} samples/s, CPU "
                  f"{row['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, "
                  f"p99 {row['latency_ms_p99']:.0f} ms", flush=True)
    finally:
        group.stop(sims[0])
    out: dict[str, Any] = {"machines": MACHINES, "runs": rows}
    by = {r["run"]: r for r in rows}
    before, after = by.get(plan(quick)[0][0]), by.get(plan(quick)[1][0])
    if before and after:
        out["cpu_per_1000_after_over_before"] = (after["gateway_cpu_s_per_1000_samples"]
                                                 / before["gateway_cpu_s_per_1000_samples"])
    if not quick:
        sb, sa = by[plan(quick)[2][0]], by[plan(quick)[3][0]]
        out["saturation_after_over_before"] = sa["samples_per_s"] / sb["samples_per_s"]
    return out
