"""Figure 2: the real gateway polling N simulated Modbus machines, seen from the broker.

Everything is a separate process so each is measured alone: the simulators (`python -m
simulators.modbus_server --machines N`), Mosquitto, and `edge-gateway run` (as `python -m
edge.cli run`, the same code path the console script takes). The bench process only runs
the paho subscriber that counts what arrived.

How the window is cut: after every machine has published once and a settle time, CPU
(utime+stime from /proc) is read at t0 and t1, RSS is sampled every 0.5 s, and the records
counted are those whose `ts` (the gateway's read time) lies in [t0, t1), collected until a
grace period after t1. Counting by read time rather than by arrival keeps the batching delay
out of the rate and the latency in it.

A polling gateway cannot exceed machines x points / interval ("offered"), so
`achieved / offered` is the honest throughput figure; samples/s alone mostly measures the
YAML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.modbus.plan import minimum_requests, plan_reads
from adapters.modbus.settings import ModbusSettings

from .processes import (
    HOST,
    Child,
    ProcessGroup,
    cpu_seconds,
    descendants,
    memory_bytes,
    start_simulators,
    system_busy_seconds,
)
from .profiling import profile
from .subscriber import Arrival, TelemetrySubscriber

MB = 1024 * 1024

# Holding registers 0..47 of the simulator's register map (simulators/README.md).
STATE_POINTS = """\
      - {name: execution, register: holding, address: 0, data_type: uint16,
         map: {0: ready, 1: active, 2: interrupted, 3: feed_hold, 4: stopped, 5: program_stopped,
               6: program_completed, 7: wait, 8: optional_stop}}
      - {name: controller_mode, register: holding, address: 1, data_type: uint16,
         map: {0: automatic, 1: manual, 2: mdi, 3: edit, 4: semi_automatic}}
      - {name: availability, register: holding, address: 2, data_type: uint16,
         map: {0: unavailable, 1: available}}
      - {name: emergency_stop, register: holding, address: 3, data_type: uint16}
      - {name: alarm, register: holding, address: 4, data_type: uint16}
      - {name: program_number, register: holding, address: 5, data_type: uint16}
      - {name: part_count, register: holding, address: 10, data_type: uint32}
      - {name: bad_part_count, register: holding, address: 12, data_type: uint32}
      - {name: spindle_speed, register: holding, address: 20, data_type: float32, unit: 1/min}
      - {name: spindle_load, register: holding, address: 22, data_type: float32, unit: "%"}
      - {name: feed_rate, register: holding, address: 24, data_type: float32, unit: mm/min}
      - {name: spindle_temperature, register: holding, address: 26, data_type: float32,
         unit: Cel}
      - {name: coolant_temperature, register: holding, address: 28, data_type: float32,
         unit: Cel}
      - {name: last_cycle_time, register: holding, address: 30, data_type: float32, unit: s}
      - {name: program, register: holding, address: 40, data_type: string, length: 8}
