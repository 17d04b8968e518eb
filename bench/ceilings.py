"""Figure 3: raw ceilings of the libraries the gateway is built on, measured in the same run.

Each ceiling is the fastest the bench process can drive one stage with the bare library and
nothing of the gateway around it, against the *same* simulator and broker the gateway just
used. Dividing a gateway figure by its ceiling gives a ratio that survives a change of
machine far better than absolute rates on a shared 2-core box do.

* Modbus: `AsyncModbusTcpClient` reading the gateway's largest coalesced request (holding
  0..47) back to back on one connection, then with N clients on N simulated machines at
  once (one event loop, as in the gateway). Client CPU per read is measured too, so the
  gateway's CPU per request can be compared with the bare library's.
* MQTT: paho QoS 1 publishes of a real telemetry envelope (captured from the gateway run),
  `max_inflight` 64 like the gateway's sender, timed until the last PUBACK.
* Signing: `Signer.sign_body` on a 50-record telemetry body (RFC 8785 canonicalization +
  Ed25519 + base64url), its canonicalization alone, and a raw Ed25519 sign of 1 KiB.
* Outbox: `Outbox.append` of the same envelope plus the ack the sender does after PUBACK
  (WAL, synchronous=NORMAL), i.e. the SQLite work per envelope.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from edge.signing.jws import Signer, canonical_json
from models.envelope import envelope_body, telemetry_record
from models.sample import Quality, Sample

from .processes import HOST

READ_ADDRESS, READ_COUNT = 0, 48  # the gateway plan's first request for the bench YAML


# ---- Modbus -------------------------------------------------------------------------------


async def _reader(port: int, until: float, counts: list[int], slot: int) -> None:
    client = AsyncModbusTcpClient(HOST, port=port, timeout=2.0, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"cannot connect to the simulator on {HOST}:{port}")
    try:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            rsp = await client.read_holding_registers(READ_ADDRESS, count=READ_COUNT,
                                                      device_id=1)
            if rsp.isError():
                raise RuntimeError(f"simulator answered {rsp}")
            counts[slot] += 1
    finally:
        client.close()


async def _modbus_readers(ports: list[int], seconds: float) -> tuple[int, float, float]:
    loop = asyncio.get_running_loop()
    counts = [0] * len(ports)
    cpu0, t0 = time.process_time(), time.perf_counter()
    until = loop.time() + seconds
    await asyncio.gather(*(_reader(p, until, counts, i) for i, p in enumerate(ports)))
    return sum(counts), time.perf_counter() - t0, time.process_time() - cpu0


def modbus(base_port: int, machines: int, seconds: float, clients: int) -> dict[str, Any]:
    """Bare pymodbus reads/s against the running simulator process."""
    n, elapsed, _ = asyncio.run(_modbus_readers([base_port], seconds))
    clients = min(clients, machines)
    m, elapsed_m, cpu_m = asyncio.run(
        _modbus_readers([base_port + i for i in range(clients)], seconds))
    return {
        "request": f"holding {READ_ADDRESS}+{READ_COUNT}",
        "sequential_reads_per_s": n / elapsed,
        "sequential_read_us": elapsed / n * 1e6,
        "concurrent_clients": clients,
        "concurrent_reads_per_s": m / elapsed_m,
        "client_cpu_us_per_read": cpu_m / m * 1e6,
    }


# ---- MQTT ---------------------------------------------------------------------------------


def mqtt_publish(port: int, payload: bytes, messages: int, inflight: int = 64) -> dict[str, Any]:
    """QoS 1 publishes/s to the broker, counting only what was PUBACKed."""
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1
        if acked >= messages:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)  # unlimited: the bench queues everything up front
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect(HOST, port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bench publisher could not connect")
        topic = "bench/ceiling/telemetry"
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(messages):
            client.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise RuntimeError(f"only {acked} of {messages} publishes acknowledged")
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        client.disconnect()
        client.loop_stop()
    return {
        "payload_bytes": len(payload),
        "max_inflight": inflight,
        "messages": messages,
        "publishes_per_s": messages / elapsed,
        "mb_per_s": messages * len(payload) / elapsed / 1e6,
        "client_cpu_us_per_publish": cpu / messages * 1e6,
    }


# ---- signing ------------------------------------------------------------------------------


def telemetry_body(records: int) -> dict[str, Any]:
    """A v1 body like the gateway's: the bench YAML's signals, real timestamps and units."""
    now = datetime.now(UTC)
    names: list[tuple[str, float | int | str, str | None]] = [
        ("spindle_speed", 4512.5, "1/min"), ("spindle_load", 37.25, "%"),
        ("feed_rate", 1800.0, "mm/min"), ("execution", "active", None),
        ("part_count", 1234, None), ("pv_007", 31245, None)]
    recs = []
    for i in range(records):
        name, value, unit = names[i % len(names)]
        recs.append(telemetry_record(Sample("m001", f"{name}_{i}", value, unit, now,
                                            quality=Quality.GOOD)))
    return envelope_body(gateway="gw-bench", topic="edge/bench/hall-1/line-1/m001/telemetry",
                         asset="m001", stream="telemetry", seq=1042,
                         prev="bc4WPTO5ERrS3n2Qk1pQv8y7bHq0kUo1oI5z6Kq7m8A", created=now,
                         records=recs)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, timed in chunks until `seconds` have passed."""
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    chunk = 1
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(chunk):
            fn()
        n += chunk
        chunk = min(chunk * 2, 256)
    return n / elapsed


def signing(seconds: float, records: int = 50) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    body = telemetry_body(records)
    kib = os.urandom(1024)
    return {
        "body_records": records,
        "body_bytes": len(canonical_json(body)),
        "sign_body_per_s": _rate(lambda: signer.sign_body(body), seconds),
        "canonical_json_per_s": _rate(lambda: canonical_json(body), seconds),
        "raw_sign_1kib_per_s": _rate(lambda: key.sign(kib), seconds),
    }


# ---- outbox -------------------------------------------------------------------------------


def outbox(payload: bytes, seconds: float) -> dict[str, Any]:
    """Outbox append + ack per envelope (the gateway's SQLite work), WAL synchronous=NORMAL."""
    import hashlib  # noqa: PLC0415

    from edge.egress.outbox import FILENAME, Outbox, OutboxCap  # noqa: PLC0415
    from edge.signing.jws import b64url_encode  # noqa: PLC0415

    topic = "edge/bench/hall-1/line-1/m001/telemetry"
    links = [b64url_encode(hashlib.sha256(str(i).encode()).digest()) for i in range(1024)]
    with tempfile.TemporaryDirectory() as tmp, \
            Outbox(Path(tmp) / FILENAME, caps={"a": OutboxCap(1 << 40)}) as ob:
        seq = ob.load_chain().next(topic)[0]

        def one() -> None:
            nonlocal seq
            ob.append(topic, seq, links[seq % len(links)], payload, retain=False, dests=["a"])
            seq += 1
            rows = ob.peek("a", None, 1)
            ob.ack("a", [rows[0].id])

        rate = _rate(one, seconds)
    return {"payload_bytes": len(payload), "append_and_ack_per_s": rate}
