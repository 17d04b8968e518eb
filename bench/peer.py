"""Figure 4: a peer side by side, ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`) on the
same Modbus scenario, the same simulator process and the same Mosquitto, in the same run.

It lives in a virtualenv of its own (`bench/.peer-venv`, git-ignored) so its pins (it wants
pymodbus 3.9.2 exactly and installs it at import time otherwise) never touch the project's.
Create it once with `python -m bench.peer --install` (what `make bench` would do); when the
venv is absent the figure is reported as not measured, with the reason, and the run goes on.

Configuration: one Modbus "slave" per simulated machine, 40 telemetry tags mapped to exactly
the registers the gateway's bench YAML reads (holding 0..47 state block and 25 process values
at 200..), `pollPeriod` 1000 ms, `reportStrategy` ON_RECEIVED (send every value read, as the
gateway does), memory storage, no remote configuration, no statistics, log level WARNING.
Its MQTT client connects to the bench broker with an access token as user name; plain
Mosquitto accepts it. The bench subscribes to `v1/gateway/telemetry` and counts data points
(`{"device": [{"ts": ms, "values": {...}}]}`); `ts` is ThingsBoard's read time, so its
latency is read -> subscriber like the gateway's Modbus figure.

What differs and is not hidden: ThingsBoard sends no signature, no per-topic sequence and no
local durable outbox (memory storage) and reads each tag with its own Modbus request
(40 requests per machine per cycle, against the gateway's 2).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .gateway_load import MB, weighted_percentiles
from .processes import HOST, ProcessGroup, cpu_seconds, memory_bytes, system_busy_seconds

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer-venv"
BINARY = VENV / "bin" / "thingsboard-gateway"
PIN = "thingsboard-gateway==3.8.5"
# What the bench answers to the peer's `getSessionLimits` RPC (see TbSubscriber._answer_rpc).
SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {},
                  "gatewayRateLimits": {}}
PEER_DEPS = ["pymodbus==3.9.2", "pyserial", "pyserial-asyncio"]

# (tag, TB type, register address, registers) = the bench YAML's 15 state points ...
STATE_TAGS = [
    ("execution", "16uint", 0, 1), ("controller_mode", "16uint", 1, 1),
    ("availability", "16uint", 2, 1), ("emergency_stop", "16uint", 3, 1),
    ("alarm", "16uint", 4, 1), ("program_number", "16uint", 5, 1),
    ("part_count", "32uint", 10, 2), ("bad_part_count", "32uint", 12, 2),
    ("spindle_speed", "32float", 20, 2), ("spindle_load", "32float", 22, 2),
    ("feed_rate", "32float", 24, 2), ("spindle_temperature", "32float", 26, 2),
    ("coolant_temperature", "32float", 28, 2), ("last_cycle_time", "32float", 30, 2),
    ("program", "string", 40, 8),
]


def tags(points: int) -> list[dict[str, Any]]:
    """... plus process values at holding 200.. up to `points` tags."""
    rows = STATE_TAGS + [(f"pv_{i:03d}", "16uint", 200 + i, 1)
                         for i in range(points - len(STATE_TAGS))]
    return [{"tag": t, "type": ty, "functionCode": 3, "objectsCount": n, "address": a}
            for t, ty, a, n in rows]


def write_config(directory: Path, broker_port: int, sim_base: int, machines: int,
                 points: int = 40) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    main = {
        "thingsboard": {
            "host": HOST, "port": broker_port, "remoteShell": False,
            "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench-peer-token"},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {"type": "memory", "read_records_count": 100,
                    "max_records_count": 1_000_000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus bench", "configuration": "modbus.json"}],
    }
    slaves = [{
        "host": HOST, "port": sim_base + i, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": f"m{i + 1:03d}", "deviceType": "cnc", "timeout": 2, "byteOrder": "BIG",
        "wordOrder": "BIG", "retries": 0, "retryOnEmpty": False, "retryOnInvalid": False,
        "pollPeriod": 1000, "connectAttemptTimeMs": 500, "connectAttemptCount": 5,
        "waitAfterFailedAttemptsMs": 1000, "sendDataOnlyOnChange": False,
        "attributes": [], "timeseries": tags(points), "attributeUpdates": [], "rpc": [],
    } for i in range(machines)]
    logs = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f",
                                 "level": "WARNING", "stream": "ext://sys.stdout"}},
        "loggers": {name: {"handlers": ["console"], "level": "WARNING", "propagate": False}
                    for name in ("service", "connector", "converter", "tb_connection",
                                 "storage", "extension")},
        "root": {"level": "WARNING", "handlers": ["console"]},
    }
    (directory / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    (directory / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=2))
    (directory / "logs.json").write_text(json.dumps(logs, indent=2))
    (directory / "list.json").write_text("{}")


class TbSubscriber:
    """Counts the data points ThingsBoard's gateway publishes on `v1/gateway/telemetry`."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.points: list[tuple[float, float, int]] = []  # (ts, received, values)
        self.devices: set[str] = set()
        self.messages = 0
        self.rpc_answered = 0
        self.sample_payload = b""
        self.other_topics: dict[str, int] = {}
        done = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-tb-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe("v1/#", qos=1)
        self.client.on_subscribe = lambda *_: done.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not done.wait(10):
            raise RuntimeError("peer subscriber could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received = time.time()
        if msg.topic.startswith("v1/devices/me/rpc/request/"):
            self._answer_rpc(msg)
            return
        if msg.topic != "v1/gateway/telemetry":
            with self._lock:
                self.other_topics[msg.topic] = self.other_topics.get(msg.topic, 0) + 1
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        rows = []
        for device, entries in body.items():
            for e in entries if isinstance(entries, list) else [entries]:
                values = e.get("values", e) if isinstance(e, dict) else {}
                ts = e.get("ts", received * 1000) / 1000 if isinstance(e, dict) else received
                rows.append((device, ts, len(values)))
        with self._lock:
            self.messages += 1
            self.sample_payload = bytes(msg.payload)
            for device, ts, n in rows:
                self.devices.add(device)
                self.points.append((ts, received, n))

    def _answer_rpc(self, msg: mqtt.MQTTMessage) -> None:
        """Play the one part of a ThingsBoard server the gateway cannot start without.

        After connecting, the gateway's client asks `getSessionLimits` over RPC and sends
        nothing (no device connect, no telemetry) until an answer with `rateLimits` arrives
        (tb_device_mqtt.on_service_configuration leaves `rate_limits_received` False on a
        timeout reply). The answer given is a self-hosted server's with no rate limits.
        """
        try:
            method = json.loads(msg.payload).get("method")
        except (ValueError, AttributeError):
            return
        if method == "getSessionLimits":
            req = msg.topic.rsplit("/", 1)[1]
            self.client.publish(f"v1/devices/me/rpc/response/{req}", json.dumps(SESSION_LIMITS),
                                qos=1)
            with self._lock:
                self.rpc_answered += 1

    def take(self) -> list[tuple[float, float, int]]:
        with self._lock:
            out, self.points = self.points, []
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def install() -> int:
    """Create bench/.peer-venv with ThingsBoard IoT Gateway and the pymodbus it pins."""
    if not VENV.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    return subprocess.run([*pip, PIN, *PEER_DEPS], check=False).returncode


def peer_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                          "from importlib.metadata import version as v; "
                          "print(v('thingsboard-gateway'), v('pymodbus'))"],
                         capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip() or "?"


