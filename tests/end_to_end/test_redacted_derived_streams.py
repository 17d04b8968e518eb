"""A plant hides its programs, alarms and counter from a platform (`signals: {deny:
[program*, alarm*, part_count]}`): the records derived from those signals must not carry
them to that platform either (audit round 3, platform side: part records leaked them).

A real gateway in a subprocess, a scripted simulated Modbus machine that makes two parts in
a few seconds (one with an alarm) and its simulated SDM630 meter, two Mosquitto brokers:
destination `a` unfiltered, destination `b` filtered. A platform books the machine with a
program. At `b` the part, capacity and bookings records have no denied key and verify
(signature and chain) on their own; at `a` the same records still carry them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ROOT, GatewayProcess, verified_body, wait_for
from jsonschema import Draft7Validator

from edge.platform_kit.client import query
from edge.platform_kit.verifier import verify_stream

SCRIPT: list[dict[str, Any]] = [
    {"at": 0, "execution": "ready", "program": "O1000", "part_count": 10, "bad_part_count": 0},
    {"at": 1, "execution": "active"},
    {"at": 2, "execution": "interrupted", "alarm_code": 1001, "alarm_text": "spindle overload"},
    {"at": 3, "execution": "active", "alarm_code": 0},
    {"at": 4.5, "execution": "ready", "part_count": 11},  # part 1, with an alarm
    {"at": 5, "execution": "active"},
    {"at": 6.5, "execution": "ready", "part_count": 12},  # part 2
]
DERIVED = ("/m1/part", "/m1/capacity", "/m1/bookings")
SCHEMAS = {"/m1/part": "PartBody", "/m1/capacity": "CapacityBody", "/m1/bookings": "BookingsBody"}
DOC = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())


def jwks(col: Collector) -> dict[str, Any]:
    keys: dict[str, Any] = json.loads(
        next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)
    return keys


def records(col: Collector, suffix: str) -> list[dict[str, Any]]:
    """The verified records of the topic ending in `suffix`, in arrival order."""
    if not any(m.topic.endswith("/keys") for m in col.snapshot()):
        return []
    keys = jwks(col)
    return [r for m in col.snapshot() if m.topic.endswith(suffix)
            for r in verified_body(m.payload, keys, m.topic)["records"]]


def priced(col: Collector) -> bool:
    """An offer with energy per part of program O1000 (both parts recorded)."""
    return any(r.get("energy_per_part", {}).get("7d", {}).get("O1000", {}).get("good_parts")
               == 2 for r in records(col, "/m1/capacity"))


@pytest.mark.slow
def test_a_filtered_destination_gets_derived_records_without_denied_signals(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    broker_a, broker_b = mosquitto_factory(), mosquitto_factory()
    col_a = mqtt_collector(broker_a.host, broker_a.port, "edge/#")
    col_b = mqtt_collector(broker_b.host, broker_b.port, "edge/#")
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    start = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)  # gateway up
    plant = tmp_path / "plant.yaml"
    plant.write_text(f"""gateway:
  id: gw-1
  site: plant-a
  state_dir: {tmp_path / "state"}
  web: {{port: 0}}
  capacity: {{refresh_seconds: 5}}
destinations:
  - {{id: a, url: "mqtt://127.0.0.1:{broker_a.port}"}}
  - {{id: b, url: "mqtt://127.0.0.1:{broker_b.port}",
     signals: {{deny: [program*, alarm*, part_count]}}}}
platforms:
  - {{id: p, public_key_file: p.pem, methods: [reserve]}}