"""
STATE_POINT_COUNT = 15
PROCESS_VALUES_AT = 200  # 100 uint16 process values at holding 200..299


@dataclass(frozen=True)
class LoadSpec:
    machines: int
    points: int = 40
    interval: float = 1.0
    window: float = 25.0
    settle: float = 3.0
    grace: float = 3.0
    max_delay: float | None = None  # gateway.batch.max_delay; None: the gateway's default
    polls_per_envelope: int = 1  # gateway.batch.polls_per_envelope
    canonicalizer: str = "gateway"  # "rfc8785": envelopes canonicalized as before issue 17
    source: Path | None = None  # run the gateway of this source tree (an exported revision)
    run_id: str = ""  # tells repeated runs of one spec apart (each gets fresh state)
    writes: str = "gateway"  # "inline": SQLite writes on the event loop, as before issue 17
    loop_lag: bool = False  # probe the gateway's event-loop lag (bench/writes_gateway.py)
    round: int = 0  # the bench runs one spec several times: each its own state dir
    workers: int = 1  # gateway.workers: CPU is then the whole process tree's, RSS per worker
    poll_slots: int | str | None = None  # gateway.poll_slots; None: not written (the default;
    # a `before` tree may not know the key)

    @property
    def offered(self) -> float:
        """Samples per second a perfect poller would deliver."""
        return self.machines * self.points / self.interval

    @property
    def tag(self) -> str:
        """Names this run's state dir and plant file (runs of one size must not share them)."""
        tag = f"{self.machines}"
        if self.interval != 1.0:
            tag += f"-i{self.interval:g}"
        if self.max_delay is not None:
            tag += f"-d{self.max_delay:g}"
        if self.polls_per_envelope != 1:
            tag += f"-p{self.polls_per_envelope}"
        if self.canonicalizer != "gateway":
            tag += f"-{self.canonicalizer}"
        if self.source is not None:
            tag += f"-{self.source.name}"
        if self.run_id:
            tag += f"-{self.run_id}"
        if self.writes != "gateway":
            tag += f"-{self.writes}"
        if self.loop_lag:
            tag += "-lag"
        if self.round:
            tag += f"-r{self.round}"
        if self.workers != 1:
            tag += f"-w{self.workers}"
        if self.poll_slots is not None:
            tag += f"-s{self.poll_slots}"
        return tag


def points_yaml(points: int) -> str:
    extra = points - STATE_POINT_COUNT
    if not 0 <= extra <= 100:
        raise ValueError(f"points must be {STATE_POINT_COUNT}..{STATE_POINT_COUNT + 100}")
    lines = [
        f"      - {{name: pv_{i:03d}, register: holding, address: {PROCESS_VALUES_AT + i}, "
        "data_type: uint16}\n"
        for i in range(extra)
    ]
    return STATE_POINTS + "".join(lines)


def plant_yaml(spec: LoadSpec, sim_base_port: int, state_dir: Path) -> str:
    """One gateway, N Modbus machines on the simulator's ports, no destinations (the bench
    passes `--broker`)."""
    batch = "" if spec.max_delay is None else (
        f", batch: {{max_delay: {spec.max_delay}, polls_per_envelope: {spec.polls_per_envelope}}}")
    if spec.poll_slots is not None:
        batch += f", poll_slots: {spec.poll_slots}"
    # web port 0: the default page is served (as in production) without needing port 8080;
    # one process unless the spec says otherwise: `auto` would spread it over the cores
    head = (
        f"gateway: {{id: gw-bench, site: bench, web: {{port: 0}}, workers: {spec.workers}, "
        f"state_dir: {state_dir}{batch}}}\n"
        "machines:\n"
    )
    body = []
    pts = points_yaml(spec.points)
    for i in range(spec.machines):
        body.append(
            f"  - id: m{i + 1:03d}\n"
            f"    area: hall-{i // 50 + 1}\n"
            f"    line: line-{i // 10 + 1}\n"
            "    adapter: modbus\n"
            f"    poll_interval: {spec.interval}\n"
            f"    connection: {{host: {HOST}, port: {sim_base_port + i}, unit: 1, timeout: 2.0}}\n"
            "    points:\n" + pts
        )
    return head + "".join(body)


def _settings(spec: LoadSpec) -> ModbusSettings:
    import yaml  # noqa: PLC0415 - only needed here; the bench's import time stays small

    # one machine's YAML: every machine has the same points, and parsing 500 of them in
    # pure Python took the bench half a minute per row
    one = dataclasses.replace(spec, machines=1)
    doc = yaml.safe_load(plant_yaml(one, 5020, Path("/tmp")))["machines"][0]
    return ModbusSettings.model_validate(
        {"connection": doc["connection"], "points": doc["points"]})


def requests_per_cycle(spec: LoadSpec) -> int:
    settings = _settings(spec)
    return len(plan_reads(settings.points, settings.connection))


def minimum_requests_per_cycle(spec: LoadSpec) -> int:
    """The bound with any gap readable: what `requests_per_cycle` is compared with."""
    settings = _settings(spec)
    return minimum_requests(settings.points, settings.connection)


