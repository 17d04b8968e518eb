"""Issue 17 item 5: kill the broker node the gateway is on, mid-stream; count at the survivor.

Two Mosquitto processes: node A, and node B bridging `edge/#` in from A, so a subscriber on
B sees what the gateway publishes on either node. The gateway (`destinations[].urls: [A,
B]`, 10 Modbus machines x 40 points every 100 ms: 4,000 samples/s) runs on A; A gets
SIGKILL mid-stream; the gateway moves to B. Everything B's subscriber received is then run
through the platform-side verifier (signatures, per-topic seq/prev chains), which counts what
is missing (lost), duplicated (QoS 1 re-sends: same seq) and reordered.

Figures: seconds from the kill to the first envelope sealed after it arriving at B (resume),
the longest silence at B, and envelopes/records lost, duplicated and reordered.
Caveat measured, not hidden: a lone Mosquitto acknowledges a message before its bridge has
forwarded it, so what A acknowledged in its last instant can die with it; the gateway has
then deleted it from the outbox. A replicating cluster closes that window (see README).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.platform_kit.verifier import verify_stream

from .gateway_load import LoadSpec, plant_yaml
from .processes import HOST, ProcessGroup, start_mosquitto, start_simulators

MACHINES, INTERVAL = 10, 0.1
SETUP = (f"{MACHINES} Modbus machines x 40 points every {INTERVAL} s, gateway `urls: [A, B]` "
         "(failback_after 0), subscriber on B, A killed with SIGKILL mid-stream; everything "
         "received checked by edge/platform_kit/verifier.py.")


class Capture:
    """Every message on `edge/#` at one broker, with its arrival time (paho thread)."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[float, str, bytes]] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"failover-sub-{os.getpid()}",
                                  protocol=mqtt.MQTTv311)  # RabbitMQ 3.10: 3.1.1 only
        self.client.on_connect = lambda c, *_: c.subscribe("edge/#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError(f"failover subscriber could not subscribe on port {port}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((time.time(), msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[tuple[float, str, bytes]]:
        with self.lock:
            return list(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(what: str, predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _body(payload: bytes) -> dict[str, Any]:
    import base64  # noqa: PLC0415

    env = json.loads(payload)
    data = env["payload"]
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    return body


def _wait_resumed(sub: Capture, killed: float, within: float) -> None:
    """Until an envelope sealed after `killed` reaches the subscriber, or `within` s pass
    (then the figures show no resume: `resume_s` NaN)."""
    seen = 0

    def resumed() -> bool:
        nonlocal seen
        got = sub.snapshot()
        fresh, seen = got[seen:], len(got)
        return any(t.endswith("/telemetry") and b'"signature"' in p
                   and datetime.fromisoformat(_body(p)["created"]).timestamp() >= killed
                   for _, t, p in fresh)

    with contextlib.suppress(TimeoutError):
        _wait("telemetry sealed after the kill at B", resumed, within)


def _bridge_ready(a_port: int, sub: Capture) -> None:
    """A probe published on A must reach B's subscriber: the bridge (or cluster) is up."""
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{os.getpid()}")
    probe.connect(HOST, a_port)
    probe.loop_start()
    try:
        def arrived() -> bool:
            probe.publish("edge/probe", b"1", qos=1)
            time.sleep(0.2)
            return any(t == "edge/probe" for _, t, _p in sub.snapshot())

        _wait("a message from A at B", arrived, 60)
    finally:
        probe.disconnect()
        probe.loop_stop()


@dataclass
class Pair:
    """Two broker nodes: the gateway starts on A, a subscriber on B sees what reaches either."""

    a_port: int
    b_port: int
    kill_a: Callable[[], None]
    close: Callable[[], None]
    setup: str


def mosquitto_pair(group: ProcessGroup) -> Pair:
    a, a_port = start_mosquitto(group, "mosquitto-a")
    b, b_port = start_mosquitto(group, "mosquitto-b", (
        f"connection to-a\naddress {HOST}:{a_port}\ntopic edge/# in 1\n"
        "cleansession true\nrestart_timeout 1\nbridge_protocol_version mqttv311\n"))

    def kill_a() -> None:
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()

    def close() -> None:
        group.stop(b)
        group.stop(a)

    return Pair(a_port, b_port, kill_a, close,
                "two Mosquitto processes, B bridging `edge/#` in from A")


def run(group: ProcessGroup, _broker_port: int, quick: bool) -> dict[str, Any]:
    """Mosquitto A + B (bridged)."""
    return measure(group, mosquitto_pair(group), quick)


def measure(group: ProcessGroup, pair: Pair, quick: bool) -> dict[str, Any]:
    before, after = (3.0, 4.0) if quick else (8.0, 10.0)
    sims, base = start_simulators(group, MACHINES)
    try:
        sub = Capture(pair.b_port)
        try:
            _bridge_ready(pair.a_port, sub)
            state = group.workdir / f"state-failover-{pair.a_port}"
            state.mkdir(exist_ok=True)
            plant = group.workdir / f"plant-failover-{pair.a_port}.yaml"
            plant.write_text(
                plant_yaml(LoadSpec(MACHINES, interval=INTERVAL), base, state)
                + "destinations:\n"
                f"  - {{id: pair, urls: [mqtt://{HOST}:{pair.a_port}, "
                f"mqtt://{HOST}:{pair.b_port}], failback_after: 0}}\n")
            gw = group.spawn(f"gateway-failover-{pair.a_port}", [
                sys.executable, "-m", "edge.cli", "--log-level", "info", "--log-format", "json",
                "run", "-c", str(plant), "--no-console"])

            def machines_seen() -> int:
                return len({t for _, t, _p in sub.snapshot() if t.endswith("/telemetry")})

            _wait("telemetry of every machine at B", lambda: machines_seen() >= MACHINES, 90)
            time.sleep(before)
            killed = time.time()
            pair.kill_a()
            # observe at least `after` s, and until telemetry sealed after the kill has
            # arrived at B (up to 30 s), so a slow resume is measured, not reported as NaN
            _wait_resumed(sub, killed, 30.0)
            time.sleep(max(0.0, killed + after - time.time()))
            stopped = group.stop(gw, timeout=20.0)  # SIGTERM: waits for what is in flight
            time.sleep(1.0)
            got = sub.snapshot()
        finally:
            sub.close()
    finally:
        group.stop(sims)
        pair.close()
    return {"setup": f"{pair.setup}; " + SETUP, **_analyse(got, killed, stopped,
                                                           gw.log_tail(400))}


def _analyse(got: list[tuple[float, str, bytes]], killed: float, exit_code: int | None,
             log: str) -> dict[str, Any]:
    keys = [p for _, t, p in got if t.endswith("/keys")]
    if not keys:
        raise RuntimeError("no JWKS reached the subscriber")
    envelopes = [(at, t, p) for at, t, p in got if t.endswith(("/telemetry", "/state"))
                 and b'"signature"' in p]
    lines = [json.dumps({"topic": t, "envelope": json.loads(p)}) for _, t, p in envelopes]
    report = verify_stream(lines, json.loads(keys[-1]))
    telemetry = [(at, _body(p)) for at, t, p in envelopes if t.endswith("/telemetry")]
    per_env = [len(b["records"]) for _, b in telemetry]
    mean_records = sum(per_env) / len(per_env) if per_env else 0.0
    after_kill = [at for at, b in telemetry
                  if datetime.fromisoformat(b["created"]).timestamp() >= killed]
    arrivals = sorted(at for at, _ in telemetry if at >= killed - 1.0)
    gaps = [y - x for x, y in itertools.pairwise(arrivals)]
    events = [json.loads(line).get("event") for line in log.splitlines()
              if line.startswith("{")]
    return {
        "envelopes_received": report.total,
        "telemetry_records_received": sum(per_env),
        "envelopes_lost": report.missing,
        "records_lost": round(report.missing * mean_records),
        "duplicates": report.counts.get("duplicate", 0),
        "reordered": report.counts.get("reordered", 0),
        "broken_chain_or_forged": sum(n for k, n in report.counts.items()
                                      if k not in ("ok", "duplicate", "reordered", "gap")),
        "resume_s": (min(after_kill) - killed) if after_kill else float("nan"),
        "longest_silence_at_b_s": max(gaps) if gaps else float("nan"),
        "gateway_failovers_logged": events.count("mqtt_failover"),
        "gateway_exit_code": exit_code if exit_code is not None else -1,
    }
