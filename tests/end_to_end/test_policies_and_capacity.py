"""Data sovereignty and capacity offers, checked at two real brokers.

Destination `a` gets everything; destination `b` may not see raw telemetry, machine m2, or
the program and part counts. What `b` may not see must never reach its broker, and what it
does see must still be signed chains that verify.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import GatewayProcess, plant_yaml, verified_body, wait_for

from edge.platform_kit.client import query
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


def policy_plant(tmp_path: Path, broker_a: Mosquitto, broker_b: Mosquitto,
                 free_port: Callable[[], int], booking_start: datetime, booking_end: datetime,
                 extra: str = "") -> Path:
    """Two machines; destination `a` gets everything, `b` only state, oee and capacity, not
    m2, and not the program nor the part count. m1 offers milling and holds one booking."""
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
    plant.write_text(text + extra)
    return plant


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
    plant = policy_plant(tmp_path, broker_a, broker_b, free_port, booking_start, booking_end)
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
        # a's own sender and link: m1's state there does not follow from b's
        wait_for(lambda: any(m.topic.endswith("/m1/state") for m in col_a.snapshot()), 20,
                 "m1's state at a")
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


GATEWAY = "edge/plant-a/gw-1"
PLATFORM = """platforms:
  - {id: p, public_key_file: p.pem, methods: [describe, aas, state, oee, capacity, health,
                                              parts, energy, reserve, bookings]}
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_queries_at_a_destination_obey_its_policy(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    free_port: Callable[[], int],
    workers: int,
) -> None:
    """What `b` may not see on its streams it cannot query at its broker either: m2 is
    answered as an unknown machine, methods of streams it does not take are forbidden, and
    answers lack the program and part count. At `a` the same platform gets everything. With
    `run --workers 2` the parent answers as one process does."""
    broker_a, broker_b = mosquitto_factory(), mosquitto_factory()
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    plant = policy_plant(tmp_path, broker_a, broker_b, free_port, start,
                         start + timedelta(hours=3), PLATFORM)

    def ask(broker: Mosquitto, method: str, wait: float = 15, **params: Any) -> dict[str, Any]:
        return asyncio.run(query(broker.url, key, GATEWAY, method, params, wait=wait))

    def running(broker: Mosquitto) -> bool:
        try:  # not subscribed yet: no answer
            reply = ask(broker, "state", wait=3)
        except TimeoutError:
            return False
        machines = reply.get("result", {}).get("machines", {})
        return bool(machines) and all("execution" in m for m in machines.values())

    gw = GatewayProcess(plant, *(("--workers", str(workers)) if workers > 1 else ())).start()
    try:
        wait_for(lambda: running(broker_a), 60, "state of both machines at a")
        wait_for(lambda: running(broker_b), 30, "state at b")
        at_a = {m: ask(broker_a, m) for m in ("describe", "state", "capacity", "health")}
        at_b = {m: ask(broker_b, m) for m in ("describe", "state", "capacity", "health")}
        hidden = {m: ask(broker_b, m, asset="m2") for m in ("state", "oee", "capacity")}
        unknown = {m: ask(broker_b, m, asset="m9") for m in ("state", "oee", "capacity")}
        oee_m1 = ask(broker_b, "oee", asset="m1")
        forbidden = {m: ask(broker_b, m, **({} if m == "bookings" else {"asset": "m1"}))
                     for m in ("aas", "parts", "bookings")}
        by_process = ask(broker_b, "reserve", process="milling", reference="po-1",
                         duration_minutes=30)
        aas_a = ask(broker_a, "aas", asset="m1")
    finally:
        gw.kill()

    for method, reply in {**at_a, **at_b}.items():
        assert reply["ok"], (method, reply)
    for method in ("describe", "state", "capacity"):
        assert set(at_a[method]["result"]["machines"]) == {"m1", "m2"}, method
        assert set(at_b[method]["result"]["machines"]) == {"m1"}, method
    assert set(at_a["health"]["result"]["devices"]) == {"m1", "m2"}
    assert set(at_b["health"]["result"]["devices"]) == {"m1"}
    assert at_b["describe"]["result"]["streams"] == ["state", "oee", "capacity"]
    assert set(at_b["describe"]["result"]["machines"]["m1"]["topics"]) == {
        "state", "oee", "capacity"}
    # signals: the same keys as the state and capacity streams at b lack
    a_state, b_state = (at["state"]["result"]["machines"]["m1"] for at in (at_a, at_b))
    assert "program" in a_state and "part_count" in a_state
    assert "program" not in b_state and "part_count" not in b_state
    assert "execution" in b_state and "link" in b_state, "allowed fields still answer"
    assert "energy_per_part" not in at_b["capacity"]["result"]["machines"]["m1"]
    # a hidden machine is an unknown one
    for method, reply in hidden.items():
        assert not reply["ok"] and reply["error"]["code"] == "not_found", (method, reply)
        assert reply["error"]["message"] == unknown[method]["error"]["message"].replace(
            "m9", "m2"), method
    assert oee_m1["ok"], oee_m1
    # b takes neither telemetry, part nor bookings
    for method, reply in {**forbidden, "reserve": by_process}.items():
        assert not reply["ok"] and reply["error"]["code"] == "forbidden", (method, reply)
    assert aas_a["ok"], aas_a


def statuses(col: Collector) -> list[dict[str, Any]]:
    """Every `status` that reached the collector's broker, in order."""
    return [json.loads(m.payload) for m in col.snapshot() if m.topic == f"{GATEWAY}/status"]


