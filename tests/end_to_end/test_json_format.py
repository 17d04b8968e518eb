"""`destinations[].format: json` at real Mosquittos, checked with an off-the-shelf JOSE library.

Three destinations see the same plant: `env` (default format), `js` (json over MQTT 5) and
`old` (json over a forced MQTT 3.1.1 link, which must fall back to the envelope, logged once).
The json payloads must parse as plain JSON, be the exact RFC 8785 bytes, and carry a detached
JWS that joserfc verifies; envelopes must be unchanged, and the two forms must carry the very
same signature (one envelope is signed once, whatever the formats).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import Collector, Mosquitto, Received
from e2e import GatewayProcess, plant_yaml, wait_for
from joserfc import jws
from joserfc.jwk import KeySet as JoseKeySet

from edge.platform_kit.capture import verify_live
from edge.platform_kit.verifier import (
    ChainChecker,
    detached_to_envelope,
    verify_detached,
    verify_envelope,
)

DATA_STREAMS = ("/telemetry", "/state", "/oee", "/capacity")


def user_props(msg: Received) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", None) or [])


def data(col: Collector) -> list[Received]:
    return [m for m in col.snapshot() if m.topic.endswith(DATA_STREAMS)]


def jwks_of(col: Collector) -> dict[str, Any]:
    return json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)


def has_all_streams(col: Collector) -> bool:
    topics = {m.topic.rsplit("/", 1)[1] for m in data(col)}
    keys = any(m.topic.endswith("/keys") for m in col.snapshot())
    return keys and {"telemetry", "state", "capacity"} <= topics


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_json_destination_is_plain_json_with_a_detached_signature(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    b_env, b_js, b_old = mosquitto_factory(), mosquitto_factory(), mosquitto_factory()
    col_env = mqtt_collector(b_env.host, b_env.port, "edge/#")
    col_js = mqtt_collector(b_js.host, b_js.port, "edge/#")
    col_old = mqtt_collector(b_old.host, b_old.port, "edge/#")
    dests = (
        f'  - {{id: env, url: "mqtt://127.0.0.1:{b_env.port}"}}\n'
        f'  - {{id: js, url: "mqtt://127.0.0.1:{b_js.port}", format: json, values: true}}\n'
        f'  - {{id: old, url: "mqtt://127.0.0.1:{b_old.port}", format: json,'
        ' protocol: "3.1.1"}\n'
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], 0, destinations=dests))
    gw = GatewayProcess(plant).start()
    try:
        for col in (col_env, col_js, col_old):
            wait_for(lambda c=col: has_all_streams(c), 40, "telemetry, state, capacity and keys")
        wait_for(lambda: len({m.topic for m in col_js.snapshot() if "/values/" in m.topic}) >= 6,
                 20, "the values of the six signals")
        # logged once the broker acknowledged the first fallback: col_old may have that
        # message before the gateway has the PUBACK
        wait_for(lambda: bool(gw.events("egress_format_fallback")), 10,
                 "the fallback of `old` in the log")
    finally:
        gw.kill()

    # `edge-gateway verify --broker` checks json messages as the envelopes they stand for
    # (here the retained state, oee and capacity, with their jws user property)
    report = asyncio.run(verify_live(b_js.url, "edge/#", 2.0, out=io.StringIO()))
    assert report.ok and report.counts["ok"] >= 2, report.to_dict()

    # values: true: one unsigned retained message per signal, the signal's latest value
    later = mqtt_collector(b_js.host, b_js.port, "edge/+/+/+/+/values/#")
    wait_for(lambda: len(later.snapshot()) >= 6, 10, "six retained values")
    retained = {m.topic.rsplit("/", 1)[1]: m for m in later.snapshot()}
    assert {"spindle_speed", "execution", "part_count"} <= set(retained)
    assert all(m.retain for m in retained.values())
    speed = json.loads(retained["spindle_speed"].payload)
    assert set(speed) == {"value", "unit", "ts", "quality"} and speed["unit"] == "1/min"
    telemetry = [json.loads(m.payload) for m in data(col_js) if m.topic.endswith("/telemetry")]
    readings = [{k: r[k] for k in speed}
                for b in telemetry for r in b["records"] if r["signal"] == "spindle_speed"]
    # the latest value that went out (the kill may fall between an envelope and its values)
    assert speed in readings[-2:]
    assert not [m for m in col_env.snapshot() if "/values/" in m.topic]

    jwks = jwks_of(col_js)
    jose_keys = JoseKeySet.import_key_set(jwks)

    # json: the payload is the body itself, canonical, readable by any JSON parser
    checker = ChainChecker()
    by_topic_seq: dict[tuple[str, int], dict[str, str]] = {}
    for msg in data(col_js):
        body = json.loads(msg.payload)
        assert body["topic"] == msg.topic and body["v"] == 1
        assert rfc8785.dumps(body) == msg.payload, "json payload is not the RFC 8785 bytes"
        detached = user_props(msg)["jws"]
        _protected, empty, _sig = detached.split(".")
        assert empty == "", "not a detached JWS (RFC 7515 Appendix F)"
        # an off-the-shelf JOSE library, given the payload bytes as the detached content
        verified = jws.deserialize_compact(
            detached, jose_keys, algorithms=["EdDSA"], payload=msg.payload
        )
        assert verified.payload == msg.payload
        assert verify_detached(msg.payload, detached, jwks, topic=msg.topic) == body
        envelope = detached_to_envelope(msg.payload, detached)
        by_topic_seq[(msg.topic, body["seq"])] = envelope
        assert checker.feed(envelope, jwks, topic=msg.topic).kind in ("ok", "duplicate")
    assert checker.report().ok

    # envelope: unchanged (flattened JWS, no jws property) and signed exactly once: the
    # json destination carried the same protected header and signature
    matched = 0
    for msg in data(col_env):
        env = json.loads(msg.payload)
        assert set(env) == {"protected", "payload", "signature"}
        assert "jws" not in user_props(msg)
        body = verify_envelope(env, jwks, topic=msg.topic)
        twin = by_topic_seq.get((msg.topic, body["seq"]))
        if twin is not None:
            assert twin == env
            matched += 1
    assert matched > 0

    # json over MQTT 3.1.1: no user properties, so the envelope, never the unsigned body
    for msg in data(col_old):
        env = json.loads(msg.payload)
        assert set(env) == {"protected", "payload", "signature"}
        verify_envelope(env, jwks, topic=msg.topic)
    fallbacks = gw.events("egress_format_fallback")
    assert [e["destination"] for e in fallbacks] == ["old"], fallbacks
    assert fallbacks[0]["format"] == "json" and fallbacks[0]["sent_as"] == "envelope"
