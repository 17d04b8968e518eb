"""Issue 17, cost per machine: 500 machines x 40 points polled every second against 50
polled every 100 ms (both 20,000 samples/s offered), before/after, 1 and 2 workers.

At one worker the 500-machine plant delivered 77.5 % where the 50-machine one, with the
same samples and as many Modbus requests per second, delivered all of it (section 2j): what
grows with the machine count is per-machine work (state envelopes and OEE saves per part,
rounds over every machine, connects and start-up), not per-sample work. The `before`
revision (`BENCH_BEFORE`, default `git merge-base HEAD main`) is exported with `git archive`
and run from its directory as in bench/hotpath.py; one simulator process per plant size is
shared by both sides, and the order of before/after alternates row by row so a load change
on the shared host hits both. Start-up is from spawning the gateway to every machine's
first envelope at the subscriber.
"""

from __future__ import annotations

import os
from typing import Any

from .gateway_load import LoadSpec, run_load
from .hotpath import before_revision, export
from .processes import ProcessGroup, start_simulators

KEYS = ("samples_per_s", "offered_per_s", "achieved_over_offered", "latency_ms_p50",
        "latency_ms_p99", "read_to_sealed_ms_p99", "sealed_to_received_ms_p99",
        "gateway_cpu_s_per_1000_samples", "gateway_cpu_pct_of_core", "startup_s", "startup_cpu_s",
        "worker_rss_mb_steady", "gateway_rss_mb_steady", "envelopes_per_s",
        "state_and_other_envelopes", "seq_gaps", "duplicates", "other_load_pct_of_core",
        "simulators_cpu_pct_of_core", "broker_cpu_pct_of_core", "bench_cpu_pct_of_core",
        "gateway_log_warnings", "delivered_per_s", "gateway_cpu_s_per_1000_delivered",
        "received_in_window_age_ms_p50")
PLANTS = ((500, 1.0), (50, 0.1))  # both offer 20,000 samples/s (the p99 target's rate)


def plants() -> tuple[tuple[int, float], ...]:
    """`BENCH_PERMACHINE_PLANTS="500x5,50x0.5"`: other plant sizes and poll intervals (e.g.
    a rate both sides carry on a busy host, where CPU per sample is not a starved figure)."""
    spec = os.environ.get("BENCH_PERMACHINE_PLANTS")
    if not spec:
        return PLANTS
    return tuple((int(m), float(i)) for m, i in (p.split("x") for p in spec.split(",")))


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    rev = before_revision()
    before = export(rev, group.workdir)
    window, settle, grace = (5.0, 1.0, 2.0) if quick else (15.0, 3.0, 3.0)
    # After start-up every machine's first capacity offer, state, OEE and part records go
    # out at once: 50 times as many at 500 machines. The window starts once they are out,
    # so a start-up 10x faster does not put its burst into the measured window.
    settle_per_machine = 0.0 if quick else 0.04
    rows: list[dict[str, Any]] = []
    turn = int(os.environ.get("BENCH_PERMACHINE_TURN", "0"))  # 1: "after" runs first
    chosen = plants()
    for machines, interval in chosen[:1] if quick else chosen:
        # `BENCH_PERMACHINE_TIME_SCALE=1`: machines at real time (a part every 30-120 s)
        sim = start_simulators(group, machines,
                               float(os.environ.get("BENCH_PERMACHINE_TIME_SCALE", "60")))
        try:
            counts = os.environ.get("BENCH_PERMACHINE_WORKERS", "1" if quick else "1,2")
            for workers in (int(n) for n in counts.split(",")):
                sides = [("before", before), ("after", None)]
                if turn % 2:
                    sides.reverse()
                turn += 1
                for side, source in sides:
                    print(f"  machines: {machines} every {interval:g} s, {workers} worker(s), "
                          f"{side} ...", flush=True)
                    spec = LoadSpec(machines, interval=interval, window=window,
                                    settle=settle + settle_per_machine * machines,
                                    grace=grace, workers=workers, source=source,
                                    run_id=f"{side}-{workers}")
                    result = run_load(group, broker_port, spec, simulators=sim)[0]
                    row = {"machines": machines, "poll_interval_s": interval,
                           "workers": workers, "side": side, **{k: result[k] for k in KEYS}}
                    rows.append(row)
                    print(f"    {100 * row['achieved_over_offered']:.1f} % (delivered "
                          f"{row['delivered_per_s']:,.0f}/s, CPU "
                          f"{row['gateway_cpu_s_per_1000_delivered']:.4f} s / 1,000 of them, "
                          f"age p50 {row['received_in_window_age_ms_p50']:.0f} ms), p99 "
                          f"{row['latency_ms_p99']:.0f} ms, CPU "
                          f"{row['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, start-up "
                          f"{row['startup_s']:.1f} s, other load "
                          f"{row['other_load_pct_of_core']:.0f} % core", flush=True)
        finally:
            group.stop(sim[0])
    if not quick and os.environ.get("BENCH_PERMACHINE_REAL_TIME", "1") == "1":
        rows += _real_time(group, broker_port, window, settle + 500 * settle_per_machine,
                           grace)
    return {"before": rev, "window_s": window, "runs": rows}


def _real_time(group: ProcessGroup, broker_port: int, window: float, settle: float,
               grace: float) -> list[dict[str, Any]]:
    """500 machines on a simulator at real time (`--time-scale 1`: a part every 30-120 s
    instead of about every second) then again at 60x, this tree's gateway, one worker: how
    much of the per-machine cost is the per-part work (a `state` envelope and an OEE save
    per part) that the bench's accelerated machines multiply by 60."""
    rows = []
    for scale in (1.0, 60.0):
        sim = start_simulators(group, 500, time_scale=scale)
        try:
            print(f"  machines: 500 every 1 s, simulator time scale {scale:g} ...", flush=True)
            spec = LoadSpec(500, interval=1.0, window=window, settle=settle, grace=grace,
                            run_id=f"scale{scale:g}")
            result = run_load(group, broker_port, spec, simulators=sim)[0]
            rows.append({"machines": 500, "poll_interval_s": 1.0, "workers": 1,
                         "side": f"after, time scale {scale:g}",
                         **{k: result[k] for k in KEYS}})
            print(f"    delivered {result['delivered_per_s']:,.0f}/s, CPU "
                  f"{result['gateway_cpu_s_per_1000_delivered']:.4f} s / 1,000, "
                  f"{result['state_and_other_envelopes']} state/other envelopes", flush=True)
        finally:
            group.stop(sim[0])
    return rows
