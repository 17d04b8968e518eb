"""docs/vectors: the files are what the generator makes of today's code, and every case gets
its expected verdict from the verifier, the query handler and an independent Sparkplug
decoder."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sparkplug_host import decode, decoder, value_of

from edge.platform_kit.verifier import (
    ChainChecker,
    booking_commitment,
    detached_to_envelope,
    verify_stream,
)
from edge.query import handler
from edge.signing.jws import Signer, b64url_decode, jwk_public
from models.plant import Plant

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "docs" / "vectors"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INDEX = json.loads((VECTORS / "index.json").read_text())
GATEWAY_JWKS = json.loads((VECTORS / INDEX["gateway_jwks"]).read_text())


def test_files_are_what_the_generator_makes() -> None:
    built = generator().build()
    for name, data in built.items():
        assert (VECTORS / name).read_bytes() == data, f"{name} drifted: run generate.py"
    on_disk = {p.relative_to(VECTORS).as_posix() for p in VECTORS.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk - set(built) <= {"generate.py", "README.md"}


def test_the_reply_vector_is_the_worked_example_of_protocol_md() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    block = text.split("<!-- example:query-reply -->", 1)[1].split("```json\n", 1)[1]
    documented = json.loads(block.split("```", 1)[0])
    assert json.loads((VECTORS / "reply-state.json").read_text()) == documented


def cases(fmt: str) -> list[dict[str, Any]]:
    return [c for c in INDEX["cases"] if c["format"] == fmt]


@pytest.mark.parametrize("case", cases("envelope") + cases("json"), ids=lambda c: c["name"])
def test_signed_messages_get_their_verdict(case: dict[str, Any]) -> None:
    payload = (VECTORS / case["file"]).read_bytes()
    if case["format"] == "json":
        assert json.loads(payload) is not None  # plain JSON for any consumer
        envelope: Any = detached_to_envelope(payload, case["user_properties"]["jws"])
    else:
        envelope = payload
    finding = ChainChecker().feed(envelope, GATEWAY_JWKS, topic=case["topic"])
    assert finding.kind == case["expect"]["verdict"], finding
    if "body" in case["expect"]:
        assert json.loads(b64url_decode(json.loads(payload)["payload"]) if case["format"] ==
                          "envelope" else payload) == case["expect"]["body"]


@pytest.mark.parametrize("case", cases("capture"), ids=lambda c: c["name"])
def test_captures_get_their_verdicts(case: dict[str, Any]) -> None:
    lines = (VECTORS / case["file"]).read_text().splitlines()
    checker = ChainChecker()
    kinds = []
    for line in lines:
        item = json.loads(line)
        kinds.append(checker.feed(item["envelope"], GATEWAY_JWKS, topic=item["topic"]).kind)
    assert kinds == case["expect"]["verdicts"]
    assert not verify_stream(lines, GATEWAY_JWKS).ok


def readable(payload: Any) -> dict[str, Any]:
    """A Payload decoded by the test's own protoc build, in the vectors' `expect.payload`
    form: datatypes by their DataType name, no member the message does not set."""
    names = decoder().DataType.Name

    def prop(value: Any) -> dict[str, Any]:
        which = value.WhichOneof("value")
        return {"type": names(value.type), "value": getattr(value, which) if which else None}

    metrics = []
    for m in payload.metrics:
        metric: dict[str, Any] = {"name": m.name} if m.HasField("name") else {}
        metric |= {"alias": m.alias, "timestamp": m.timestamp,
                   "datatype": names(m.datatype), "value": value_of(m)}
        if m.HasField("properties"):
            metric["properties"] = {k: prop(v) for k, v in
                                    zip(m.properties.keys, m.properties.values, strict=True)}
        metrics.append(metric)
    return {"timestamp": payload.timestamp, "seq": payload.seq, "metrics": metrics}


@pytest.mark.parametrize("case", cases("sparkplug_b"), ids=lambda c: c["name"])
def test_sparkplug_payloads_decode_to_their_expected_metrics(case: dict[str, Any]) -> None:
    payload = decode((VECTORS / case["file"]).read_bytes())
    assert readable(payload) == case["expect"]["payload"]


def test_sparkplug_ddata_uses_the_aliases_of_its_dbirth() -> None:
    (birth,) = [c for c in cases("sparkplug_b") if c["name"] == "sparkplug-dbirth"]
    (data,) = [c for c in cases("sparkplug_b") if c["name"] == "sparkplug-ddata"]
    names = {m.alias: m.name for m in decode((VECTORS / birth["file"]).read_bytes()).metrics}
    ddata = decode((VECTORS / data["file"]).read_bytes())
    assert data["topic"] == "spBv1.0/plant-a/DDATA/gw-01/m1"
    assert {names[m.alias]: value_of(m) for m in ddata.metrics} == {
        "Signals/spindle_speed": 1250.0
    }


class StateBackend:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def query_state(self, asset: str | None) -> dict[str, Any]:
        return {"machines": {"m1": self.state}}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} is not asked by the vectors")


@pytest.mark.parametrize("case", cases("request"), ids=lambda c: c["name"])
def test_requests_are_answered_as_the_vectors_say(
    case: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = generator()
    platform = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(gen.PLATFORM_D))
    request = (VECTORS / case["file"]).read_bytes()
    if "body" in case["expect"]:
        assert json.loads(b64url_decode(json.loads(request)["payload"])) == case["expect"]["body"]
    if "reply" not in case["expect"]:
        return  # a request sample only: its signature is checked by the handler cases
    plant = Plant.model_validate({
        "gateway": {"id": "gw-01", "site": "plant-a"},
        "machines": [{"id": "m1", "area": "hall-1", "line": "line-2", "adapter": "modbus",
                      "connection": {}}],
        "platforms": [{"id": "p", "public_key_file": "p.pem", "methods": ["state", "oee"],
                       "machines": ["m1"]}],
    })
    now = datetime.fromisoformat(case["received_at"].replace("Z", "+00:00"))
    monkeypatch.setattr(handler, "utc_now", lambda: now)
    gateway = Signer(Ed25519PrivateKey.from_private_bytes(b64url_decode(gen.GATEWAY_D)))
    state = {**gen.RECORDS["state"][0], "link": "up"}
    answering = handler.QueryHandler(
        plant, StateBackend(state), signer=lambda: gateway,
        keys={jwk_public(platform)["kid"]: (plant.platforms[0], platform.public_key())},
        logger=structlog.get_logger(), clock=lambda: now,
    )
    incoming = handler.Incoming(case["topic"], request, case["reply_topic"], None)
    for _ in range(case.get("sent", 1)):
        reply = answering.handle(incoming)
    assert reply is not None
    assert json.loads(reply.payload) == json.loads((VECTORS / case["expect"]["reply"]).read_bytes())
    record = json.loads(b64url_decode(json.loads(reply.payload)["payload"]))["records"][0]
    if case["expect"]["verdict"] == "ok":
        assert record["ok"] is True
    else:
        assert record["error"] == {"code": case["expect"]["verdict"],
                                   "message": case["expect"]["message"]}


@pytest.mark.parametrize("case", cases("commitment"), ids=lambda c: c["name"])
def test_a_booking_commitment_opens_with_its_salt(case: dict[str, Any]) -> None:
    assert booking_commitment(**case["inputs"]) == case["expect"]["commitment"]
    other = {**case["inputs"], "platform": "someone-else"}
    assert booking_commitment(**other) != case["expect"]["commitment"]
    (bookings,) = [c for c in cases("envelope") if c["name"] == "bookings-envelope"]
    (part,) = [c for c in cases("envelope") if c["name"] == "part-envelope"]
    (record,) = bookings["expect"]["body"]["records"]
    assert record["commitment"] == case["expect"]["commitment"]
    assert (record["platform"], record["reference"]) == (None, None)
    assert part["expect"]["body"]["records"][0]["booking"]["commitment"] == record["commitment"]
    text = (ROOT / "docs" / "protocol.md").read_text()  # the worked example is this case
    assert case["expect"]["commitment"] in text and case["inputs"]["salt"] in text
