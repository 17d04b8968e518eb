"""`edge-gateway run` as a subprocess: simulators -> Modbus -> gateway -> real Mosquitto.

What is checked is what a platform sees at the broker: contract-shaped bodies on the
contract's topics, retained birth/death status, state changes, a dead device that does not
stop its neighbours, a clean stop on SIGTERM, and a SIGHUP reload that refuses a broken YAML.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, verified_body, wait_for

from edge.platform_kit.verifier import verify_stream
from edge.signing.jws import b64url_decode

TOPIC_M1 = "edge/plant-a/hall-1/line-1/m1/telemetry"
JWKS: list[dict[str, Any]] = []


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def unverified_body(msg: Any) -> dict[str, Any]:
    """The body without checking the signature: for timing checks over messages that may
    include retained ones of an earlier gateway (another key)."""
    body: dict[str, Any] = json.loads(b64url_decode(json.loads(msg.payload)["payload"]))
    return body


def body(msg: Any) -> dict[str, Any]:
    """The verified body of an envelope (signature checked against the published JWKS),
    or the plain JSON of a status message."""
    assert JWKS, "the gateway must publish its JWKS before any envelope can be checked"
    return verified_body(msg.payload, JWKS[-1], msg.topic)


def keys_from(col: Collector) -> None:
    wait_for(lambda: any(m.topic.endswith("/keys") for m in col.snapshot()), 10, "JWKS")
    JWKS.append(json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload))


@pytest.fixture
def gateway(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> Iterator[GatewayProcess]:
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port, free_port())
    )
    gw = GatewayProcess(plant).start()
    yield gw
    gw.kill()


def _wait_list(col: Collector, n: int) -> list[Any]:
    wait_for(lambda: len(col.snapshot()) >= n, 10, f"{n} messages")
    return col.snapshot()[:n]


@pytest.mark.slow
def test_gateway_publishes_contract_shaped_telemetry_and_state(
    gateway: GatewayProcess, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    keys_from(col)
    telemetry = "edge/plant-a/hall-1/line-1/m1/telemetry"
    state = "edge/plant-a/hall-1/line-1/m1/state"
    wait_for(lambda: sum(m.topic == telemetry for m in col.snapshot()) >= 5, 20, "m1 telemetry")
    wait_for(lambda: any(m.topic == state for m in col.snapshot()), 10, "m1 state")
    wait_for(
        lambda: any(m.topic.endswith("/m2/telemetry") for m in col.snapshot()), 10, "m2 telemetry"
    )

    msgs = col.snapshot()
    status = [body(m) for m in msgs if m.topic == "edge/plant-a/gw-1/status"]
    assert status and status[-1]["state"] == "online" and status[-1]["gateway"] == "gw-1"

    tel = [body(m) for m in msgs if m.topic == telemetry]
    first = tel[0]
    assert set(first) == {
        "v",
        "gateway",
        "topic",
        "asset",
        "stream",
        "seq",
        "prev",
        "created",
        "historical",
        "records",
    }
    assert (first["v"], first["gateway"], first["topic"], first["asset"], first["stream"]) == (
        1,
        "gw-1",
        telemetry,
        "m1",
        "telemetry",
    )
    seqs = [b["seq"] for b in tel]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must run without gaps per topic"
    assert tel[0]["seq"] == 1 and tel[0]["prev"] is None and tel[0]["historical"] is False
    lines = [
        json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)})
        for m in msgs
        if m.topic.endswith(("/telemetry", "/state"))
    ]
    report = verify_stream(lines, JWKS[-1])
    assert report.ok and report.counts.get("ok") == len(lines), report.to_dict()
    signals = {r["signal"]: r for b in tel for r in b["records"]}
    assert set(signals) == {
        "execution",
        "controller_mode",
        "part_count",
        "bad_part_count",
        "spindle_speed",
        "program",
    }
    assert (
        signals["spindle_speed"]["unit"] == "1/min"
        and signals["spindle_speed"]["quality"] == "good"
    )
    assert signals["execution"]["value"] in {
        "ready",
        "active",
        "interrupted",
        "feed_hold",
        "stopped",
        "program_stopped",
        "program_completed",
        "wait",
        "optional_stop",
    }
    st = body([m for m in msgs if m.topic == state][-1])
    assert st["stream"] == "state" and st["records"][0]["availability"] == "available"

    # the dead device is reported unavailable, logged once, and does not stop the others
    dead_state = "edge/plant-a/hall-1/line-2/dead/state"
    wait_for(lambda: any(m.topic == dead_state for m in col.snapshot()), 10, "dead state")
    assert (
        body([m for m in col.snapshot() if m.topic == dead_state][-1])["records"][0]["availability"]
        == "unavailable"
    )
    wait_for(lambda: len(gateway.events("device_still_unavailable")) >= 2, 20, "two more retries")
    unavailable = [e for e in gateway.logs() if e.get("event") == "device_unavailable"]
    assert [e["asset"] for e in unavailable] == ["dead"]
    assert not any(m.topic.endswith("/dead/telemetry") for m in col.snapshot())

    # a retained status is what a late subscriber sees
    late = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/gw-1/status")
    (retained,) = _wait_list(late, 1)
    assert retained.retain and body(retained)["state"] == "online"

    # clean stop: offline status, exit 0
    gateway.signal(signal.SIGTERM)
    assert gateway.wait() == 0
    wait_for(lambda: body(late.snapshot()[-1])["state"] == "offline", 5, "offline status")
    assert not any(
        e.get("level") == "error" or "Traceback" in e.get("line", "") for e in gateway.logs()
    ), gateway.logs()


@pytest.mark.slow
def test_sighup_refuses_broken_yaml_and_applies_a_good_one(
    gateway: GatewayProcess, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    wait_for(
        lambda: any(m.topic.endswith("/m1/telemetry") for m in col.snapshot()), 20, "telemetry"
    )
    plant: Path = gateway.plant
    good = plant.read_text()
    plant.write_text(good.replace("adapter: modbus", "adapter: modbus\n    bogus: 1", 1))
    gateway.signal(signal.SIGHUP)
    wait_for(
        lambda: any(
            e.get("event") == "reload_rejected_keeping_running_config" for e in gateway.logs()
        ),
        10,
        "reload rejected",
    )
    rejected = next(
        e for e in gateway.logs() if e.get("event") == "reload_rejected_keeping_running_config"
    )
    assert any("machines[0].bogus" in p for p in rejected["problems"])
    n = len(col.snapshot())
    wait_for(lambda: len(col.snapshot()) > n + 3, 10, "telemetry continues after a rejected reload")

    # a valid change: drop machine m2; its telemetry stops, m1 continues
    text = good.split("\n  - id: m2")[0] + "\n  - id: dead" + good.split("\n  - id: dead")[1]
    plant.write_text(text)
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in gateway.logs()), 10, "reloaded")
    # Samples are stamped when read: an m2 sample stamped after the reload (which stops m2
    # before it logs `reloaded`) would be a fault, whenever its envelope arrives. Waiting for
    # three m1 envelopes of such samples covers any m2 envelope still in the batcher.
    reloaded = ts(next(e for e in gateway.logs() if e.get("event") == "reloaded")["timestamp"])

    def read_after_reload() -> list[Any]:
        return [
            m
            for m in col.snapshot()
            if m.topic.endswith("/telemetry")
            and max(ts(r["ts"]) for r in unverified_body(m)["records"]) > reloaded
        ]

    wait_for(
        lambda: sum(m.topic.endswith("/m1/telemetry") for m in read_after_reload()) >= 3,
        10,
        "m1 telemetry after the reload",
    )
    assert not any(m.topic.endswith("/m2/telemetry") for m in read_after_reload())
    gateway.signal(signal.SIGTERM)
    assert gateway.wait() == 0
