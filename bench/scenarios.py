"""Scenarios (c) MTConnect agent stream and (d) the mixed demo plant: the real gateway against
simulators of other protocols, measured like the Modbus runs (bench/gateway_load.py).

Both run `edge-gateway simulate PLANT` in a process of its own (the same simulators `make
demo` serves) and `edge-gateway run -c PLANT --broker ...` against the bench's Mosquitto.
The window is cut by *arrival* at the bench subscriber rather than by read time, because
records here carry the device's own timestamp where the protocol has one (MTConnect
observation time, OPC UA SourceTimestamp, SHDR line time), which is the "simulator's change"
the latency is measured from; on the same machine that clock is the bench's clock.

Latency: for MTConnect the agent simulator stamps an observation with the 100 ms grid tick at
which its model changed, so `received - ts` is change -> broker -> subscriber, polling wait
included. Modbus, Haas and FOCAS carry no device time, so for them it is read -> subscriber.
Records whose timestamp is more than 60 s away from the receipt (a simulator replaying a
recording on its own clock) are left out of the latency and counted in `latency_excluded`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .gateway_load import MB, _log_events, weighted_percentiles
from .processes import (
    HOST,
    Child,
    ProcessGroup,
    cpu_seconds,
    free_port,
    memory_bytes,
    system_busy_seconds,
    wait_port,
)
from .subscriber import TelemetrySubscriber

ROOT = Path(__file__).resolve().parents[1]
CDF_POINTS = [i / 100 for i in range(101)]


def latency_cdf(pairs: list[tuple[float, int]]) -> list[float]:
    """Latency (ms) at every percentile 0..100, for the CDF plot."""
    return [v * 1e3 for v in weighted_percentiles(pairs, CDF_POINTS)]


# ---- plant YAMLs --------------------------------------------------------------------------


def mtconnect_plant(machines: int, agent_port: int, state_dir: Path,
                    poll_interval: float = 1.0, time_scale: float = 20.0) -> dict[str, Any]:
    """N machines as devices of one simulated agent (one HTTP port), polled every 1 s."""
    return {
        "gateway": {"id": "gw-bench", "site": "bench", "state_dir": str(state_dir),
                    "workers": 1},
        "machines": [
            {"id": f"vmc-{i + 1:03d}", "area": "hall-1", "line": f"line-{i // 10 + 1}",
             "adapter": "mtconnect", "simulate": True, "poll_interval": poll_interval,
             "simulator": {"seed": 100 + i, "time_scale": time_scale},
             "connection": {"url": f"http://{HOST}:{agent_port}", "device": f"vmc-{i + 1:03d}"}}
            for i in range(machines)
        ],
    }


def mixed_plant(state_dir: Path) -> tuple[dict[str, Any], list[int]]:
    """config/demo-plant.yaml with every port moved to a free one and the state dir moved
    into the bench's work dir. Returns the plant and the ports the simulators will listen on.
    """
    plant = yaml.safe_load((ROOT / "config" / "demo-plant.yaml").read_text())
    plant["gateway"]["state_dir"] = str(state_dir)
    ports: list[int] = []
    moved: dict[tuple[str, int], int] = {}  # same old port of the same adapter -> same new

    def new_port(adapter: str, old: int) -> int:
        key = (adapter, old)
        if key not in moved:
            moved[key] = free_port()
            ports.append(moved[key])
        return moved[key]

    for m in plant["machines"]:
        conn = m["connection"] = dict(m["connection"])
        if "port" in conn:
            conn["port"] = new_port(m["adapter"], conn["port"])
        elif "endpoint" in conn:
            old = int(conn["endpoint"].rsplit(":", 1)[1].strip("/"))
            conn["endpoint"] = f"opc.tcp://{HOST}:{new_port('opcua', old)}/"
        elif "url" in conn:
            old = int(conn["url"].rsplit(":", 1)[1].strip("/"))
            conn["url"] = f"http://{HOST}:{new_port('mtconnect', old)}"
    return plant, ports


# ---- one measured run -----------------------------------------------------------------------


def _broker_pid(group: ProcessGroup) -> int:
    return next(c.pid for c in group.children if c.name == "mosquitto")


def run_plant(group: ProcessGroup, broker_port: int, name: str, plant: dict[str, Any],
              sim_ports: list[int], *, window: float, settle: float = 3.0,
              grace: float = 3.0, expect_topics: int | None = None) -> dict[str, Any]:
    """Serve the plant's simulated machines, run the gateway on it, measure one window."""
    path = group.workdir / f"plant-{name}.yaml"
    path.write_text(yaml.safe_dump(plant, sort_keys=False))
    sim = group.spawn(f"simulators-{name}",
                      [sys.executable, "-m", "edge.cli", "--log-level", "warning",
                       "--log-format", "json", "simulate", str(path)])
    gw: Child | None = None
    try:
        for p in sim_ports:
            wait_port(p, 60.0, sim.proc)
        sub = TelemetrySubscriber(HOST, broker_port)
        try:
            spawned = time.monotonic()
            gw = group.spawn(
                f"gateway-{name}",
                [sys.executable, "-m", "edge.cli", "--log-level", "warning", "--log-format",
                 "json", "run", "-c", str(path), "--broker", f"mqtt://{HOST}:{broker_port}",
                 "--no-console"])
            want = expect_topics if expect_topics is not None else len(plant["machines"])
            deadline = spawned + 60 + len(plant["machines"]) * 0.2
            while sub.topics() < want:
                if not gw.alive():
                    raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n"
                                       f"{gw.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {sub.topics()} of {want} machines published "
                                       f"telemetry within {deadline - spawned:.0f} s:\n"
                                       f"{gw.log_tail()}")
                time.sleep(0.05)
            startup = time.monotonic() - spawned
            time.sleep(settle)
            sub.take()  # forget the start-up burst (the /current snapshot and the catch-up)
            rss: list[int] = []
            broker = _broker_pid(group)
            cpu0, sim0, b0 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), cpu_seconds(broker)
            busy0 = system_busy_seconds()
            t0 = time.time()
            while time.time() < t0 + window:
                rss.append(memory_bytes(gw.pid)[0])
                time.sleep(min(0.5, max(0.0, t0 + window - time.time())))
            t1 = time.time()
            cpu1, sim1, b1 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), cpu_seconds(broker)
            busy1 = system_busy_seconds()
            tally = sub.take()
            time.sleep(0.1)
            peak = memory_bytes(gw.pid)[1]
            if not gw.alive():
                raise RuntimeError(f"gateway died during the window:\n{gw.log_tail()}")
        finally:
            sub.close()
        t = time.monotonic()
        code = group.stop(gw, timeout=15.0)
        stop_s = time.monotonic() - t
    finally:
        if gw is not None and gw.alive():
            group.stop(gw)
        group.stop(sim)
    del grace
    elapsed = t1 - t0
    inside = [a for a in tally.arrivals if t0 <= a.received_at < t1]
    samples = sum(a.records for a in inside)
    lat = [(a.received_at - a.read_at, a.records) for a in inside
           if abs(a.received_at - a.read_at) < 60]
    excluded = samples - sum(n for _, n in lat)
    p50, p99, pmax = weighted_percentiles(lat, [0.5, 0.99, 1.0])
    cpu = cpu1 - cpu0
    envs = [e for e in tally.envelopes]
    return {
        "scenario": name,
        "machines": len(plant["machines"]),
        "adapters": sorted({m["adapter"] for m in plant["machines"]}),
        "window_s": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "samples": samples,
        "samples_per_s": samples / elapsed,
        "envelopes_per_s": len(envs) / elapsed,
        "records_per_envelope": (sum(e.records for e in envs) / len(envs)) if envs else 0.0,
        "gateway_cpu_s": cpu,
        "gateway_cpu_pct_of_core": 100 * cpu / elapsed,
        "gateway_cpu_s_per_1000_samples": 1000 * cpu / samples if samples else float("nan"),
        "gateway_rss_mb_steady": statistics.median(rss) / MB,
        "gateway_rss_mb_peak": peak / MB,
        "latency_ms_p50": p50 * 1e3,
        "latency_ms_p99": p99 * 1e3,
        "latency_ms_max": pmax * 1e3,
        "latency_ms_cdf": latency_cdf(lat),
        "latency_excluded": excluded,
        "simulators_cpu_pct_of_core": 100 * (sim1 - sim0) / elapsed,
        "broker_cpu_pct_of_core": 100 * (b1 - b0) / elapsed,
        "other_load_pct_of_core": max(0.0, 100 * ((busy1 - busy0) - cpu - (sim1 - sim0)
                                                  - (b1 - b0)) / elapsed),
        "seq_gaps": tally.seq_gaps,
        "duplicates": tally.duplicates,
        "undecodable": tally.undecodable,
        "gateway_stop_s": round(stop_s, 2),
        "gateway_exit_code": code,
        "gateway_log_warnings": _log_events(gw.log) if gw else {},
    }


def mtconnect(group: ProcessGroup, broker_port: int, machines: int, window: float,
              settle: float = 3.0) -> dict[str, Any]:
    state = group.workdir / f"state-mtconnect-{machines}"
    state.mkdir(exist_ok=True)
    port = free_port()
    return run_plant(group, broker_port, f"mtconnect-{machines}",
                     mtconnect_plant(machines, port, state), [port], window=window,
                     settle=settle)


def mixed(group: ProcessGroup, broker_port: int, window: float,
          settle: float = 3.0) -> dict[str, Any]:
    state = group.workdir / "state-mixed"
    state.mkdir(exist_ok=True)
    plant, ports = mixed_plant(state)
    return run_plant(group, broker_port, "mixed", plant, ports, window=window, settle=settle)
