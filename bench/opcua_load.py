"""OPC UA under load: the gateway's subscriptions against a bare asyncua client, same run.

`python -m bench.opcua_load [--quick]` prints a small table; `run()` returns the figures
(numbers only) for `bench/__main__.py`.

What runs, and why each piece sits where it does:

- **Load server** (own process, `python -m bench.opcua_load --serve ...`): a bare asyncua
  server with N Double variables, every one written at `hz` (2,000 x 10 Hz = 20,000
  changes/s offered; `--quick` 200 x 10 Hz). A process of its own so neither client steals
  its event loop, and its CPU is visible: a saturated server caps both clients alike. It
  counts the writes it really made (a JSON stats file), so "offered" is measured, not
  assumed.
- **Raw ceiling** (in the bench process, nothing else running there meanwhile): a bare
  asyncua client, subscriptions of at most 1,000 items (the adapter's default split),
  publishing interval 100 ms, queue size 30 per item (3 s of changes: a saturated server
  publishes late, and a queue of 1 would drop every change but the last), counting
  data-change callbacks. Measured twice, before and after the gateway, and the better of
  the two is the ceiling: on a shared machine one window can be starved by other work, and
  a ceiling is the best the bare client achieved.
- **Gateway** (own process): `python -m edge.cli run` on a generated plant YAML with one
  `adapter: opcua` machine and the same N points (same publishing interval, queue size and
  split), publishing to a Mosquitto started like `bench/processes.py` does; a paho
  subscriber counts telemetry records whose `ts` falls in the window. That is the whole
  path: adapter, runner, twin, egress, signing, outbox, MQTT.
- **Restart**: the simulator (`simulators/opcua_server.py`, machine_tool profile) in the
  bench process, the real `DeviceRunner` with its default backoff (1 s initial, x2, full
  jitter). Server stopped, the runner sees the loss, the server is down for `down_s`, then
  restarted on the same port; the figure is the time from `start()` returning to the first
  good `execution` sample of the new session (median of N).

CPU is utime+stime from /proc: the gateway process for the gateway, the bench process (only
the asyncua client running) for the raw client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NS_URI = "urn:edge-gateway:bench-load"
MB = 1024 * 1024
ITEMS_PER_SUBSCRIPTION = 1000
PUBLISHING_INTERVAL = 0.1
QUEUE_SIZE = 30


@dataclass(frozen=True)
class Spec:
    items: int
    hz: float
    window: float
    settle: float
    restarts: int
    down_s: float = 1.0

    @property
    def offered(self) -> float:
        return self.items * self.hz


FULL = Spec(items=2000, hz=10.0, window=20.0, settle=4.0, restarts=10)
QUICK = Spec(items=200, hz=10.0, window=5.0, settle=2.0, restarts=3)


def _name(i: int) -> str:
    return f"v{i:04d}"


def _nid(name: str, ns: int) -> Any:
    """A string NodeId (asyncua types the fields with its own Int16/String classes)."""
    from asyncua import ua  # noqa: PLC0415

    return ua.NodeId(name, ns)  # type: ignore[arg-type]


# ---- the load server (runs in its own process) -------------------------------------------


async def serve(port: int, items: int, hz: float, stats: Path) -> None:
    """N variables, each written every 1/hz s (drift-free ticks); write counts to `stats`."""
    from asyncua import ua  # noqa: PLC0415 - the bench's import time stays small
    from asyncua.server.server import Server  # noqa: PLC0415

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS_URI)
    folder = await server.nodes.objects.add_folder(_nid("Load", idx), "Load")
    nodes = [await folder.add_variable(_nid(_name(i), idx), _name(i), 0.0)
             for i in range(items)]
    ids = [n.nodeid for n in nodes]
    await server.start()
    loop = asyncio.get_running_loop()
    writes, tick, next_at, last_dump = 0, 0, loop.time(), 0.0
    try:
        while True:
            tick += 1
            stamp: Any = datetime.now(UTC)
            for i, nid in enumerate(ids):
                await server.write_attribute_value(nid, ua.DataValue(
                    ua.Variant(float(tick * 1000 + i), ua.VariantType.Double),
                    SourceTimestamp=stamp, ServerTimestamp=stamp))
            writes += len(ids)
            now = loop.time()
            if now - last_dump >= 0.5:
                last_dump = now
                tmp = stats.with_suffix(".tmp")
                tmp.write_text(json.dumps({"writes": writes, "at": time.time()}))
                tmp.replace(stats)
            next_at += 1.0 / hz
            next_at = max(next_at, now)  # overloaded: skip ticks rather than pile them up
            await asyncio.sleep(next_at - now)
    finally:
        await server.stop()


def _writes(stats: Path) -> tuple[float, float]:
    """(writes so far, when) as the load server last reported them."""
    d = json.loads(stats.read_text())
    return float(d["writes"]), float(d["at"])


# ---- raw ceiling ------------------------------------------------------------------------


async def raw_client(endpoint: str, items: int, spec: Spec, stats: Path,
                     server_pid: int) -> dict[str, float]:
    """A bare asyncua client: notifications/s and CPU per 1,000 over the window."""
    from asyncua import ua  # noqa: PLC0415
    from asyncua.client.client import Client  # noqa: PLC0415

    from .processes import cpu_seconds, system_busy_seconds  # noqa: PLC0415

    class Counter:
        """Counts callbacks; every 50th also gives a source-timestamp-to-callback latency."""

        n = 0
        lat: list[float] = []  # one instance, so a class attribute is fine

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            self.n += 1
            if self.n % 50 == 0:
                ts = data.monitored_item.Value.SourceTimestamp
                if ts is not None:
                    self.lat.append(time.time() - ts.timestamp())

    counter = Counter()
    client = Client(endpoint, timeout=10)
    await client.connect()
    try:
        idx = await client.get_namespace_index(NS_URI)
        for start in range(0, items, ITEMS_PER_SUBSCRIPTION):
            sub = await client.create_subscription(PUBLISHING_INTERVAL * 1000, counter)
            nodes = [client.get_node(_nid(_name(i), idx))
                     for i in range(start, min(items, start + ITEMS_PER_SUBSCRIPTION))]
            await sub.subscribe_data_change(nodes, queuesize=QUEUE_SIZE,
                                            sampling_interval=ua.Double(
                                                PUBLISHING_INTERVAL * 1000))
        await asyncio.sleep(spec.settle)
        counter.lat.clear()
        n0, cpu0, t0 = counter.n, cpu_seconds(os.getpid()), time.monotonic()
        srv0, busy0 = cpu_seconds(server_pid), system_busy_seconds()
        w0, at0 = _writes(stats)
        await asyncio.sleep(spec.window)
        n1, cpu1, t1 = counter.n, cpu_seconds(os.getpid()), time.monotonic()
        srv1, busy1 = cpu_seconds(server_pid), system_busy_seconds()
        w1, at1 = _writes(stats)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    n = n1 - n0
    writes = (w1 - w0) / (at1 - at0)
    return {"raw_notifications_per_s": n / (t1 - t0),
            "raw_over_server_writes": n / (t1 - t0) / writes if writes else float("nan"),
            "server_cpu_pct_of_core_raw_phase": 100 * (srv1 - srv0) / (t1 - t0),
            "other_load_pct_of_core_raw_phase": max(0.0, 100 * (
                (busy1 - busy0) - (cpu1 - cpu0) - (srv1 - srv0)) / (t1 - t0)),
            "raw_cpu_s_per_1000": 1000 * (cpu1 - cpu0) / n if n else float("nan"),
            "raw_cpu_pct_of_core": 100 * (cpu1 - cpu0) / (t1 - t0),
            "raw_latency_ms_p50": 1e3 * statistics.median(counter.lat) if counter.lat
            else float("nan"),
            "server_writes_per_s_raw_phase": writes}


# ---- the gateway ------------------------------------------------------------------------


def plant_yaml(endpoint: str, items: int, state_dir: Path) -> str:
    points = "".join(
        f"      - {{name: {_name(i)}, node: \"nsu={NS_URI};s={_name(i)}\", "
        f"queue_size: {QUEUE_SIZE}}}\n" for i in range(items))
    return (
        f"gateway: {{id: gw-bench, site: bench, workers: 1, state_dir: {state_dir}}}\n"
        "machines:\n"
        "  - id: opc-load\n"
        "    area: hall-1\n"
        "    line: line-1\n"
        "    adapter: opcua\n"
        "    poll_interval: 1.0\n"
        f"    connection: {{endpoint: \"{endpoint}\", publishing_interval: {PUBLISHING_INTERVAL},"
        f" max_items_per_subscription: {ITEMS_PER_SUBSCRIPTION}, timeout: 10.0}}\n"
        "    points:\n" + points
    )


def gateway_run(endpoint: str, spec: Spec, stats: Path, workdir: Path,
                server_pid: int) -> dict[str, float]:
    from .processes import (  # noqa: PLC0415
        HOST,
        ProcessGroup,
        cpu_seconds,
        memory_bytes,
        start_mosquitto,
        system_busy_seconds,
    )
    from .subscriber import TelemetrySubscriber  # noqa: PLC0415

    group = ProcessGroup(workdir)
    try:
        broker, port = start_mosquitto(group)
        state = workdir / "state"
        state.mkdir(exist_ok=True)
        plant = workdir / "plant-opcua.yaml"
        plant.write_text(plant_yaml(endpoint, spec.items, state))
        sub = TelemetrySubscriber(HOST, port)
        try:
            gw = group.spawn("gateway-opcua", [
                sys.executable, "-m", "edge.cli", "--log-level", "warning", "--log-format",
                "json", "run", "-c", str(plant), "--broker", f"mqtt://{HOST}:{port}",
                "--no-console"])
            deadline = time.monotonic() + 120
            while sub.topics() < 1:
                if not gw.alive():
                    raise RuntimeError(f"gateway exited:\n{gw.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no telemetry within 120 s:\n{gw.log_tail()}")
                time.sleep(0.1)
            time.sleep(spec.settle)
            sub.take()
            rss: list[int] = []
            cpu0, srv0 = cpu_seconds(gw.pid), cpu_seconds(server_pid)
            mq0, own0, busy0 = (cpu_seconds(broker.pid), cpu_seconds(os.getpid()),
                                system_busy_seconds())
            w0, at0 = _writes(stats)
            t0 = time.time()
            while time.time() < t0 + spec.window:
                rss.append(memory_bytes(gw.pid)[0])
                time.sleep(min(0.5, max(0.0, t0 + spec.window - time.time())))
            t1 = time.time()
            cpu1, srv1 = cpu_seconds(gw.pid), cpu_seconds(server_pid)
            mq1, own1, busy1 = (cpu_seconds(broker.pid), cpu_seconds(os.getpid()),
                                system_busy_seconds())
            w1, at1 = _writes(stats)
            time.sleep(3.0)  # grace: records read in the window still in flight
            peak = memory_bytes(gw.pid)[1]
            tally = sub.take()
        finally:
            sub.close()
    finally:
        group.close()
    records = sum(a.records for a in tally.arrivals if t0 <= a.read_at < t1)
    lat = sorted(a.received_at - a.read_at for a in tally.arrivals if t0 <= a.read_at < t1)
    elapsed = t1 - t0
    writes = (w1 - w0) / (at1 - at0)
    ours = (cpu1 - cpu0) + (srv1 - srv0) + (mq1 - mq0) + (own1 - own0)
    return {
        "gateway_over_server_writes": records / elapsed / writes if writes else float("nan"),
        "broker_cpu_pct_of_core": 100 * (mq1 - mq0) / elapsed,
        "other_load_pct_of_core_gateway_phase": max(0.0, 100 * ((busy1 - busy0) - ours)
                                                    / elapsed),
        "gateway_records_per_s": records / elapsed,
        "gateway_cpu_s_per_1000": 1000 * (cpu1 - cpu0) / records if records else float("nan"),
        "gateway_cpu_pct_of_core": 100 * (cpu1 - cpu0) / elapsed,
        "gateway_rss_mb_steady": statistics.median(rss) / MB,
        "gateway_rss_mb_peak": peak / MB,
        "gateway_latency_ms_p50": 1e3 * lat[len(lat) // 2] if lat else float("nan"),
        "gateway_seq_gaps": float(tally.seq_gaps),
        "server_writes_per_s_gateway_phase": writes,
        "server_cpu_pct_of_core_gateway_phase": 100 * (srv1 - srv0) / elapsed,
    }


# ---- restart to first fresh sample ---------------------------------------------------------


async def restart_latency(spec: Spec) -> dict[str, float]:
    """Median time from the simulator's `start()` to the first good sample, via DeviceRunner."""
    import structlog  # noqa: PLC0415

    from adapters.opcua.adapter import OpcUaAdapter  # noqa: PLC0415
    from adapters.opcua.settings import OpcUaSettings  # noqa: PLC0415
    from edge.devices.runner import DeviceRunner  # noqa: PLC0415
    from models.sample import Quality, Sample  # noqa: PLC0415
    from simulators.machine import MachineModel  # noqa: PLC0415
    from simulators.opcua_server import serve_opcua  # noqa: PLC0415

    from .processes import free_port  # noqa: PLC0415

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # its tracebacks on each stop
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    sim = await serve_opcua([(MachineModel.from_options("m1", {"seed": 3}), endpoint)])
    settings = OpcUaSettings.model_validate({"connection": {
        "endpoint": endpoint, "profile": "machine_tool", "publishing_interval": 0.1,
        "watchdog_interval": 0.5, "timeout": 2.0}})
    samples: list[tuple[float, Sample]] = []

    def sink(_asset: str, batch: Any) -> None:
        now = time.monotonic()
        samples.extend((now, s) for s in batch)

    runner = DeviceRunner("m1", OpcUaAdapter, settings=settings, poll_interval=1.0,
                          on_samples=sink, on_status=lambda *_: None,
                          logger=structlog.get_logger())
    task = asyncio.create_task(runner.run())

    async def wait(cond: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("restart bench: condition not met")
            await asyncio.sleep(0.01)

    def fresh(since: int) -> Callable[[], bool]:
        return lambda: any(s.signal == "execution" and s.quality is Quality.GOOD
                           for _, s in samples[since:])

    def gone(since: int) -> Callable[[], bool]:
        return lambda: any(s.signal == "availability" and s.value == "unavailable"
                           for _, s in samples[since:])

    times: list[float] = []
    try:
        await wait(fresh(0), 30)
        for _ in range(spec.restarts):
            mark = len(samples)
            await sim.stop()
            await wait(gone(mark), 15)
            await asyncio.sleep(spec.down_s)
            gap = len(samples)
            await sim.start()
            started = time.monotonic()
            await wait(fresh(gap), 60)
            first = next(t for t, s in samples[gap:]
                         if s.signal == "execution" and s.quality is Quality.GOOD)
            times.append(first - started)
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.aclose()
    return {"restart_to_sample_s_median": statistics.median(times),
            "restart_to_sample_s_max": max(times),
            "restart_to_sample_s_min": min(times),
            "restarts": float(len(times)),
            "restart_down_s": spec.down_s}


# ---- the whole figure ---------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    """Every figure of the module docstring, measured in one run; numbers only."""
    from .processes import ProcessGroup, free_port, wait_port  # noqa: PLC0415

    spec = QUICK if quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    stats = workdir / "server-stats.json"
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    group = ProcessGroup(workdir)
    out: dict[str, Any] = {"items": spec.items, "hz": spec.hz,
                           "offered_changes_per_s": spec.offered, "window_s": spec.window}
    try:
        server = group.spawn("opcua-load-server", [
            sys.executable, "-m", "bench.opcua_load", "--serve", str(port),
            "--items", str(spec.items), "--hz", str(spec.hz), "--stats", str(stats)])
        wait_port(port, 60, server.proc)
        deadline = time.monotonic() + 10
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before = asyncio.run(raw_client(endpoint, spec.items, spec, stats, server.pid))
        out.update(gateway_run(endpoint, spec, stats, workdir, server.pid))
        after = asyncio.run(raw_client(endpoint, spec.items, spec, stats, server.pid))
        best = max(before, after, key=lambda r: r["raw_notifications_per_s"])
        out.update(best)
        out["raw_notifications_per_s_before"] = before["raw_notifications_per_s"]
        out["raw_notifications_per_s_after"] = after["raw_notifications_per_s"]
    finally:
        group.close()
    out.update(asyncio.run(restart_latency(spec)))
    shutil.rmtree(workdir, ignore_errors=True)  # kept (logs, plant YAML) only when a run fails
    out["gateway_over_raw"] = out["gateway_records_per_s"] / out["raw_notifications_per_s"]
    out["raw_over_offered"] = out["raw_notifications_per_s"] / spec.offered
    out["gateway_over_offered"] = out["gateway_records_per_s"] / spec.offered
    return out


def table(r: dict[str, Any]) -> str:
    rows = [
        ("offered (items x Hz)",
         f"{r['items']} x {r['hz']:g} = {r['offered_changes_per_s']:,.0f}/s"),
        ("server writes/s (best raw phase / gateway phase)",
         f"{r['server_writes_per_s_raw_phase']:,.0f} / "
         f"{r['server_writes_per_s_gateway_phase']:,.0f}"),
        ("raw asyncua client notifications/s (best of before / after the gateway)",
         f"{r['raw_notifications_per_s']:,.0f} ({r['raw_notifications_per_s_before']:,.0f} / "
         f"{r['raw_notifications_per_s_after']:,.0f})"),
        ("gateway telemetry records/s (at MQTT subscriber)", f"{r['gateway_records_per_s']:,.0f}"),
        ("**gateway / raw**", f"**{r['gateway_over_raw']:.3f}**"),
        ("raw / offered; gateway / offered",
         f"{r['raw_over_offered']:.3f}; {r['gateway_over_offered']:.3f}"),
        ("delivered / server writes in the same phase: raw; gateway",
         f"{r['raw_over_server_writes']:.3f}; {r['gateway_over_server_writes']:.3f}"),
        ("CPU s per 1,000 notifications: raw / gateway",
         f"{r['raw_cpu_s_per_1000']:.4f} / {r['gateway_cpu_s_per_1000']:.4f}"),
        ("CPU % of one core: raw client / gateway / broker",
         f"{r['raw_cpu_pct_of_core']:.0f} / {r['gateway_cpu_pct_of_core']:.0f} / "
         f"{r['broker_cpu_pct_of_core']:.0f}"),
        ("server CPU % of one core: raw phase / gateway phase",
         f"{r['server_cpu_pct_of_core_raw_phase']:.0f} / "
         f"{r['server_cpu_pct_of_core_gateway_phase']:.0f}"),
        ("other load on the machine, % of one core: raw phase / gateway phase",
         f"{r['other_load_pct_of_core_raw_phase']:.0f} / "
         f"{r['other_load_pct_of_core_gateway_phase']:.0f}"),
        ("gateway RSS steady / peak (MB)",
         f"{r['gateway_rss_mb_steady']:.0f} / {r['gateway_rss_mb_peak']:.0f}"),
        ("latency p50, source ts -> raw callback / -> MQTT subscriber (ms)",
         f"{r['raw_latency_ms_p50']:.0f} / {r['gateway_latency_ms_p50']:.0f}"),
        ("gateway seq gaps", f"{r['gateway_seq_gaps']:.0f}"),
        (f"server restart -> first fresh sample (median of {r['restarts']:.0f}; min / max)",
         f"{r['restart_to_sample_s_median']:.2f} s ({r['restart_to_sample_s_min']:.2f} / "
         f"{r['restart_to_sample_s_max']:.2f}); down {r['restart_down_s']:g} s"),
    ]
    lines = ["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.opcua_load")
    parser.add_argument("--quick", action="store_true", help="200 items, 5 s windows")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=FULL.items, help=argparse.SUPPRESS)
    parser.add_argument("--hz", type=float, default=FULL.hz, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, args.items, args.hz, args.stats))
        return
    from .processes import terminate_on_sigterm  # noqa: PLC0415

    terminate_on_sigterm()
    result = run(quick=args.quick)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
