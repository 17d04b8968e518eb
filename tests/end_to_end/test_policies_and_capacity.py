"""Data sovereignty and capacity offers, checked at two real brokers.

Destination `a` gets everything; destination `b` may not see raw telemetry, machine m2, or
the program and part counts. What `b` may not see must never reach its broker, and what it
does see must still be signed chains that verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, verified_body, wait_for

from edge.platform_kit.verifier import verify_stream


def jwks(col: Collector) -> dict[str, Any]:
    return json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)


def fresh_offer(col: Collector) -> bool:
    """An m1 capacity offer computed after samples arrived (the first may precede them)."""
    msgs = col.snapshot()
    if not any(m.topic.endswith("/keys") for m in msgs):
        return False
    for m in msgs:
        if m.topic.endswith("/m1/capacity"):
            record = verified_body(m.payload, jwks(col), m.topic)["records"][0]
            if record["freshness"]["last_sample"] is not None:
                return True
    return False


@pytest.mark.slow
def test_policies_withhold_data_and_capacity_is_offered(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    broker_a, broker_b = mosquitto_factory(), mosquitto_factory()
    col_a = mqtt_collector(broker_a.host, broker_a.port, "edge/#")
    col_b = mqtt_collector(broker_b.host, broker_b.port, "#")
    booking_start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    booking_end = booking_start + timedelta(hours=3)
    (tmp_path / "bookings.yaml").write_text(
        f"- {{start: '{booking_start.isoformat()}', end: '{booking_end.isoformat()}', "
        "reference: PO-4711}\n"
    )
    dests = (
        f'  - {{id: a, url: "mqtt://127.0.0.1:{broker_a.port}"}}\n'
        f'  - {{id: b, url: "mqtt://127.0.0.1:{broker_b.port}", streams: [state, oee, capacity],\n'
        "     machines: {deny: [m2]}, signals: {deny: [program*, part_count]}}\n"
    )
    text = plant_yaml(tmp_path / "state", [free_port(), free_port()], 0, destinations=dests)
    text = text.replace(
        "  - id: m1\n",
        "  - id: m1\n    capabilities: {processes: [Milling, 5-axis], materials: [steel],"
        " work_envelope_mm: {x: 500, y: 400, z: 350}, certifications: [ISO 9001]}\n"
        "    bookings_file: bookings.yaml\n",
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(text)
    gw = GatewayProcess(plant).start()
    try:
        for col in (col_a, col_b):
            wait_for(lambda c=col: fresh_offer(c), 30, "capacity offer with data")
            wait_for(
                lambda c=col: any(m.topic.endswith("/m1/capacity") for m in c.snapshot()),
                30,
                "capacity offer",
            )
        wait_for(
            lambda: any(m.topic.endswith("/m2/telemetry") for m in col_a.snapshot()),
            20,
            "m2 telemetry at a",
        )
        wait_for(
            lambda: sum(m.topic.endswith("/m1/state") for m in col_b.snapshot()) >= 2,
            30,
            "state changes at b",
        )
    finally:
        gw.kill()

    a_msgs, b_msgs = col_a.snapshot(), col_b.snapshot()
    # what b must never see
    assert not [m.topic for m in b_msgs if m.topic.endswith("/telemetry")]
    assert not [m.topic for m in b_msgs if "/m2/" in m.topic]
    b_bodies = [
        verified_body(m.payload, jwks(col_b), m.topic)
        for m in b_msgs
        if m.topic.endswith(("/state", "/oee", "/capacity"))
    ]
    b_states = [r for body in b_bodies if body["stream"] == "state" for r in body["records"]]
    assert b_states and all("program" not in r and "part_count" not in r for r in b_states)
    assert all("execution" in r for r in b_states), "allowed fields still arrive"
    # a sees everything
    a_states = [
        r
        for m in a_msgs
        if m.topic.endswith("/m1/state")
        for r in verified_body(m.payload, jwks(col_a), m.topic)["records"]
    ]
    assert a_states and all("program" in r and "part_count" in r for r in a_states)
    # each broker's chains verify on their own
    for col in (col_a, col_b):
        lines = [
            json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)})
            for m in col.snapshot()
            if m.topic.endswith(("/telemetry", "/state"))
        ]
        report = verify_stream(lines, jwks(col))
        assert report.ok, report.to_dict()

    # the capacity offer
    offer = [
        verified_body(m.payload, jwks(col_b), m.topic)["records"][0]
        for m in b_msgs
        if m.topic.endswith("/m1/capacity")
    ][-1]
    assert offer["machine"] == "m1"
    assert offer["capabilities"]["processes"] == ["milling", "5-axis"]
    assert offer["freshness"]["last_sample"] is not None
    assert set(offer["performance"]) == {"7d", "30d"}
    slots = [
        (
            datetime.fromisoformat(s["start"].replace("Z", "+00:00")),
            datetime.fromisoformat(s["end"].replace("Z", "+00:00")),
        )
        for s in offer["free_slots"]
    ]
    assert slots, "a 24/7 calendar with one booking leaves free time"
    assert all(end <= booking_start or start >= booking_end for start, end in slots)
    assert offer["free_hours"] == pytest.approx(14 * 24 - 3, abs=0.2)
