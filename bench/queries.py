"""Issue 17 item 3: what platform queries cost when the machines run in worker processes.

With `gateway.workers` N > 1 the parent process is the gateway's one query endpoint: it
checks every signed request (signature, `ts`, nonce store, rate limit, permissions), answers
`health` itself, forwards a method about one machine to the worker owning it over a socket
pair, fans a whole-plant `state` out to every worker and merges, and signs every reply.
This section measures that, side by side with one process, on the plant of figure 2 (50
generated Modbus machines x 40 points polled every second by `python -m
simulators.modbus_server`, real Mosquitto), while the gateway keeps polling:

- per query kind (`health`, `state` of one machine, whole-plant `state`) and number of
  requests kept outstanding (closed loop: a requester sends its next request when the reply
  to its last one arrives), replies per second and latency from publishing the request to
  receiving the reply, at the bench's paho client;
- the polling meanwhile: samples/s and read -> received p99 of the telemetry read inside
  each query window, against a window without queries at the start of the same gateway's
  life;
- the gateway's CPU (the parent and its workers): in each window, and the part above the
  query-free window per 1,000 replies.

Requests are signed with a platform key listed in the plant's `platforms:` (the platform
kit's `new_request` and `sign_request`, edge/platform_kit/client.py) whose `rate_limit` and
`burst` are set to the schema's maxima (1,000/s, 10,000), so the token bucket is not what
limits a window unless a window's rate approaches 1,000/s; `rate_limited` refusals are
counted per window. One reply per window is verified against the gateway's retained JWKS
(edge/platform_kit/verifier.py); the others are decoded only, to keep the bench's own CPU
small on a shared 2-core host. The other load on the host is recorded per window.

Each gateway runs against the run's Mosquitto (its defaults) and again against a second one
with `set_tcp_nodelay true`: with Mosquitto's default, Nagle on the broker's sockets makes
each reply wait for a delayed ACK (~40 ms), which would hide what the gateway itself costs.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.platform_kit.client import new_request, sign_request
from edge.platform_kit.verifier import verify_envelope
from models.query import REPLY_PREFIX

from .gateway_load import (
    LoadSpec,
    _broker_pid,
    _tree_cpu,
    plant_yaml,
    weighted_percentiles,
)
from .processes import (
    HOST,
    Child,
    ProcessGroup,
    cpu_seconds,
    descendants,
    start_mosquitto,
    start_simulators,
    system_busy_seconds,
)
from .subscriber import Arrival, TelemetrySubscriber

MACHINES, POINTS, INTERVAL = 50, 40, 1.0
WORKERS = (1, 2)
CONCURRENCY = (1, 8)
KINDS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("health", "health", {}),
    ("state_one", "state", {"asset": "m001"}),
    ("state_plant", "state", {}),
)
"""(name, method, params): the parent alone, one machine's worker, every worker."""
PLATFORM = "bench"
GATEWAY = "edge/bench/gw-bench"  # {prefix}/{site}/{gateway.id} of bench/gateway_load.py


def platforms_yaml(public_key: Path) -> str:
    """The bench platform, its rate limit and burst at the schema's maxima."""
    return (f"platforms:\n  - {{id: {PLATFORM}, public_key_file: {public_key}, "
            "rate_limit: 1000, burst: 10000}\n")


