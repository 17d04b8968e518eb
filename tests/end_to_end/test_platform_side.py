"""What a platform integrator reads off a live gateway, checked against the contract documents
alone (docs/protocol.md, docs/asyncapi.yaml, docs/sparkplug.md): audit round 3, platform side.

A real gateway in a subprocess, the project's simulators over real sockets, Mosquitto.

* A machine with an energy meter: its `oee` records carry the `energy` block docs/protocol.md
  describes, and they validate against docs/asyncapi.yaml's `OeeBody` (which refused the
  block). `describe` lists for the meter only the topics it publishes: an energy meter has no
  `oee` or `capacity` topic and is not bookable (docs/protocol.md, "Topics", "capacity").
  A request signed with an off-the-shelf JOSE library (joserfc) from docs/protocol.md alone,
  its header and body not in RFC 8785 form ("the gateway does not require canonical bytes
  for requests"; docs/platform-kit.md said a body "must" be canonical), is answered, and
  the reply verifies with joserfc against the retained JWKS.
* With worker processes the parent's status says a device's change within seconds, as one
  process does, not only every 30 s.
* A reload that restarts the egress side keeps the Sparkplug edge node's session numbering:
  the next NBIRTH carries the next `bdSeq` (docs/sparkplug.md: "grows by one per connection
  attempt"; Sparkplug 3.0 requires it), not 0 again, and aliases stay as they were.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Collector, Mosquitto, wait_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from e2e import ROOT, GatewayProcess, demo_plant_on_free_ports, plant_yaml, wait_for
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet, OKPKey
from jsonschema import Draft7Validator
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sparkplug_host import SparkplugHost

from edge.platform_kit.client import query
from models.sample import format_ts, utc_now

DOC = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())


def last_status(col: Collector) -> dict[str, Any]:
    """The last status the collector received (an empty dict before the first)."""
    msgs = col.snapshot()
    return json.loads(msgs[-1].payload) if msgs else {}  # type: ignore[no-any-return]


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.slow
def test_a_metered_machine_as_the_contract_describes_it(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/+/+/+/mill-01/oee")
    keys = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/gw-01/keys")
    replies = mqtt_collector(mosquitto.host, mosquitto.port, "audit/replies/1")
    path = demo_plant_on_free_ports(tmp_path, mosquitto.url, {"oee": {"publish_every": 1}})
    plant = yaml.safe_load(path.read_text())
    plant["machines"] = [m for m in plant["machines"] if m["id"] in ("mill-01", "mill-01-meter")]
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pub.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    plant["platforms"] = [{"id": "p", "public_key_file": "p.pub.pem"}]
    path.write_text(yaml.safe_dump(plant, sort_keys=False))

    def oee_with_energy() -> list[dict[str, Any]]:
        bodies = [json.loads(b64d(json.loads(m.payload)["payload"])) for m in col.snapshot()]
        return [b for b in bodies if "energy" in b["records"][0]]

    gw = GatewayProcess(path).start()
    try:
        wait_for(lambda: bool(oee_with_energy()), 60, "an oee record with its energy block")
        described = asyncio.run(query(mosquitto.url, key, "edge/plant-a/gw-01", "describe", {},
                                      wait=15))
        ask_as_an_independent_client(key, replies)
        wait_for(lambda: bool(replies.snapshot()), 15, "the reply to a joserfc-signed request")
    finally:
        gw.kill()
    jwks = KeySet.import_key_set(json.loads(keys.snapshot()[-1].payload))
    reply = replies.snapshot()[0]
    assert reply.properties.CorrelationData == b"audit-corr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc: "EdDSA" is RFC 9864-deprecated
        verified = jws.deserialize_json(json.loads(reply.payload), jwks, algorithms=["EdDSA"])
    record = json.loads(verified.payload)["records"][0]
    assert record["id"] == "audit-1" and record["ok"], record
    assert set(record["result"]["machines"]) == {"mill-01"}
    Draft7Validator({**DOC, "$ref": "#/components/schemas/OeeBody"}).validate(
        oee_with_energy()[0])
    machines = described["result"]["machines"]
    assert set(machines["mill-01"]["topics"]) == {
        "telemetry", "state", "oee", "capacity", "bookings", "part"}
    assert set(machines["mill-01-meter"]["topics"]) == {"telemetry", "state"}


def ask_as_an_independent_client(key: Ed25519PrivateKey, replies: Collector) -> None:
    """`state` of mill-01, signed with joserfc from docs/protocol.md ("The request"): header
    members in no particular order, the body indented, MQTT 5 Response Topic and Correlation
    Data; published on the collector's own paho connection."""
    okp = OKPKey.import_key(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    header = {"typ": "edge-request+json", "kid": okp.thumbprint(), "alg": "EdDSA"}
    body = {"method": "state", "params": {"asset": "mill-01"}, "id": "audit-1",
            "ts": format_ts(utc_now()), "nonce": secrets.token_urlsafe(16)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        request = jws.serialize_json({"protected": header}, json.dumps(body, indent=1), okp,
                                     algorithms=["EdDSA"])
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = "audit/replies/1", b"audit-corr"
    replies.client.publish("edge/plant-a/gw-01/query", json.dumps(request), qos=1,
                           properties=props)


@pytest.mark.slow
def test_a_reload_continues_the_sparkplug_session(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "spBv1.0/#")
    plant = tmp_path / "plant.yaml"

    def write(keepalive: int) -> None:
        dests = (f'  - {{id: sp, url: "mqtt://127.0.0.1:{mosquitto.port}", format: sparkplug_b,'
                 f" keepalive: {keepalive}}}\n")
        plant.write_text(plant_yaml(tmp_path / "state", [sim_port], 0, destinations=dests))

    sim_port = free_port()
    write(30)
    host = SparkplugHost("plant-a", "gw-1")
    done = 0

    def pump() -> None:
        nonlocal done
        msgs = col.snapshot()
        for m in msgs[done:]:
            host.feed(m.topic, m.payload)
        done = len(msgs)

    def until(predicate: Callable[[], bool], what: str, within: float = 30) -> None:
        wait_for(lambda: (pump(), predicate())[1], within, what)

    def aliases() -> dict[int, str]:
        device = host.devices.get("m1")
        return dict(device.names) if device is not None else {}

    gw = GatewayProcess(plant).start()
    try:
        until(lambda: "Signals/spindle_speed" in aliases().values(), "m1 born with data")
        before = aliases()
        write(31)  # a destination setting changed: the reload restarts the egress side
        gw.signal(signal.SIGHUP)
        until(lambda: len(host.nbirths) == 2, "NBIRTH of the session after the reload")
        until(lambda: "Signals/spindle_speed" in aliases().values()
              and host.devices["m1"].alive, "m1 born again")
        gw.signal(signal.SIGTERM)
        until(lambda: len(host.ndeaths) == 2, "NDEATH of the clean stop")
        assert gw.wait() == 0
    finally:
        gw.kill()
    # one process, two MQTT connections: bdSeq 0, then 1 (each NDEATH its session's)
    assert host.nbirths == [0, 1]
    assert host.ndeaths == [0, 1]
    after = aliases()
    assert {a: n for a, n in after.items() if a in before} == {
        a: n for a, n in before.items() if a in after}
    assert not [e for e in gw.logs() if e.get("level") == "error"]


@pytest.mark.slow
def test_workers_status_says_a_device_change_within_seconds(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    """docs/protocol.md, Status: the detailed status goes out "within a second of any device
    changing state", and with worker processes "the parent publishes this status". The
    parent published only every 30 s (and when a worker started), so for 30 s after a start
    the retained status said every device was `connecting` and every link down."""
    sim_port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus_server", "--port", str(sim_port),
         "--time-scale", "60", "--seed", "3"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port("127.0.0.1", sim_port), "simulator did not start"
        plant = tmp_path / "plant.yaml"
        plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port,
                                    dead_port=sim_port))
        col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/gw-1/status")
        status = partial(last_status, col)

        gw = GatewayProcess(plant, "--workers", "2").start()
        try:
            wait_for(lambda: status().get("devices") == {"dead": "up", "m1": "up"}
                     and status()["destinations"]["local"]["connected"], 15,
                     "a status saying both devices are up and the link connected")
            sim.kill()
            wait_for(lambda: status().get("devices", {}).get("dead") == "down", 15,
                     "a status saying the device went down")
        finally:
            gw.kill()
    finally:
        sim.kill()
        sim.wait()


@pytest.mark.slow
def test_workers_status_carries_the_data_loss_alarm(
    tmp_path: Path, mosquitto: Mosquitto, mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector], free_port: Callable[[], int],
) -> None:
    """docs/protocol.md, Status: `alarms` holds `outbox_full_losing_data:<destination id>`
    while a destination loses data; with worker processes the parent's status had no
    `alarms` at all, so a platform watching for the alarm never saw it. Here a destination
    whose broker is down fills its smallest outbox (64 KiB, drop_oldest) within seconds. The
    alarm is that destination's own: its broker, once back, gets a status carrying it (the
    alarm stays up until one has gone out on its link), the other destination's never does."""
    gone = mosquitto_factory(start=False)
    dests = (f'  - {{id: local, url: "mqtt://127.0.0.1:{mosquitto.port}"}}\n'
             f'  - {{id: gone, url: "mqtt://127.0.0.1:{gone.port}",'
             " outbox: {max_bytes: 65536}}\n")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port(), free_port()], 0,
                                destinations=dests))
    topic = "edge/plant-a/gw-1/status"
    col = mqtt_collector(mosquitto.host, mosquitto.port, topic)

    def statuses(c: Collector) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in c.snapshot()]

    def alarmed(s: dict[str, Any]) -> bool:
        return "outbox_full_losing_data:gone" in s.get("alarms", []) \
            and s["destinations"]["gone"]["dropped"] > 0

    gw = GatewayProcess(plant, "--workers", "2").start()
    try:
        wait_for(lambda: bool(gw.events("outbox_full_losing_data")), 60,
                 "the alarm of the destination losing data")
        gone.start()
        col_gone = mqtt_collector(gone.host, gone.port, topic)
        wait_for(lambda: any(alarmed(s) for s in statuses(col_gone)), 90,
                 "the alarm at the destination's broker once it is back")
        # local's link is its own: a detailed status there does not follow from gone's
        wait_for(lambda: any("destinations" in s for s in statuses(col)), 30,
                 "a detailed status at the other destination's broker")
        at_gone = next(s for s in statuses(col_gone) if alarmed(s))
        assert set(at_gone["destinations"]) == {"gone"}
        Draft7Validator({**DOC, "$ref": "#/components/schemas/Status"}).validate(at_gone)
    finally:
        gw.kill()
    at_local = statuses(col)
    assert any("destinations" in s for s in at_local)
    for s in at_local:
        assert "gone" not in json.dumps(s), s
        assert set(s.get("destinations", {})) <= {"local"}, s
