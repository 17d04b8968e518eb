"""`reserve` under load: 50 platforms asking at once; prints figures, asserts nothing.

    .venv/bin/python bench/bench_bookings.py [--platforms 50] [--requests 20] [--machines 5]

A gateway subprocess (simulated Modbus machines, a real Mosquitto) and N platforms, each on
its own MQTT connection with its own Ed25519 key, each sending signed requests one after
another (closed loop: N requests in flight). Every `reserve` asks for a 30-minute window
drawn from a small pool over the machines, so platforms collide: some are accepted, the
rest declined with the reason, as a busy plant would see. Each accepted or declined request
commits to the bookings store (synchronous=FULL: an fsync per decision) and seals two or
three signed `bookings` records into the outbox before the reply.

The ceiling, measured in the same run with the same platforms and the same pipeline
(signature, nonce, rate, signed reply): `health`, a read-only query. The ratio says what
the decision, the store commit and the signed records cost on top of a query.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import ProcessGroup, start_mosquitto, terminate_on_sigterm
from edge.observability import configure_logging
from edge.platform_kit.client import new_request, sign_request
from edge.platform_kit.verifier import verify_envelope
from edge.transport.mqtt import MqttTransport
from models.plant import Destination

GATEWAY = "edge/plant-a/gw-1"


def plant_yaml(state: Path, machines: int, platforms: int, sim_port: int) -> str:
    ms = "".join(
        f"""
  - id: m{i + 1}
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 1.0
    simulator: {{seed: {i + 1}, time_scale: 60}}
    connection: {{host: 127.0.0.1, port: {sim_port + i}, timeout: 0.5}}
    points:
      - {{name: execution, register: holding, address: 0, data_type: uint16,
         map: {{0: ready, 1: active, 4: stopped}}}}
      - {{name: part_count, register: holding, address: 10, data_type: uint32}}
"""
        for i in range(machines)
    )
    ps = "".join(
        f"  - {{id: p{i}, public_key_file: p{i}.pem, methods: [reserve, health], "
        "rate_limit: 1000, burst: 1000}\n"
        for i in range(platforms)
    )
    # one process: the figures are those of one gateway process (`auto` could spread it)
    return f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state}, workers: 1,
  query: {{queue_size: 1000}}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:{{broker}}"}}
platforms:
{ps}booking:
  max_duration_minutes: 60
machines:{ms}"""


class Client:
    def __init__(self, url: str, name: str, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.reply = f"platform/{name}/replies"
        self.transport = MqttTransport(
            Destination(id=name, url=url), client_id=f"bench-{name}-{secrets.token_hex(3)}"
        )
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.pump: asyncio.Task[None] | None = None
        self.jwks: dict[str, Any] | None = None

    async def start(self) -> None:
        await self.transport.start()
        if not await self.transport.wait_connected(30):
            raise RuntimeError("platform cannot connect")
        await self.transport.subscribe(self.reply, 1)
        await self.transport.subscribe(f"{GATEWAY}/keys", 1)
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for msg in self.transport.messages():
            self.inbox.put_nowait(msg)

    async def stop(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        await self.transport.stop()

    async def ask(
        self, method: str, params: dict[str, Any], wait: float = 30.0
    ) -> tuple[float, dict[str, Any]]:
        body = new_request(method, params, reply_to=self.reply)
        payload = json.dumps(sign_request(self.key, body)).encode()
        t0 = time.perf_counter()
        await self.transport.publish(f"{GATEWAY}/query", payload, qos=1)
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), wait)
            if msg.topic.endswith("/keys"):
                self.jwks = json.loads(msg.payload)
                continue
            env = json.loads(msg.payload)
            if self.jwks is None:
                raise RuntimeError("a reply before the gateway's JWKS: cannot verify it")
            record: dict[str, Any] = verify_envelope(env, self.jwks, topic=self.reply)["records"][0]
            if record.get("id") == body["id"]:  # else a late reply to a timed-out warm-up
                return time.perf_counter() - t0, record


def window(rng: random.Random, now: datetime, machines: int, slots: int) -> dict[str, Any]:
    start = now + timedelta(hours=1, minutes=30 * rng.randrange(slots))
    return {
        "asset": f"m{rng.randrange(machines) + 1}",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
    }


async def phase(
    clients: list[Client], method: str, per: int, machines: int, slots: int
) -> tuple[list[float], float, dict[str, int]]:
    now = datetime.now(UTC)
    outcomes: dict[str, int] = {}
    lat: list[float] = []

    async def one(i: int, c: Client) -> None:
        rng = random.Random(i)
        for n in range(per):
            params = (
                {**window(rng, now, machines, slots), "reference": f"r{i}-{n}"}
                if method == "reserve"
                else {}
            )
            dt, rec = await c.ask(method, params)
            lat.append(dt)
            key = rec.get("result", {}).get("state") if rec.get("ok") else None
            key = key or (rec.get("error", {}).get("code") if "error" in rec else "ok")
            outcomes[str(key)] = outcomes.get(str(key), 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return lat, time.perf_counter() - t0, outcomes


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace, work: Path, broker: int) -> dict[str, Any]:
    keys = [Ed25519PrivateKey.generate() for _ in range(args.platforms)]
    for i, k in enumerate(keys):
        (work / f"p{i}.pem").write_bytes(
            k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    clients = [Client(f"mqtt://127.0.0.1:{broker}", f"p{i}", k) for i, k in enumerate(keys)]
    for c in clients:
        await c.start()
    # warm-up: every platform once, until the gateway answers (it may still be starting)
    deadline = time.monotonic() + 60
    while True:
        try:
            await clients[0].ask("health", {}, wait=1.0)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    await phase(clients, "health", 1, args.machines, 1)
    health, health_wall, _ = await phase(clients, "health", args.requests, args.machines, 1)
    slots = max(1, args.platforms * args.requests // (2 * args.machines))
    reserve, reserve_wall, outcomes = await phase(
        clients, "reserve", args.requests, args.machines, slots
    )
    for c in clients:
        await c.stop()
    n = len(reserve)
    return {
        "platforms": args.platforms,
        "reserve_requests": n,
        "reserve_per_s": n / reserve_wall,
        "reserve_p50_ms": 1000 * statistics.median(reserve),
        "reserve_p99_ms": 1000 * pct(reserve, 99),
        "outcomes": outcomes,
        "health_per_s": len(health) / health_wall,
        "health_p50_ms": 1000 * statistics.median(health),
        "health_p99_ms": 1000 * pct(health, 99),
        "ratio_reserve_to_health": (n / reserve_wall) / (len(health) / health_wall),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--platforms", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="per platform and phase")
    p.add_argument("--machines", type=int, default=5)
    args = p.parse_args()
    terminate_on_sigterm()
    configure_logging("console", "warning")
    work = Path(tempfile.mkdtemp(prefix="bench-bookings-"))
    group = ProcessGroup(work)
    try:
        _, broker = start_mosquitto(group)
        from bench.processes import free_port_block  # noqa: PLC0415

        plant = work / "plant.yaml"
        text = plant_yaml(
            work / "state", args.machines, args.platforms, free_port_block(args.machines)
        )
        plant.write_text(text.replace("{broker}", str(broker)))
        group.spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "edge.cli",
                "--log-level",
                "warning",
                "--log-format",
                "json",
                "run",
                "-c",
                str(plant),
                "--with-simulators",
                "--no-console",
            ],
        )
        result = asyncio.run(run(args, work, broker))
    finally:
        group.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