def write_key(directory: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    public = directory / "bench-platform.pub.pem"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, public


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # time.time() when the request was published
    received: float
    code: str  # "ok" or the error code


class Requesters:
    """N platform requesters on one paho client: each keeps one signed request outstanding
    and sends the next one from the network thread as soon as its reply arrives."""

    def __init__(self, port: int, key: Ed25519PrivateKey, *, nodelay: bool = True) -> None:
        self.key = key
        self.reply_topic = f"{REPLY_PREFIX}bench-{secrets.token_hex(6)}"
        self._lock = threading.Lock()
        self._outstanding: dict[str, float] = {}
        self._answers: list[Answer] = []
        self._running = False
        self._method: str = "health"
        self._params: dict[str, Any] = {}
        self.sample_reply = b""
        self.jwks: dict[str, Any] | None = None
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-platform-{secrets.token_hex(4)}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(self.reply_topic, 1), (f"{GATEWAY}/keys", 1)])
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        sock = self.client.socket()
        if nodelay and isinstance(sock, socket.socket):
            # the client answers a reply with PUBACK, then sends its next request: with Nagle
            # on, that second small write waits for the broker's delayed ACK (up to 40 ms)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError("bench platform client could not subscribe")

    def _send(self) -> None:
        body = new_request(self._method, self._params, reply_to=self.reply_topic)
        request = json.dumps(sign_request(self.key, body)).encode()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = body["id"].encode()
        with self._lock:
            self._outstanding[body["id"]] = time.time()
        self.client.publish(f"{GATEWAY}/query", request, qos=1, properties=props)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received = time.time()
        if msg.topic.endswith("/keys"):
            self.jwks = json.loads(msg.payload)
            return
        payload = bytes(msg.payload)
        data = json.loads(payload)["payload"]
        record = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))[
            "records"][0]
        with self._lock:
            sent = self._outstanding.pop(record["id"], None)
            if sent is None:
                return
            code = "ok" if record.get("ok") else str(record.get("error", {}).get("code"))
            self._answers.append(Answer(sent, received, code))
            if code == "ok":
                self.sample_reply = payload
            again = self._running
        if again:
            self._send()

    def run(self, method: str, params: dict[str, Any], concurrency: int,
            seconds: float) -> tuple[float, float, list[Answer], int]:
        """Keep `concurrency` requests outstanding for `seconds`; returns the window
        (t0, t1), the answers received in it and the requests still unanswered 10 s after."""
        with self._lock:
            self._method, self._params = method, params
            self._answers, self._outstanding = [], {}
            self._running = True
        t0 = time.time()
        for _ in range(concurrency):
            self._send()
        time.sleep(seconds)
        with self._lock:
            self._running = False
        t1 = time.time()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._outstanding:
                    break
            time.sleep(0.02)
        with self._lock:
            answers = [a for a in self._answers if a.received < t1]
            lost = len(self._outstanding)
        return t0, t1, answers, lost

    def verified(self) -> bool:
        """The last successful reply verifies against the gateway's retained JWKS."""
        if not self.sample_reply or self.jwks is None:
            return False
        try:
            verify_envelope(self.sample_reply, self.jwks, topic=self.reply_topic)
        except Exception:  # the kit raises its own errors; any of them means "not verified"
            return False
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Window:
    """CPU readings around one window."""

    phase: str
    t0: float
    t1: float
    tree_cpu: float
    parent_cpu: float
    other_cpu: float
    bench_cpu: float


class Meter:
    """CPU of the gateway tree, its parent, the host's other load and the bench itself."""

    def __init__(self, gw: Child, sim: Child, broker_pid: int) -> None:
        self.gw, self.sim, self.broker = gw, sim, broker_pid

    def read(self) -> tuple[float, float, float, float, float]:
        tree = [self.gw.pid, *descendants(self.gw.pid)]
        return (_tree_cpu(tree), cpu_seconds(self.gw.pid),
                cpu_seconds(self.sim.pid) + cpu_seconds(self.broker),
                cpu_seconds(os.getpid()), system_busy_seconds())

    @staticmethod
    def window(phase: str, t0: float, t1: float, a: tuple[float, ...],
               b: tuple[float, ...]) -> Window:
        tree, parent, sim_broker, own, busy = (y - x for x, y in zip(a, b, strict=True))
        return Window(phase, t0, t1, tree, parent, max(0.0, busy - tree - sim_broker - own),
                      own)


def _polling(arrivals: list[Arrival], t0: float, t1: float) -> dict[str, float]:
    inside = [a for a in arrivals if t0 <= a.read_at < t1]
    lat = [(a.received_at - a.read_at, a.records) for a in inside]
    p50, p99 = weighted_percentiles(lat, [0.5, 0.99])
    return {"samples_per_s": sum(a.records for a in inside) / (t1 - t0),
            "read_to_received_ms_p50": p50 * 1e3, "read_to_received_ms_p99": p99 * 1e3}


@dataclass(frozen=True)
class Bed:
    """What every gateway of the section shares: processes, platform key, window lengths."""

    group: ProcessGroup
    broker_port: int
    broker_pid: int
    sim: Child
    base: int  # the simulator's first port
    key: Ed25519PrivateKey
    public_key: Path
    window: float
    settle: float