def run(group: ProcessGroup, broker_port: int, sim_pid: int, sim_base: int, *, machines: int,
        window: float, settle: float = 3.0, points: int = 40) -> dict[str, Any]:
    """Measure ThingsBoard IoT Gateway on the running Modbus simulator. Never raises: a
    failure comes back as {"ran": False, "reason": ...}."""
    if not BINARY.exists():
        return {"ran": False, "reason": f"{BINARY.relative_to(HERE.parent)} is absent: "
                                         "create it with `python -m bench.peer --install`"}
    directory = group.workdir / "thingsboard-gateway"
    write_config(directory, broker_port, sim_base, machines, points)
    sub = TbSubscriber(broker_port)
    tb = None
    try:
        spawned = time.monotonic()
        tb = group.spawn("thingsboard-gateway",
                         ["/bin/sh", "-c", f"cd '{directory}' && TB_GW_CONFIG_DIR='{directory}/' "
                                           f"exec '{BINARY}'"])
        deadline = spawned + 60 + machines * 0.2
        while len(sub.devices) < machines:
            if not tb.alive():
                return {"ran": False, "reason": f"thingsboard-gateway exited with "
                                                f"{tb.proc.returncode}: {tb.log_tail(8)}"}
            if time.monotonic() > deadline:
                return {"ran": False, "reason": f"only {len(sub.devices)} of {machines} devices "
                                                f"published within 60 s: {tb.log_tail(8)}"}
            time.sleep(0.1)
        startup = time.monotonic() - spawned
        time.sleep(settle)
        sub.take()
        rss: list[int] = []
        cpu0, sim0, busy0 = cpu_seconds(tb.pid), cpu_seconds(sim_pid), system_busy_seconds()
        t0 = time.time()
        while time.time() < t0 + window:
            rss.append(memory_bytes(tb.pid)[0])
            time.sleep(min(0.5, max(0.0, t0 + window - time.time())))
        t1 = time.time()
        cpu1, sim1, busy1 = cpu_seconds(tb.pid), cpu_seconds(sim_pid), system_busy_seconds()
        time.sleep(3.0)  # grace: points read inside the window still in flight
        peak = memory_bytes(tb.pid)[1]
        rows = sub.take()
        threads = len(list(Path(f"/proc/{tb.pid}/task").iterdir()))
    except Exception as exc:  # the peer is optional: report, never abort the run
        return {"ran": False, "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        sub.close()
        if tb is not None:
            group.stop(tb, timeout=10.0)
    elapsed = t1 - t0
    inside = [(ts, rcv, n) for ts, rcv, n in rows if t0 <= ts < t0 + window]
    samples = sum(n for _, _, n in inside)
    cpu = cpu1 - cpu0
    lat = [(rcv - ts, n) for ts, rcv, n in inside]
    p50, p99 = weighted_percentiles(lat, [0.5, 0.99])
    from .scenarios import latency_cdf  # noqa: PLC0415

    return {
        "ran": True,
        "version": peer_version(),
        "machines": machines,
        "points_per_machine": points,
        "requests_per_cycle": points,  # one read per tag (modbus_connector.__read_slave_data)
        "window_s": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "samples": samples,
        "samples_per_s": samples / window,
        "offered_per_s": machines * points,
        "achieved_over_offered": samples / window / (machines * points),
        "cpu_s": cpu,
        "cpu_pct_of_core": 100 * cpu / elapsed,
        "cpu_s_per_1000_samples": 1000 * cpu / samples if samples else float("nan"),
        "rss_mb_steady": statistics.median(rss) / MB,
        "rss_mb_peak": peak / MB,
        "threads": threads,
        "latency_ms_p50": p50 * 1e3,
        "latency_ms_p99": p99 * 1e3,
        "latency_ms_cdf": latency_cdf(lat),
        "simulators_cpu_pct_of_core": 100 * (sim1 - sim0) / elapsed,
        "other_load_pct_of_core": max(0.0, 100 * ((busy1 - busy0) - cpu - (sim1 - sim0))
                                      / elapsed),
        "messages": sub.messages,
        "session_limit_rpcs_answered": sub.rpc_answered,
        "sample_payload": sub.sample_payload[:1500].decode(errors="replace"),
        "other_topics": sub.other_topics,
    }


if __name__ == "__main__":
    if "--install" in sys.argv:
        sys.exit(install())
    print(__doc__)
