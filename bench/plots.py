"""PNG plots of one run (matplotlib, Agg backend): throughput and memory against plant size,
and the latency distribution (CDF) of every scenario.

matplotlib is a bench-only dependency (the `bench` extra); without it the plots are skipped
and the report says so, so the CI smoke run does not need it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def render(results: dict[str, Any], directory: Path, relative_to: Path) -> dict[str, Any]:
    """Write the PNGs into `directory`; returns {"files": {name: path relative to the report}}
    or {"skipped": reason}."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return {"skipped": "matplotlib is not installed (pip install 'edge-gateway[bench]')"}
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def rel(path: Path) -> str:
        return os.path.relpath(path, relative_to)

    runs = sorted(results.get("gateway_runs", []), key=lambda g: g["machines"])
    peer = results.get("peer") or {}
    if runs:
        n = [g["machines"] for g in runs]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        ax1.plot(n, [g["offered_per_s"] for g in runs], "k--",
                 label="offered (machines x 40 / 1 s)")
        ax1.plot(n, [g["samples_per_s"] for g in runs], "o-", label="gateway, at the broker")
        if peer.get("ran"):
            ax1.plot([peer["machines"]], [peer["samples_per_s"]], "s", color="tab:red",
                     label="ThingsBoard gateway")
        sat = results.get("saturation") or {}
        if "samples_per_s" in sat:
            ax1.plot([sat["machines"]], [sat["samples_per_s"]], "^", color="tab:green",
                     label=f"gateway saturated ({sat['poll_interval_s']} s poll)")
        ax1.set_xlabel("Modbus machines (40 points each)")
        ax1.set_ylabel("samples / s")
        ax1.set_title("Throughput against plant size")
        ax1.grid(alpha=0.3)
        ax1.legend(fontsize=8)
        ax2.plot(n, [g["gateway_rss_mb_steady"] for g in runs], "o-", label="gateway RSS steady")
        ax2.plot(n, [g["gateway_rss_mb_peak"] for g in runs], "x:", label="gateway RSS peak")
        if peer.get("ran"):
            ax2.plot([peer["machines"]], [peer["rss_mb_steady"]], "s", color="tab:red",
                     label="ThingsBoard gateway RSS")
        ax2.axhline(150, color="tab:red", ls="--", lw=1, label="target 150 MB @ 200 machines")
        ax2.set_xlabel("Modbus machines (40 points each)")
        ax2.set_ylabel("MB")
        ax2.set_ylim(bottom=0)
        ax2.set_title("Memory against plant size")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "throughput_memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files["throughput_memory"] = rel(path)

    curves: list[tuple[str, list[float]]] = []
    for g in runs:
        if g.get("latency_ms_cdf"):
            curves.append((f"Modbus {g['machines']} x 40 ({g['samples_per_s']:,.0f}/s)",
                           g["latency_ms_cdf"]))
    for name, sc in (results.get("scenarios") or {}).items():
        if sc.get("latency_ms_cdf"):
            curves.append((f"{name} ({sc['samples_per_s']:,.0f}/s)", sc["latency_ms_cdf"]))
    op = results.get("opcua") or {}
    if op.get("gateway_latency_ms_cdf"):
        curves.append(("OPC UA", op["gateway_latency_ms_cdf"]))
    if peer.get("ran") and peer.get("latency_ms_cdf"):
        curves.append((f"ThingsBoard gateway, Modbus {peer['machines']} x 40",
                       peer["latency_ms_cdf"]))
    curves = [(label, c) for label, c in curves if not any(math.isnan(v) for v in c)]
    if curves:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        pct = list(range(101))
        for label, c in curves:
            ax.plot([max(v, 0.1) for v in c], pct, label=label)
        ax.axvline(50, color="tab:red", ls="--", lw=1, label="target p99 50 ms")
        ax.axhline(99, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (source/read timestamp -> bench subscriber), log scale")
        ax.set_ylabel("% of samples at or below")
        ax.set_title("End-to-end latency distribution (CDF)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = directory / "latency_cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files["latency_cdf"] = rel(path)
    return {"files": files}
