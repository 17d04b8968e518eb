"""Issue 17 items 3 and 6: `gateway.workers` N = 1..cores at 50, 200 and 500 machines.

Each machine has 40 points. 50 machines polled every 10 ms are offered 200,000 samples/s,
more than the host can take (at 50 ms, 40,000, a quiet 2-core host delivered them all once
the per-sample path, the writer thread and the memory work landed, so that row measured
the offer, not a ceiling), so samples/s there is saturation: what each added worker buys,
against today's one-process figure (the issue's ~15,400 samples/s) and against the bare
pymodbus ceiling measured right after on the same simulator process (requests/s over
requests/s, so the ratio does not depend on how many points one request carries). 200
machines polled every second (8,000 samples/s, the issue's scenario) show CPU, p99 and RSS
per worker at a load one process can carry; 500 every second (20,000 samples/s, the p99
target's rate) is what the p99 target is read at.

Same broker for every row, one simulator process per plant size, rows of one size one after
the other. CPU is the gateway's whole process tree (parent + workers) per 1,000 samples
delivered; RSS per worker is the largest worker's (the single process's when N = 1).
"""

from __future__ import annotations

import os
from typing import Any

from . import ceilings
from .gateway_load import LoadSpec, run_load
from .processes import ProcessGroup, start_simulators

KEYS = ("samples_per_s", "offered_per_s", "achieved_over_offered", "modbus_requests_per_s",
        "gateway_cpu_s_per_1000_samples", "gateway_cpu_pct_of_core", "latency_ms_p50",
        "latency_ms_p99", "worker_processes", "worker_rss_mb_steady", "gateway_rss_mb_steady",
        "startup_s", "seq_gaps", "duplicates", "other_load_pct_of_core",
        "simulators_cpu_pct_of_core", "broker_cpu_pct_of_core", "bench_cpu_pct_of_core")
SATURATION = (50, 0.01)  # (machines, poll interval): offered far above what the host takes
PLANTS = (SATURATION, (200, 1.0), (500, 1.0))
ONE_PROCESS_BEFORE = 15_400.0
"""Samples/s saturated on one core when issue 17 was filed (its "today")."""


def _ceiling(base_port: int, machines: int, quick: bool) -> dict[str, Any]:
    """The bare pymodbus ceiling on the saturation rows' simulator, as in section 3."""
    print(f"  workers: pymodbus ceiling against the {machines}-machine simulator ...",
          flush=True)
    return ceilings.modbus(base_port, machines, 0.5 if quick else 3.0, clients=10)


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    window, settle, grace = (5.0, 1.0, 2.0) if quick else (15.0, 3.0, 3.0)
    rows: list[dict[str, Any]] = []
    ceiling: dict[str, Any] = {}
    for machines, interval in PLANTS[:1] if quick else PLANTS:
        sim, base = start_simulators(group, machines)
        try:
            for workers in range(1, cores + 1):
                print(f"  workers: {machines} machines every {interval:g} s, {workers} "
                      "worker(s) ...", flush=True)
                spec = LoadSpec(machines, interval=interval, window=window, settle=settle,
                                grace=grace, workers=workers)
                result = run_load(group, broker_port, spec, simulators=(sim, base))[0]
                rows.append({"machines": machines, "workers": workers,
                             "poll_interval_s": interval, **{k: result[k] for k in KEYS}})
                print(f"    {result['samples_per_s']:,.0f} samples/s, CPU "
                      f"{result['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, "
                      f"p99 {result['latency_ms_p99']:.0f} ms, RSS/worker "
                      f"{result['worker_rss_mb_steady']:.0f} MB", flush=True)
            if (machines, interval) == SATURATION:
                ceiling = _ceiling(base, machines, quick)
        finally:
            group.stop(sim)
    return {"cores": cores, "window_s": window, "runs": rows, "pymodbus_ceiling": ceiling,
            "one_process_before_samples_per_s": ONE_PROCESS_BEFORE,
            **figures(rows, ceiling)}


def figures(rows: list[dict[str, Any]], ceiling: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, from the rows: the saturated rate with every core's worker (and
    the best row) over today's and over the ceiling, the most workers over one, and the
    largest worker at 200 machines."""
    out: dict[str, Any] = {}
    for machines in sorted({r["machines"] for r in rows}):
        mine = [r for r in rows if r["machines"] == machines]
        if len(mine) > 1 and mine[0]["samples_per_s"]:
            out[f"samples_{machines}_most_over_one_worker"] = (
                mine[-1]["samples_per_s"] / mine[0]["samples_per_s"])
    saturated = [r for r in rows if (r["machines"], r["poll_interval_s"]) == SATURATION]
    if saturated:
        # the target counts with every core in use: the row with the most workers
        best, every_core = max(saturated, key=lambda r: r["samples_per_s"]), saturated[-1]
        out["saturation_best"] = {"workers": best["workers"],
                                  "samples_per_s": best["samples_per_s"]}
        out["saturation_every_core"] = {"workers": every_core["workers"],
                                        "samples_per_s": every_core["samples_per_s"]}
        out["saturation_over_before"] = every_core["samples_per_s"] / ONE_PROCESS_BEFORE
        out["saturation_best_over_before"] = best["samples_per_s"] / ONE_PROCESS_BEFORE
        if ceiling.get("concurrent_reads_per_s"):
            out["saturation_over_pymodbus_ceiling"] = (
                every_core["modbus_requests_per_s"] / ceiling["concurrent_reads_per_s"])
            out["saturation_best_over_pymodbus_ceiling"] = (
                best["modbus_requests_per_s"] / ceiling["concurrent_reads_per_s"])
            out["saturation_over_pymodbus_sequential_ceiling"] = (
                every_core["modbus_requests_per_s"] / ceiling["sequential_reads_per_s"])
    at_200 = {r["workers"]: r["worker_rss_mb_steady"] for r in rows if r["machines"] == 200}
    if at_200:
        out["worker_rss_mb_at_200_max"] = max(at_200.values())
        out["worker_rss_mb_at_200_by_workers"] = at_200
    return out