def status_plant(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto],
                 free_port: Callable[[], int]) -> tuple[Mosquitto, Mosquitto, Path]:
    """Brokers `a` and `b` and the policy plant over them, for the status tests."""
    broker_a, broker_b = mosquitto_factory(), mosquitto_factory()
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    return broker_a, broker_b, policy_plant(tmp_path, broker_a, broker_b, free_port, start,
                                            start + timedelta(hours=3))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_status_at_a_destination_names_only_what_it_may_see(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
    workers: int,
) -> None:
    """The retained status is narrowed per destination as `health` is: at `b` (which hides
    m2) no status names m2, destination `a` or a's broker, neither the birth, the detailed
    status, the ones after `b`'s broker restarted, nor the will the broker publishes when
    the gateway is SIGKILLed; `a` sees both machines and its own entry only. With
    `run --workers 2` the parent's status obeys the same rule."""
    broker_a, broker_b, plant = status_plant(tmp_path, mosquitto_factory, free_port)
    col_a = mqtt_collector(broker_a.host, broker_a.port, f"{GATEWAY}/status")
    col_b = mqtt_collector(broker_b.host, broker_b.port, f"{GATEWAY}/status")

    def detailed(col: Collector, after: int = 0, devices: set[str] | None = None) -> bool:
        return any("destinations" in s and (devices is None or set(s["devices"]) == devices)
                   for s in statuses(col)[after:])

    def offline(col: Collector) -> bool:
        return any(s["state"] == "offline" for s in statuses(col))

    gw = GatewayProcess(plant, *(("--workers", str(workers)) if workers > 1 else ())).start()
    try:
        wait_for(lambda: detailed(col_a, devices={"m1", "m2"}), 60, "a's status with m2")
        wait_for(lambda: detailed(col_b, devices={"m1"}), 30, "b's detailed status")
        before = len(statuses(col_b))
        broker_b.stop()  # no persistence: the retained status is gone with it
        broker_b.start()
        wait_for(lambda: detailed(col_b, after=before), 30, "b's status after its restart")
        gw.signal(signal.SIGKILL)  # the broker publishes the will
        wait_for(lambda: offline(col_a) and offline(col_b), 30, "the will at a and b")
    finally:
        gw.kill()

    at_a, at_b = statuses(col_a), statuses(col_b)
    assert {s["state"] for s in at_b} == {"online", "offline"}
    for s in at_b:
        text = json.dumps(s)
        assert "m2" not in text and f":{broker_a.port}" not in text, s
        assert s["machines"] == ["m1"], s
        assert set(s.get("destinations", {})) <= {"b"}, s  # empty: before workers report
        assert all(a == "outbox_full_losing_data:b" for a in s.get("alarms", [])), s
    for s in at_a:
        assert s["machines"] == ["m1", "m2"], s
        assert set(s.get("destinations", {})) <= {"a"}, s
        assert f":{broker_b.port}" not in json.dumps(s), s
    full = [s for s in at_b if "b" in s.get("destinations", {})]
    assert len(full) >= 2 and all(s["destinations"]["b"]["broker"] ==
                                  f"127.0.0.1:{broker_b.port}" for s in full)
    assert all(s["gateway"] == "gw-1" and s["site"] == "plant-a" for s in at_a + at_b)
    if workers > 1:  # every worker is listed, with only the machines b may see
        assert all(len(s["workers"]) == 2 for s in full)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_narrowing_a_destination_narrows_its_birth_and_will(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
    workers: int,
) -> None:
    """A SIGHUP that makes `a` hide m2 narrows a's birth (published after its broker
    restarted) and its will (registered with that new connection, published on SIGKILL) as
    it narrows the detailed status: with `run --workers 2` the parent re-registers them on
    reload instead of keeping the ones built at its start."""
    broker_a, _, plant = status_plant(tmp_path, mosquitto_factory, free_port)
    col_a = mqtt_collector(broker_a.host, broker_a.port, f"{GATEWAY}/status")
    open_a = f'  - {{id: a, url: "mqtt://127.0.0.1:{broker_a.port}"}}\n'
    assert open_a in plant.read_text()

    def detailed(after: int, devices: set[str]) -> bool:
        return any("destinations" in s and set(s["devices"]) == devices
                   for s in statuses(col_a)[after:])

    gw = GatewayProcess(plant, *(("--workers", str(workers)) if workers > 1 else ())).start()
    try:
        wait_for(lambda: detailed(0, {"m1", "m2"}), 60, "a's status with m2")
        plant.write_text(plant.read_text().replace(
            open_a, open_a.replace("}\n", ", machines: {deny: [m2]}}\n")))
        reloaded = len(statuses(col_a))
        gw.signal(signal.SIGHUP)
        wait_for(lambda: detailed(reloaded, {"m1"}), 30, "a's status without m2")
        restarted = len(statuses(col_a))
        broker_a.stop()  # the new connection's CONNECT carries the will, its birth follows
        broker_a.start()
        wait_for(lambda: detailed(restarted, {"m1"}), 30, "a's status after its restart")
        back = len(statuses(col_a))
        gw.signal(signal.SIGKILL)  # the broker publishes the will
        wait_for(lambda: any(s["state"] == "offline" for s in statuses(col_a)[back:]),
                 30, "the will at a")
    finally:
        gw.kill()

    will = next(s for s in statuses(col_a)[back:] if s["state"] == "offline")
    assert will["machines"] == ["m1"], will
    after = statuses(col_a)[restarted:]
    # mosquitto may send the old link's will as it stops (registered before the reload):
    # what counts is from the new link on
    after = after[next(i for i, s in enumerate(after) if s["state"] == "online"):]
    # the birth too, when the collector was back on the broker in time to see it
    assert all(s["machines"] == ["m1"] and "m2" not in json.dumps(s) for s in after), after