def _gateway(bed: Bed, workers: int, sub: TelemetrySubscriber) -> Child:
    group, public_key = bed.group, bed.public_key
    spec = LoadSpec(MACHINES, points=POINTS, interval=INTERVAL, workers=workers, run_id="q")
    state_dir = group.workdir / f"state-{spec.tag}"
    state_dir.mkdir(exist_ok=True)
    plant = group.workdir / f"plant-{spec.tag}.yaml"
    plant.write_text(plant_yaml(spec, bed.base, state_dir) + platforms_yaml(public_key))
    gw = group.spawn(f"gateway-{spec.tag}", [
        sys.executable, "-m", "edge.cli", "--log-level", "warning", "--log-format", "json",
        "run", "-c", str(plant), "--broker", f"mqtt://{HOST}:{bed.broker_port}",
        "--no-console"])
    deadline = time.monotonic() + 90
    while sub.topics() < MACHINES:
        if not gw.alive():
            raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n{gw.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sub.topics()} machines published:\n{gw.log_tail()}")
        time.sleep(0.05)
    return gw


def _one_gateway(bed: Bed, workers: int) -> dict[str, Any]:
    window = bed.window
    sub = TelemetrySubscriber(HOST, bed.broker_port)
    platform = Requesters(bed.broker_port, bed.key)
    try:
        gw = _gateway(bed, workers, sub)
        time.sleep(bed.settle)
        meter = Meter(gw, bed.sim, bed.broker_pid)
        windows: list[Window] = []
        rows: list[dict[str, Any]] = []
        a, t0 = meter.read(), time.time()
        time.sleep(window)
        t1 = time.time()
        windows.append(Meter.window("none", t0, t1, a, meter.read()))
        time.sleep(1.0)
        for name, method, params in KINDS:
            for n in CONCURRENCY:
                print(f"    workers {workers}: {name} x {n} outstanding ...", flush=True)
                a = meter.read()
                q0, q1, answers, lost = platform.run(method, params, n, window)
                w = Meter.window(f"{name}/{n}", q0, q1, a, meter.read())
                windows.append(w)
                codes = Counter(x.code for x in answers)
                p50, p99 = weighted_percentiles([(x.received - x.sent, 1) for x in answers],
                                                [0.5, 0.99])
                rows.append({"kind": name, "method": method, "params": params,
                             "outstanding": n, "replies_per_s": len(answers) / (q1 - q0),
                             "ok": codes.get("ok", 0),
                             "refused": {c: k for c, k in codes.items() if c != "ok"},
                             "unanswered_after_10s": lost,
                             "latency_ms_p50": p50 * 1e3, "latency_ms_p99": p99 * 1e3,
                             "reply_verified": platform.verified()})
                r = rows[-1]
                print(f"      {r['replies_per_s']:,.0f} replies/s, p50 "
                      f"{r['latency_ms_p50']:.1f} ms, p99 {r['latency_ms_p99']:.1f} ms, "
                      f"refused {r['refused']}", flush=True)
        time.sleep(3.0)  # grace: the last window's telemetry reaches the subscriber
        if not gw.alive():
            raise RuntimeError(f"gateway died during the run:\n{gw.log_tail()}")
        tally = sub.take()
    finally:
        platform.close()
        sub.close()
    bed.group.stop(gw, timeout=15.0)
    return _figures(workers, windows, rows, tally.arrivals, tally.seq_gaps)