def weighted_percentiles(values: list[tuple[float, int]], qs: list[float]) -> list[float]:
    """Percentiles of values given as (value, weight) pairs (weight = records)."""
    if not values:
        return [float("nan")] * len(qs)
    ordered = sorted(values)
    total = sum(w for _, w in ordered)
    out = []
    for q in qs:
        target, acc = q * total, 0
        for v, w in ordered:
            acc += w
            if acc >= target:
                out.append(v)
                break
        else:
            out.append(ordered[-1][0])
    return out


def busiest_slice_pct(arrivals: list[Arrival], interval: float, slices: int = 10) -> float:
    """Share of reads falling in the busiest tenth of the poll interval (by phase).

    About 10 % means the machines' polls are spread over the interval; near 100 % means they
    all poll in the same instant, so the event loop takes every request (and every seal) of
    the plant in one burst per interval.
    """
    bins = [0] * slices
    for a in arrivals:
        bins[int((a.read_at % interval) / interval * slices) % slices] += a.records
    total = sum(bins)
    return 100 * max(bins) / total if total else float("nan")


def _log_events(log: Path) -> dict[str, int]:
    """warning/error events the gateway logged (JSON lines), by event name."""
    events: Counter[str] = Counter()
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            if line.strip():
                events["(non-JSON line)"] += 1
            continue
        if isinstance(rec, dict) and rec.get("level") in ("warning", "error", "critical"):
            events[f"{rec['level']}: {rec.get('event', '?')}"] += 1
    return dict(events)


def loop_lags(path: Path, t0: float, t1: float) -> list[float]:
    """The gateway's event-loop lateness samples (seconds) taken in [t0, t1), from the
    probe of bench/writes_gateway.py."""
    out: list[float] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        at, _, lag = line.partition(" ")
        with contextlib.suppress(ValueError):
            if t0 <= float(at) < t1:
                out.append(float(lag))
    return out


def _stop_timed(group: ProcessGroup, child: Child) -> tuple[float, int | None]:
    t = time.monotonic()
    code = group.stop(child, timeout=15.0)
    return time.monotonic() - t, code


