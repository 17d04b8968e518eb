"""`edge-gateway run` as a subprocess: simulators -> Modbus -> gateway -> real Mosquitto.

What is checked is what a platform sees at the broker: contract-shaped bodies on the
contract's topics, retained birth/death status, state changes, a dead device that does not
stop its neighbours, a clean stop on SIGTERM, and a SIGHUP reload that refuses a broken YAML.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto

from edge.verifier import verify_envelope, verify_stream

ROOT = Path(__file__).resolve().parents[1]
POINTS = """
    points:
      - {name: execution, register: holding, address: 0, data_type: uint16,
         map: {0: ready, 1: active, 2: interrupted, 3: feed_hold, 4: stopped, 5: program_stopped,
               6: program_completed, 7: wait, 8: optional_stop}}
      - {name: controller_mode, register: holding, address: 1, data_type: uint16,
         map: {0: automatic, 1: manual, 2: mdi, 3: edit, 4: semi_automatic}}
      - {name: part_count, register: holding, address: 10, data_type: uint32}
      - {name: spindle_speed, register: holding, address: 20, data_type: float32, unit: 1/min}
      - {name: program, register: holding, address: 40, data_type: string, length: 8}
"""


def plant_yaml(state_dir: Path, sim_ports: list[int], dead_port: int, broker_port: int) -> str:
    machines = ""
    for i, port in enumerate(sim_ports):
        machines += f"""
  - id: m{i + 1}
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 0.2
    simulator: {{seed: {i + 1}, time_scale: 60}}
    connection: {{host: 127.0.0.1, port: {port}, timeout: 0.5}}
{POINTS}"""
    machines += f"""
  - id: dead
    area: hall-1
    line: line-2
    adapter: modbus
    poll_interval: 0.2
    connection: {{host: 127.0.0.1, port: {dead_port}, timeout: 0.5}}
{POINTS}"""
    return f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state_dir}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:{broker_port}"}}
machines:{machines}
"""


def body(msg: Any) -> dict[str, Any]:
    """The verified body of an envelope (signature checked against the published JWKS),
    or the plain JSON of a status message."""
    data = json.loads(msg.payload)
    if "signature" not in data:
        return data  # type: ignore[no-any-return]
    assert JWKS, "the gateway must publish its JWKS before any envelope can be checked"
    return verify_envelope(data, JWKS[-1], topic=msg.topic)


JWKS: list[dict[str, Any]] = []


def keys_from(col: Collector) -> None:
    wait_for(lambda: any(m.topic.endswith("/keys") for m in col.snapshot()), 10, "JWKS")
    JWKS.append(json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload))


@pytest.fixture
def gateway(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> Iterator[dict[str, Any]]:
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        plant_yaml(tmp_path / "state", [free_port(), free_port()], free_port(), mosquitto.port)
    )
    log = (tmp_path / "gateway.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "--log-format",
            "json",
            "run",
            "-c",
            str(plant),
            "--with-simulators",
            "--no-console",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    info = {"proc": proc, "plant": plant, "log": log}
    yield info
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def logs(info: dict[str, Any]) -> list[dict[str, Any]]:
    info["log"].flush()
    lines = (info["plant"].parent / "gateway.log").read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"event": "non-json", "line": line})
    return out


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_gateway_publishes_contract_shaped_telemetry_and_state(
    gateway: dict[str, Any], mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
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
    time.sleep(2.5)  # several retry periods
    unavailable = [e for e in logs(gateway) if e.get("event") == "device_unavailable"]
    assert [e["asset"] for e in unavailable] == ["dead"]
    assert not any(m.topic.endswith("/dead/telemetry") for m in col.snapshot())

    # a retained status is what a late subscriber sees
    late = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/gw-1/status")
    (retained,) = _wait_list(late, 1)
    assert retained.retain and body(retained)["state"] == "online"

    # clean stop: offline status, exit 0
    gateway["proc"].send_signal(signal.SIGTERM)
    assert gateway["proc"].wait(timeout=15) == 0
    wait_for(lambda: body(late.snapshot()[-1])["state"] == "offline", 5, "offline status")
    assert not any(
        e.get("level") == "error" or "Traceback" in e.get("line", "") for e in logs(gateway)
    ), logs(gateway)


def _wait_list(col: Collector, n: int) -> list[Any]:
    wait_for(lambda: len(col.snapshot()) >= n, 10, f"{n} messages")
    return col.snapshot()[:n]


@pytest.mark.slow
def test_sighup_refuses_broken_yaml_and_applies_a_good_one(
    gateway: dict[str, Any], mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    wait_for(
        lambda: any(m.topic.endswith("/m1/telemetry") for m in col.snapshot()), 20, "telemetry"
    )
    plant: Path = gateway["plant"]
    good = plant.read_text()
    plant.write_text(good.replace("adapter: modbus", "adapter: modbus\n    bogus: 1", 1))
    gateway["proc"].send_signal(signal.SIGHUP)
    wait_for(
        lambda: any(
            e.get("event") == "reload_rejected_keeping_running_config" for e in logs(gateway)
        ),
        10,
        "reload rejected",
    )
    rejected = next(
        e for e in logs(gateway) if e.get("event") == "reload_rejected_keeping_running_config"
    )
    assert any("machines[0].bogus" in p for p in rejected["problems"])
    n = len(col.snapshot())
    wait_for(lambda: len(col.snapshot()) > n + 3, 10, "telemetry continues after a rejected reload")

    # a valid change: drop machine m2; its telemetry stops, m1 continues
    text = good.split("\n  - id: m2")[0] + "\n  - id: dead" + good.split("\n  - id: dead")[1]
    plant.write_text(text)
    gateway["proc"].send_signal(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in logs(gateway)), 10, "reloaded")
    time.sleep(0.5)
    cut = len(col.snapshot())
    time.sleep(1.5)
    after = col.snapshot()[cut:]
    assert any(m.topic.endswith("/m1/telemetry") for m in after)
    assert not any(m.topic.endswith("/m2/telemetry") for m in after)
    gateway["proc"].send_signal(signal.SIGTERM)
    assert gateway["proc"].wait(timeout=15) == 0