def _figures(workers: int, windows: list[Window], rows: list[dict[str, Any]],
             arrivals: list[Arrival], seq_gaps: int) -> dict[str, Any]:
    base = windows[0]
    base_rate = base.tree_cpu / (base.t1 - base.t0)
    out_windows = []
    for w in windows:
        elapsed = w.t1 - w.t0
        out_windows.append({
            "phase": w.phase, "seconds": round(elapsed, 2),
            "gateway_cpu_pct_of_core": 100 * w.tree_cpu / elapsed,
            "parent_cpu_pct_of_core": 100 * w.parent_cpu / elapsed,
            "other_load_pct_of_core": 100 * w.other_cpu / elapsed,
            "bench_cpu_pct_of_core": 100 * w.bench_cpu / elapsed,
            **_polling(arrivals, w.t0, w.t1)})
    for row, w, fig in zip(rows, windows[1:], out_windows[1:], strict=True):
        answered = row["ok"] + sum(row["refused"].values())
        extra = w.tree_cpu - base_rate * (w.t1 - w.t0)
        row["gateway_cpu_s_per_1000_queries"] = (1000 * extra / answered if answered
                                                 else float("nan"))
        row["polling"] = fig
    return {"workers": workers, "no_queries": out_windows[0], "queries": rows,
            "windows": out_windows, "seq_gaps": seq_gaps}


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    """Each worker count against the run's broker (Mosquitto's defaults: Nagle on its
    sockets) and against a second one with `set_tcp_nodelay true`, where a reply's latency
    is the gateway's and not the broker's delayed ACKs."""
    window, settle = (3.0, 1.0) if quick else (10.0, 3.0)
    key, public = write_key(group.workdir)
    sim, base = start_simulators(group, MACHINES)
    brokers = [("default", broker_port, _broker_pid(group))]
    if not quick:
        nodelay, port = start_mosquitto(group, name="mosquitto-nodelay",
                                        extra="set_tcp_nodelay true\n")
        brokers.append(("set_tcp_nodelay", port, nodelay.pid))
    runs: list[dict[str, Any]] = []
    try:
        for broker, port, pid in brokers:
            bed = Bed(group, port, pid, sim, base, key, public, window, settle)
            for workers in WORKERS[:1] if quick else WORKERS:
                print(f"  queries: {MACHINES} machines x {POINTS} points every {INTERVAL:g} s, "
                      f"{workers} worker(s), broker {broker} ...", flush=True)
                runs.append({"broker": broker, **_one_gateway(bed, workers)})
    finally:
        group.stop(sim)
    return {"machines": MACHINES, "points": POINTS, "poll_interval_s": INTERVAL,
            "window_s": window, "concurrency": list(CONCURRENCY), "runs": runs}


def _f(value: Any, fmt: str) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return format(value, fmt)


def markdown(result: dict[str, Any]) -> list[str]:
    """Section 2m of the report: one table of queries, one of the polling meanwhile."""
    out = ["## 2m. Queries with worker processes (issue 17 item 3)", ""]
    if "error" in result:
        return [*out, f"not measured: {result['error']}", ""]
    out += [f"{result['machines']} Modbus machines x {result['points']} points polled every "
            f"{result['poll_interval_s']:g} s throughout; {result['window_s']:g} s per window; "
            "requests kept outstanding in a closed loop; latency = request published -> "
            "reply received at the bench's client. CPU per 1,000 queries is the gateway "
            "tree's CPU above its query-free window.", "",
            "| broker | workers | query | outstanding | replies/s | p50 ms | p99 ms | refused | "
            "gateway CPU % core | parent % | CPU s / 1,000 queries | samples/s | "
            "telemetry p99 ms | other load % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        n, who = r["no_queries"], f"| {r.get('broker', 'default')} | {r['workers']} |"
        out.append(f"{who} (none) | - | - | - | - | - | "
                   f"{_f(n['gateway_cpu_pct_of_core'], '.0f')} | "
                   f"{_f(n['parent_cpu_pct_of_core'], '.0f')} | - | "
                   f"{_f(n['samples_per_s'], ',.0f')} | "
                   f"{_f(n['read_to_received_ms_p99'], '.0f')} | "
                   f"{_f(n['other_load_pct_of_core'], '.0f')} |")
        for q in r["queries"]:
            p = q["polling"]
            refused = ", ".join(f"{c} {k}" for c, k in q["refused"].items()) or "0"
            out.append(f"{who} {q['kind']} | {q['outstanding']} | "
                       f"{_f(q['replies_per_s'], ',.0f')} | {_f(q['latency_ms_p50'], '.1f')} | "
                       f"{_f(q['latency_ms_p99'], '.1f')} | {refused} | "
                       f"{_f(p['gateway_cpu_pct_of_core'], '.0f')} | "
                       f"{_f(p['parent_cpu_pct_of_core'], '.0f')} | "
                       f"{_f(q['gateway_cpu_s_per_1000_queries'], '.3f')} | "
                       f"{_f(p['samples_per_s'], ',.0f')} | "
                       f"{_f(p['read_to_received_ms_p99'], '.0f')} | "
                       f"{_f(p['other_load_pct_of_core'], '.0f')} |")
    unverified = [(r.get("broker"), r["workers"], q["kind"], q["outstanding"])
                  for r in result["runs"] for q in r["queries"] if not q["reply_verified"]]
    out += ["", "Every window's sample reply verified against the gateway's JWKS."
            if not unverified else f"Reply NOT verified in: {unverified}.", ""]
    return out


__all__ = ["markdown", "run"]

