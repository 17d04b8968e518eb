"""`python -m bench.rss`: resident memory of the gateway at 50 and 200 machines x 40 points,
one process and `gateway.workers` 2, per process (the parent and each worker).

Why a section of its own: issue 17 asks for RSS < 150 MB per worker at 200 machines x 40
points, and the scaling table (bench/scaling.py, ~5.5 min) only shows the largest worker
and the tree's total. This runs the same generated plant through the same `run_load` (same
simulator, broker, subscriber and sampling: median VmRSS every 0.5 s in the window, VmHWM
after it) and keeps each process apart, in about two minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .gateway_load import LoadSpec, run_load
from .processes import ProcessGroup, start_mosquitto, start_simulators, terminate_on_sigterm

PLANTS = (50, 200)
WORKERS = (1, 2)


def measure(group: ProcessGroup, broker_port: int, plants: tuple[int, ...],
            workers: tuple[int, ...], window: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for machines in plants:
        sim, base = start_simulators(group, machines)
        try:
            for n in workers:
                print(f"  rss: {machines} machines, {n} worker(s) ...", flush=True)
                spec = LoadSpec(machines, window=window, settle=3.0, grace=1.0, workers=n)
                result = run_load(group, broker_port, spec, simulators=(sim, base))[0]
                procs = result["rss_mb_by_process"]
                rows.append({"machines": machines, "workers": n,
                             "samples_per_s": result["samples_per_s"],
                             "offered_per_s": result["offered_per_s"],
                             "other_load_pct_of_core": result["other_load_pct_of_core"],
                             "processes": procs,
                             "total_rss_mb": sum(p["rss_mb_steady"] for p in procs)})
                for p in procs:
                    print(f"    {p['role']:6} RSS {p['rss_mb_steady']:6.1f} MB, "
                          f"HWM {p['hwm_mb']:6.1f} MB", flush=True)
        finally:
            group.stop(sim)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per plant and worker count; workers listed by their pid order."""
    out = ["| machines | workers | samples/s (offered) | parent RSS / HWM MB | "
           "worker RSS / HWM MB | total RSS MB | other load % core |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        parent = next(p for p in r["processes"] if p["role"] == "parent")
        workers = [p for p in r["processes"] if p["role"] == "worker"]
        served = (", ".join(f"{p['rss_mb_steady']:.1f} / {p['hwm_mb']:.1f}" for p in workers)
                  if workers else "(the parent)")
        out.append(f"| {r['machines']} | {r['workers']} | {r['samples_per_s']:,.0f} "
                   f"({r['offered_per_s']:,.0f}) | {parent['rss_mb_steady']:.1f} / "
                   f"{parent['hwm_mb']:.1f} | {served} | {r['total_rss_mb']:.1f} | "
                   f"{r['other_load_pct_of_core']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__)
    parser.add_argument("--machines", default=",".join(map(str, PLANTS)),
                        help="plant sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)),
                        help="gateway.workers values, comma-separated (default: %(default)s)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds sampled per row")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    group = ProcessGroup(workdir)
    ok = False
    try:
        _broker, port = start_mosquitto(group)
        rows = measure(group, port, tuple(int(m) for m in args.machines.split(",")),
                       tuple(int(w) for w in args.workers.split(",")), args.window)
        print(table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        ok = True
    finally:
        group.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