machines:
  - id: m1
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 0.1
    part_record: {{signals: [spindle_load, program_number]}}
    simulator: {{start: "{start.isoformat()}", script: {json.dumps(SCRIPT)}}}
    connection: {{host: 127.0.0.1, port: {free_port()}, timeout: 0.5}}
    points:
      - {{name: execution, register: holding, address: 0, data_type: uint16,
         map: {{0: ready, 1: active, 2: interrupted, 3: feed_hold, 4: stopped}}}}
      - {{name: alarm, register: holding, address: 4, data_type: uint16}}
      - {{name: program_number, register: holding, address: 5, data_type: uint16}}
      - {{name: part_count, register: holding, address: 10, data_type: uint32}}
      - {{name: bad_part_count, register: holding, address: 12, data_type: uint32}}
      - {{name: spindle_load, register: holding, address: 22, data_type: float32, unit: "%"}}
      - {{name: program, register: holding, address: 40, data_type: string, length: 8}}
  - id: m1-meter
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 0.05
    meter_for: m1
    simulator: {{meter: {{initial_kwh: 100}}}}
    energy: {{energy_kwh: import_energy_kwh, power_w: total_power_w}}
    connection: {{host: 127.0.0.1, port: {free_port()}, timeout: 0.5}}
    points:
      - {{name: total_power_w, register: input, address: 0x0034, data_type: float32, unit: W}}
      - {{name: import_energy_kwh, register: input, address: 0x0048, data_type: float32,
         unit: kWh}}
""")
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: len(records(col_a, "/m1/part")) >= 2
                 and len(records(col_b, "/m1/part")) >= 2, 40, "two parts at both brokers")
        booked = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
        reply = asyncio.run(query(broker_a.url, key, "edge/plant-a/gw-1", "reserve", {
            "asset": "m1", "reference": "po-1", "program": "O1000",
            "start": booked.isoformat(), "end": (booked + timedelta(hours=1)).isoformat()},
            wait=15))
        assert reply["ok"], reply
        wait_for(lambda: bool(records(col_a, "/m1/bookings") and records(col_b, "/m1/bookings")),
                 20, "the booking's records at both brokers")
        wait_for(lambda: priced(col_a), 30, "an offer priced per program at a")
        wait_for(lambda: len(records(col_b, "/m1/capacity")) >= len(
            records(col_a, "/m1/capacity")), 20, "as many offers at b")
    finally:
        gw.kill()

    # a: everything, as before
    a_parts, b_parts = records(col_a, "/m1/part")[:2], records(col_b, "/m1/part")[:2]
    assert [p["program"] for p in a_parts] == ["O1000", "O1000"]
    assert [p["machine_count"] for p in a_parts] == [11, 12]
    assert [a["code"] for a in a_parts[0]["alarms"]] == ["1001"]
    assert set(a_parts[0]["signals"]) == {"spindle_load", "program_number"}
    assert all(r["program"] == "O1000" for r in records(col_a, "/m1/bookings"))
    # b: the same parts without what is made of denied signals
    assert [p["part_seq"] for p in b_parts] == [p["part_seq"] for p in a_parts]
    for a, b in zip(a_parts, b_parts, strict=True):
        assert not {"program", "alarms", "machine_count"} & set(b), b
        assert set(b["signals"]) == {"spindle_load"}
        assert b["signals"]["spindle_load"] == a["signals"]["spindle_load"]
        assert b["cycle_time"] == a["cycle_time"] and b["verdict"] == a["verdict"]
    b_bookings = records(col_b, "/m1/bookings")
    assert b_bookings and all("program" not in r and r["booking"] for r in b_bookings)
    b_offers = records(col_b, "/m1/capacity")
    assert b_offers and all("energy_per_part" not in r for r in b_offers)
    assert all("energy_per_part" in r for r in records(col_a, "/m1/capacity"))
    assert "O1000" not in json.dumps([records(col_b, s) for s in DERIVED])
    # the contract allows what is left out, and what is there
    for col in (col_a, col_b):
        keys = jwks(col)
        for m in col.snapshot():
            if m.topic.endswith(DERIVED):
                name = SCHEMAS["/m1/" + m.topic.rsplit("/", 1)[1]]
                Draft7Validator({**DOC, "$ref": f"#/components/schemas/{name}"}).validate(
                    verified_body(m.payload, keys, m.topic))
    # each broker's envelopes verify, signature and unbroken chain, on their own
    for col in (col_a, col_b):
        lines = [json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)})
                 for m in col.snapshot() if m.topic.endswith(DERIVED)]
        report = verify_stream(lines, jwks(col))
        assert report.ok and report.counts.get("broken_chain", 0) == 0, report.to_dict()