def run_load(
    group: ProcessGroup,
    broker_port: int,
    spec: LoadSpec,
    *,
    simulators: tuple[Child, int] | None = None,
    profile_seconds: float = 0.0,
) -> tuple[dict[str, Any], tuple[Child, int], bytes]:
    """One load point. Returns the figures, the simulator (still running: the caller reuses
    it for the raw ceilings or stops it) and one telemetry payload as it went on the wire."""
    sim, base = simulators or start_simulators(group, spec.machines)
    state_dir = group.workdir / f"state-{spec.tag}"
    state_dir.mkdir(exist_ok=True)
    plant = group.workdir / f"plant-{spec.tag}.yaml"
    plant.write_text(plant_yaml(spec, base, state_dir))

    sub = TelemetrySubscriber(HOST, broker_port)
    try:
        spawned = time.monotonic()
        cli = "bench.rfc8785_gateway" if spec.canonicalizer == "rfc8785" else "edge.cli"
        lag_file = group.workdir / f"lag-{spec.tag}.txt"
        lag_file.unlink(missing_ok=True)
        env: dict[str, str] = {}
        if spec.writes != "gateway" or spec.loop_lag:
            cli = "bench.writes_gateway"
            env["EDGE_BENCH_WRITES"] = spec.writes
            if spec.loop_lag:
                env["EDGE_BENCH_LAG_FILE"] = str(lag_file)
        gw = group.spawn(
            f"gateway-{spec.tag}",
            [sys.executable, "-m", cli, "--log-level", "warning", "--log-format", "json",
             "run", "-c", str(plant), "--broker", f"mqtt://{HOST}:{broker_port}",
             "--no-console"],
            # another tree's code: found first from its directory (`-m`) and PYTHONPATH
            **({"cwd": spec.source, "env": {"PYTHONPATH": str(spec.source), **env}}
               if spec.source is not None else {"env": env}),
        )
        deadline = spawned + 60 + spec.machines * 0.2
        while sub.topics() < spec.machines:
            if not gw.alive():
                raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n{gw.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {sub.topics()} of {spec.machines} machines published within "
                    f"{deadline - spawned:.0f} s:\n{gw.log_tail()}")
            time.sleep(0.05)
        startup = time.monotonic() - spawned
        startup_cpu = _tree_cpu([gw.pid, *descendants(gw.pid)])  # what it took, not waited
        time.sleep(spec.settle)

        rss: list[int] = []
        worker_rss: list[int] = []
        tree = [gw.pid, *descendants(gw.pid)]  # the parent and its workers, if any
        workers = tree[1:] if spec.workers > 1 else tree
        by_pid: dict[int, list[int]] = {p: [] for p in tree}  # VmRSS samples per process
        cpu0, sim0, broker0 = (_tree_cpu(tree), cpu_seconds(sim.pid),
                               cpu_seconds(_broker_pid(group)))
        busy0, own0 = system_busy_seconds(), cpu_seconds(os.getpid())
        t0 = time.time()
        while time.time() < t0 + spec.window:
            now = {p: memory_bytes(p)[0] for p in tree}
            for p, v in now.items():
                by_pid[p].append(v)
            rss.append(sum(now.values()))
            worker_rss.append(max(now[p] for p in workers))
            time.sleep(min(0.5, max(0.0, t0 + spec.window - time.time())))
        t1 = time.time()
        cpu1, sim1, broker1 = (_tree_cpu(tree), cpu_seconds(sim.pid),
                               cpu_seconds(_broker_pid(group)))
        busy1, own1 = system_busy_seconds(), cpu_seconds(os.getpid())
        rss.append(sum(memory_bytes(p)[0] for p in tree))
        prof: dict[str, Any] = {}
        if profile_seconds > 0:
            prof = profile(gw.pid, profile_seconds,
                           group.workdir / f"py-spy-{spec.machines}.txt")
        time.sleep(spec.grace)
        peak = memory_bytes(gw.pid)[1]
        peaks = {p: memory_bytes(p)[1] for p in tree}  # VmHWM: each process' peak so far
        if not gw.alive():
            raise RuntimeError(f"gateway died during the window:\n{gw.log_tail()}")
        tally = sub.take()
    finally:
        sub.close()
    stop_s, exit_code = _stop_timed(group, gw)

    # Rates count reads in [t0, t0 + window): a whole number of poll intervals, so every
    # machine contributes the same number of polls whatever its phase. CPU uses t1 - t0.
    elapsed = t1 - t0
    end = t0 + spec.window
    inside: list[Arrival] = [a for a in tally.arrivals if t0 <= a.read_at < end]
    samples = sum(a.records for a in inside)
    envelopes = [e for e in tally.envelopes if t0 <= e.read_at < end]
    lat = [(a.received_at - a.read_at, a.records) for a in inside]
    p50, p99, pmax = weighted_percentiles(lat, [0.50, 0.99, 1.0])
    cdf = [v * 1e3 for v in weighted_percentiles(lat, [i / 100 for i in range(101)])]
    seal50, seal99 = weighted_percentiles(
        [(a.sealed_at - a.read_at, a.records) for a in inside], [0.50, 0.99])
    wire50, wire99 = weighted_percentiles(
        [(a.received_at - a.sealed_at, a.records) for a in inside], [0.50, 0.99])
    spread50, spread99 = weighted_percentiles(
        [(e.read_spread, 1) for e in envelopes], [0.50, 0.99])
    cpu = cpu1 - cpu0
    rate = samples / spec.window
    # What a gateway that fell behind still delivers: records *received* in [t0, t1),
    # whatever their read time (a backlog older than window + grace leaves `samples` 0)
    arrived = [a for a in tally.arrivals if t0 <= a.received_at < t1]
    delivered = sum(a.records for a in arrived)
    behind50 = weighted_percentiles(
        [(a.received_at - a.read_at, a.records) for a in arrived], [0.50])[0]
    per_cycle = requests_per_cycle(spec)
    result: dict[str, Any] = {
        "machines": spec.machines,
        "workers": spec.workers,
        "worker_processes": len(workers) if spec.workers > 1 else 1,
        "worker_rss_mb_steady": statistics.median(worker_rss) / MB,
        "points_per_machine": spec.points,
        "poll_interval_s": spec.interval,
        "requests_per_cycle": per_cycle,
        "minimum_requests_per_cycle": minimum_requests_per_cycle(spec),
        "window_s": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "samples": samples,
        "samples_per_s": rate,
        "offered_per_s": spec.offered,
        "achieved_over_offered": rate / spec.offered,
        "modbus_requests_per_s": rate / spec.points * per_cycle,
        "envelopes_per_s": len(envelopes) / spec.window,
        "records_per_envelope": samples / len(envelopes) if envelopes else 0.0,
        "envelope_bytes_mean": statistics.fmean(e.size for e in envelopes) if envelopes else 0,
        "gateway_cpu_s": cpu,
        "gateway_cpu_pct_of_core": 100 * cpu / elapsed,
        "gateway_cpu_s_per_1000_samples": 1000 * cpu / samples if samples else float("nan"),
        "delivered_per_s": delivered / elapsed,
        "gateway_cpu_s_per_1000_delivered": 1000 * cpu / delivered if delivered else float("nan"),
        "received_in_window_age_ms_p50": behind50 * 1e3,
        "gateway_rss_mb_steady": statistics.median(rss) / MB,
        "gateway_rss_mb_window_max": max(rss) / MB,
        "gateway_rss_mb_peak": peak / MB,
        # per process: the parent (pid of `run`) and each worker, median VmRSS in the window
        # and VmHWM after it; at N = 1 the parent is the one process serving the machines
        "rss_mb_by_process": [
            {"role": "parent" if p == gw.pid else "worker",
             "rss_mb_steady": statistics.median(by_pid[p]) / MB, "hwm_mb": peaks[p] / MB}
            for p in tree],
        "latency_ms_p50": p50 * 1e3,
        "latency_ms_p99": p99 * 1e3,
        "latency_ms_max": pmax * 1e3,
        "latency_ms_cdf": cdf,
        "read_to_sealed_ms_p50": seal50 * 1e3,
        "read_to_sealed_ms_p99": seal99 * 1e3,
        "sealed_to_received_ms_p50": wire50 * 1e3,
        "sealed_to_received_ms_p99": wire99 * 1e3,
        "poll_read_spread_ms_p50": spread50 * 1e3,
        "poll_read_spread_ms_p99": spread99 * 1e3,
        "reads_in_busiest_100ms_pct": busiest_slice_pct(inside, spec.interval),
        "simulators_cpu_pct_of_core": 100 * (sim1 - sim0) / elapsed,
        "broker_cpu_pct_of_core": 100 * (broker1 - broker0) / elapsed,
        "bench_cpu_pct_of_core": 100 * (own1 - own0) / elapsed,
        # whatever else ran on the machine meanwhile: high values mean contended figures
        "other_load_pct_of_core": max(0.0, 100 * ((busy1 - busy0) - (cpu1 - cpu0)
                                                  - (sim1 - sim0) - (broker1 - broker0)
                                                  - (own1 - own0)) / elapsed),
        "seq_gaps": tally.seq_gaps,
        "duplicates": tally.duplicates,
        "undecodable": tally.undecodable,
        "state_and_other_envelopes": tally.other_envelopes,
        # by arrival in the window (a part counter's change reaches the broker within ms)
        "state_envelopes_per_s": sum(t0 <= t < t1 for t in tally.state_received) / elapsed,
        "gateway_stop_s": round(stop_s, 2),
        "gateway_exit_code": exit_code,
        "gateway_log_warnings": _log_events(gw.log),
    }
    if prof:
        result["profile"] = prof
    if spec.loop_lag:
        result["loop_lag_s"] = loop_lags(lag_file, t0, t1)
    return result, (sim, base), tally.sample_payload


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds of a process tree; a process gone meanwhile (a worker restarted) counts 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _broker_pid(group: ProcessGroup) -> int:
    return next(c.pid for c in group.children if c.name == "mosquitto")
