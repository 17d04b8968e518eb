"""docs/asyncapi.yaml is a valid AsyncAPI 3.0 document, and it describes what a live gateway
really publishes: every payload captured at real brokers (envelope, json, values, status,
keys, signed queries and replies, Sparkplug) matches a channel and validates against its
message's schema."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import Collector, Mosquitto, Received
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ROOT, GatewayProcess, plant_yaml, wait_for
from jsonschema import Draft7Validator
from sparkplug_host import decode

from edge.platform_kit.client import query

DOC = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
ASYNCAPI_SCHEMA = json.loads((ROOT / "tests/schemas/asyncapi-3.0.0.json").read_text())


def test_document_is_valid_asyncapi_3() -> None:
    errors = sorted(Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(DOC), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_every_component_schema_is_a_valid_json_schema() -> None:
    for schema in DOC["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def validator(ref: str) -> Draft7Validator:
    """A validator for `#/components/...` with the whole document as the $ref root."""
    return Draft7Validator({**DOC, "$ref": ref})


def resolve(ref_or_obj: dict[str, Any]) -> dict[str, Any]:
    node: Any = DOC
    if "$ref" not in ref_or_obj:
        return ref_or_obj
    for part in ref_or_obj["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def channel_of(topic: str) -> str:
    """The channel whose address matches `topic`; the catch-all reply channel last."""
    for name, channel in DOC["channels"].items():
        if name == "reply":
            continue
        pattern = re.sub(r"\\\{[A-Za-z]+\\\}", "[^/]+", re.escape(channel["address"]))
        if re.fullmatch(pattern, topic):
            return str(name)
    return "reply"


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check(msg: Received) -> str:
    """Validate one captured message; returns the message name it matched."""
    channel = DOC["channels"][channel_of(msg.topic)]
    messages = {name: resolve(m) for name, m in channel["messages"].items()}
    props = dict(getattr(msg.properties, "UserProperty", None) or [])
    if msg.topic.startswith("spBv1.0/"):
        decode(msg.payload)  # a protobuf Payload per the vendored .proto
        return f"sparkplug:{msg.topic.split('/')[2]}"
    payload = json.loads(msg.payload)
    if "jws" in props:
        (name, m), = [(n, m) for n, m in messages.items() if "headers" in m]
        validator(m["headers"]["$ref"]).validate(props)
        validator(m["payload"]["$ref"]).validate(payload)
        return name
    if "x-edge-body" in next(iter(messages.values())) and set(payload) == {
        "protected", "payload", "signature"
    }:
        (name, m), = [(n, m) for n, m in messages.items() if "x-edge-body" in m]
        validator(m["payload"]["$ref"]).validate(payload)
        validator(m["x-edge-body"]["$ref"]).validate(json.loads(b64d(payload["payload"])))
        return name
    (name, m), = messages.items()
    validator(m["payload"]["$ref"]).validate(payload)
    return name


@pytest.mark.slow
def test_live_payloads_validate_against_the_document(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    b_env, b_js, b_sp = mosquitto_factory(), mosquitto_factory(), mosquitto_factory()
    cols = [mqtt_collector(b.host, b.port, "#") for b in (b_env, b_js, b_sp)]
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pub.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    dests = (
        f'  - {{id: env, url: "mqtt://127.0.0.1:{b_env.port}", values: true}}\n'
        f'  - {{id: js, url: "mqtt://127.0.0.1:{b_js.port}", format: json}}\n'
        f'  - {{id: sp, url: "mqtt://127.0.0.1:{b_sp.port}", format: sparkplug_b}}\n'
        "platforms:\n  - {id: p, public_key_file: p.pub.pem}\n"
    )
    text = plant_yaml(tmp_path / "state", [free_port()], 0, destinations=dests,
                      gateway_extra=", oee: {publish_every: 1}")
    plant = tmp_path / "plant.yaml"
    plant.write_text(text)

    def seen(col: Collector, *suffixes: str) -> bool:
        topics = {m.topic for m in col.snapshot()}
        return all(any(t.endswith(s) for t in topics) for s in suffixes)

    gw = GatewayProcess(plant).start()
    try:
        streams = ("/telemetry", "/state", "/oee", "/capacity", "/status", "/keys")
        wait_for(lambda: seen(cols[0], *streams, "/values/spindle_speed"), 40, "envelope kinds")
        wait_for(lambda: seen(cols[1], *streams), 40, "json kinds")
        wait_for(lambda: seen(cols[2], "/NBIRTH/gw-1", "/DBIRTH/gw-1/m1", "/DDATA/gw-1/m1"), 40,
                 "sparkplug kinds")
        replies = {}
        for method, params in (("state", {}), ("oee", {"asset": "m1"}), ("capacity", {}),
                               ("health", {}), ("describe", {}), ("oee", {})):
            replies[method] = asyncio.run(
                query(b_env.url, key, "edge/plant-a/gw-1", method, params, wait=15))
    finally:
        gw.kill()
    validator("#/components/schemas/Health").validate(replies["health"]["result"])
    matched: dict[str, int] = {}
    for col in cols:
        for msg in col.snapshot():
            name = check(msg)
            matched[name] = matched.get(name, 0) + 1
    expected = {
        "telemetryEnvelope", "stateEnvelope", "oeeEnvelope", "capacityEnvelope",
        "telemetryJson", "stateJson", "oeeJson", "capacityJson", "value", "status", "keys",
        "queryRequest", "queryResponse", "sparkplug:NBIRTH", "sparkplug:DBIRTH",
        "sparkplug:DDATA",
    }
    assert expected <= set(matched), sorted(expected - set(matched))


def test_every_vector_validates_against_the_document() -> None:
    """docs/vectors holds every stream (gap too, which a healthy live gateway never sends)."""
    vectors = ROOT / "docs" / "vectors"
    index = json.loads((vectors / "index.json").read_text())
    seen = set()
    for case in index["cases"]:
        if case["format"] not in ("envelope", "json") or case["expect"]["verdict"] != "ok":
            continue
        props = SimpleNamespace(UserProperty=list(case.get("user_properties", {}).items()))
        msg = Received(case["topic"], (vectors / case["file"]).read_bytes(), 1, False, props)
        seen.add(check(msg))
    assert {"gapEnvelope", "gapJson", "oeeJson", "capacityEnvelope", "bookingsEnvelope",
            "bookingsJson", "partEnvelope", "partJson"} <= seen, seen
