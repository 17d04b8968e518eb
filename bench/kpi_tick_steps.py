"""Issue 17, section 2n: the KPI tick's longest event-loop step at 500 machines, before/after.

`python -m bench.kpi_tick_steps [seconds]`: one simulator process (500 machines x 40 points,
real time: a part every 30-120 s) and one Mosquitto shared by both sides; each side's gateway
(before = `git merge-base HEAD main` or `BENCH_BEFORE`, exported with `git archive`; after =
this tree) runs with the loop step timer (bench/loop_timer/sitecustomize.py, steps over
2 ms kept) for `seconds` (default 70) after every machine's first envelope. Prints the `kpi`
task's steps (the tick, every <= 5 s, and the `oee` records every 60 s) and the host's load
outside the gateway, so a busy host shows beside the figure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from .gateway_load import LoadSpec, plant_yaml
from .hotpath import before_revision, export
from .processes import (
    HOST,
    ProcessGroup,
    cpu_seconds,
    descendants,
    start_mosquitto,
    start_simulators,
    system_busy_seconds,
)
from .subscriber import TelemetrySubscriber

MACHINES = 500
TIMER = Path(__file__).resolve().parent / "loop_timer"


def side(group: ProcessGroup, broker: int, sim_base: int, name: str, *, source: Path | None,
         seconds: float) -> dict[str, Any]:
    spec = LoadSpec(MACHINES, run_id=name, source=source)
    state = group.workdir / f"state-{name}"
    state.mkdir()
    plant = group.workdir / f"plant-{name}.yaml"
    plant.write_text(plant_yaml(spec, sim_base, state))
    steps = group.workdir / f"steps-{name}.json"
    path = str(TIMER) if source is None else f"{TIMER}:{source}"
    env = {"PYTHONPATH": path, "EDGE_LOOP_TIMER_FILE": str(steps),
           "EDGE_LOOP_TIMER_SLOW_MS": "2"}
    sub = TelemetrySubscriber(HOST, broker)
    gw = group.spawn(f"gateway-{name}",
                     [sys.executable, "-m", "edge.cli", "--log-level", "warning", "run", "-c",
                      str(plant), "--broker", f"mqtt://{HOST}:{broker}", "--no-console"],
                     env=env, cwd=source or Path.cwd())
    try:
        deadline = time.monotonic() + 60 + MACHINES * 0.2
        while sub.topics() < MACHINES:
            if not gw.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not start:\n{gw.log_tail()}")
            time.sleep(0.2)
        t0, busy0 = time.time(), system_busy_seconds()
        cpu0 = sum(cpu_seconds(p) for p in [gw.pid, *descendants(gw.pid)])
        time.sleep(seconds)
        t1, busy1 = time.time(), system_busy_seconds()
        cpu1 = sum(cpu_seconds(p) for p in [gw.pid, *descendants(gw.pid)])
        time.sleep(2.5)  # the timer rewrites its file every 2 s
    finally:
        group.stop(gw)
        sub.close()
    data = json.loads(steps.read_text())
    kpi = [ms for at, ms, task in data["slow"] if task == "kpi" and t0 <= at <= t1]
    return {"side": name, "kpi_steps_over_2ms": len(kpi),
            "kpi_longest_ms": max(kpi, default=0.0),
            "kpi_over_10ms": sum(ms > 10 for ms in kpi),
            "kpi_longest_ms_whole_run": data["longest_ms"].get("kpi", 0.0),
            "gateway_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0)),
            "other_load_pct_of_core": round(100 * ((busy1 - busy0) - (cpu1 - cpu0)) / (t1 - t0))}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 70.0
    with TemporaryDirectory(prefix="kpi-tick-") as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            before = export(before_revision(), Path(tmp))
            _, broker = start_mosquitto(group)
            _, base = start_simulators(group, MACHINES, 1.0)
            order = [("before", before), ("after", None)]
            if os.environ.get("BENCH_KPI_AFTER_FIRST"):
                order.reverse()
            for name, source in order:
                row = side(group, broker, base, name, source=source, seconds=seconds)
                print(json.dumps(row), flush=True)
        finally:
            group.close()


if __name__ == "__main__":
    main()
