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
from aas_core3 import jsonization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sparkplug_host import decode, decoder, value_of

from edge.platform_kit.verifier import (
    ChainChecker,
    booking_commitment,
    detached_to_envelope,
    verify_envelope,
    verify_stream,
)
from edge.query import handler
from edge.signing.jws import Signer, b64url_decode, jwk_public
from models.aas import verify_environment
from models.plant import QUERY_METHODS, Nameplate, Plant

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


@pytest.mark.parametrize("case", [c for c in cases("request") if "session" not in c],
                         ids=lambda c: c["name"])
def test_requests_are_answered_as_the_vectors_say(case: dict[str, Any]) -> None:
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


BOOKING_KEYS = {"booking", "reference", "salt", "commitment", "machine", "state", "start",
                "end", "program", "process", "quantity", "reason", "waits_for", "hold_until",
                "created", "updated"}
"""A booking in `reserve`, `release` and `bookings` replies (docs/protocol.md, "Bookings");
`reserve` adds `new`."""
SESSIONS = sorted({c["session"] for c in cases("request") if "session" in c})


def platform_signed(request: dict[str, str]) -> dict[str, Any]:
    """The body of a request, after checking what the gateway checks of its signature."""
    (jwk,) = json.loads((VECTORS / INDEX["platform_jwks"]).read_text())["keys"]
    header = json.loads(b64url_decode(request["protected"]))
    assert header == {"alg": "EdDSA", "kid": jwk["kid"], "typ": "edge-request+json"}
    Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])).verify(
        b64url_decode(request["signature"]),
        f"{request['protected']}.{request['payload']}".encode())
    body: dict[str, Any] = json.loads(b64url_decode(request["payload"]))
    return body


PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def documented(heading: str) -> Any:
    """The first example block after `heading` in docs/protocol.md, as JSON; `{<as oee>}`
    (the `energy` example's window) reads as the `oee` example's window."""
    block = PROTOCOL.split(heading, 1)[1].split("```", 2)[1].removeprefix("json")
    oee_window = json.dumps(documented("\n### oee\n")["window"]) if "<as oee>" in block else ""
    return json.loads(block.replace("{<as oee>}", oee_window))


def same_keys(result: dict[str, Any], doc: dict[str, Any], *nested: str) -> None:
    """`result` has the documented example's keys, and so have its `nested` members."""
    assert set(result) == set(doc), (set(result) ^ set(doc))
    for key in nested:
        assert set(result[key]) == set(doc[key]), (key, set(result[key]) ^ set(doc[key]))


def check_oee(record: dict[str, Any]) -> None:
    """An `oee` record in the shape docs/protocol.md's `oee` stream example has."""
    doc = documented("\n### oee\n")
    same_keys(record, doc, "window", "time", "counts", "losses")
    assert set(record["time"]["downtime"]) == set(doc["time"]["downtime"])


def check_result(method: str, result: dict[str, Any]) -> None:
    """The shape of each method's `result` as docs/protocol.md describes it (its examples,
    read from the file, and the lines beside them)."""
    if method in ("reserve", "release"):
        assert set(result) == BOOKING_KEYS | ({"new"} if method == "reserve" else set())
        owner = ("p1", result["reference"], result["salt"])
        assert booking_commitment(result["booking"], *owner) == result["commitment"]
    elif method == "bookings":
        assert set(result) == {"bookings"} and result["bookings"]
        for booking in result["bookings"]:
            check_result("release", booking)
    elif method == "parts":
        assert set(result) == {"asset", "next", "parts"}
        (part,) = [c for c in cases("envelope") if c["name"] == "part-envelope"]
        for item in result["parts"]:
            assert set(item) == {"part_seq", "envelope", "record"}
            # the envelope published on the part topic, verifiable offline there
            body = verify_envelope(item["envelope"], GATEWAY_JWKS, topic=part["topic"])
            assert body["records"] == [item["record"]]
            assert item["part_seq"] == item["record"]["part_seq"]
            assert item["envelope"] == json.loads((VECTORS / part["file"]).read_bytes())
    elif method == "describe":
        doc = documented("**`describe`**")
        same_keys(result, doc)
        assert result["streams"] == doc["streams"]
        for machine in result["machines"].values():
            same_keys(machine, doc["machines"]["m1"])
            # `part` too with a part_record: the vectors' m1 has one
            assert set(machine["topics"]) == {*doc["machines"]["m1"]["topics"], "part"}
            assert set(machine["nameplate"]) <= set(Nameplate.model_fields)
    elif method == "health":
        doc = documented("**`health`**")
        # the two device blocks only when some device is not up: all are up here
        assert set(result["devices"].values()) == {"up"}
        same_keys(result, {k: v for k, v in doc.items() if not k.startswith("device_")},
                  "losses", "unsignable", "queries")
        assert result["uptime_s"] > 0
    elif method == "oee":
        check_oee(result)
    elif method == "energy":
        doc = documented("**`energy`**")
        same_keys(result, doc, "window", "energy")
        same_keys(result["energy"], doc["energy"], "kwh", "carbon_factor")
        assert result["window"]["kind"] in ("shift", "last_hour", "today", "range")
    elif method == "capacity":
        doc = documented("\n### capacity\n")
        for record in result["machines"].values():
            # `energy_per_part` for a machine with a meter (the table below the example)
            same_keys(record, {**doc, "energy_per_part": None}, "capabilities", "horizon",
                      "freshness", "performance")
            for days in record["energy_per_part"].values():
                for program in days.values():
                    assert set(program) == {"good_parts", "kwh_per_part", "co2e_kg_per_part"}
            for slot in record["free_slots"]:
                assert set(slot) == set(doc["free_slots"][0])
    else:
        assert method == "aas", method
        assert set(result) == {"machines"}
        for env in result["machines"].values():
            # an AAS V3 environment (IDTA-01001-3-0 JSON) that meets the metamodel
            environment = jsonization.environment_from_jsonable(env)
            assert verify_environment(environment) == []
            assert env["assetAdministrationShells"] and env["submodels"]


@pytest.mark.parametrize("name", SESSIONS)
def test_session_replies_verify_chain_and_answer_their_requests(name: str) -> None:
    """Each reply of a session verifies with the platform kit (gateway JWKS, the reply
    topic), chains to the one before on that topic, answers its request's id, and has the
    record `index.json` expects, in the shape docs/protocol.md gives its method."""
    session = [c for c in cases("request") if c.get("session") == name]
    checker = ChainChecker()
    for case in session:
        body = platform_signed(json.loads((VECTORS / case["file"]).read_bytes()))
        assert body == case["expect"]["body"]
        reply = (VECTORS / case["expect"]["reply"]).read_bytes()
        topic = case["reply_topic"]
        finding = checker.feed(reply, GATEWAY_JWKS, topic=topic)
        assert finding.kind == "ok", (case["name"], finding)
        verified = verify_envelope(reply, GATEWAY_JWKS, topic=topic)
        assert (verified["stream"], verified["asset"]) == ("response", None)
        (record,) = verified["records"]
        assert record == case["expect"]["record"]
        assert record["id"] == body["id"]
        if case["expect"]["verdict"] == "ok":
            assert set(record) == {"id", "ok", "result"} and record["ok"] is True
            check_result(body["method"], record["result"])
        else:
            assert set(record) == {"id", "ok", "error"} and record["ok"] is False
            assert set(record["error"]) == {"code", "message"}
            assert record["error"]["code"] == case["expect"]["verdict"]


def test_the_booking_vectors_are_the_examples_of_protocol_md() -> None:
    """docs/protocol.md's `reserve` result and refusal are the session's replies."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    for marker, name in (("reserve-result", "reserve-accepted"),
                         ("reserve-declined", "reserve-declined")):
        block = text.split(f"<!-- example:{marker} -->", 1)[1].split("```json\n", 1)[1]
        documented = json.loads(block.split("```", 1)[0])
        (case,) = [c for c in cases("request") if c["name"] == name]
        assert documented == case["expect"]["record"], marker


def test_every_query_method_has_a_reply_vector() -> None:
    """An independent platform developer has an answered request of each method to test a
    client with (docs/vectors/README.md's table names them)."""
    answered = {json.loads(b64url_decode(json.loads((VECTORS / c["file"]).read_bytes())[
        "payload"]))["method"] for c in cases("request")
        if c["expect"]["verdict"] == "ok" and "reply" in c["expect"]}
    assert answered == set(QUERY_METHODS), set(QUERY_METHODS) ^ answered
    readme = (VECTORS / "README.md").read_text()
    for case in cases("request"):
        if "reply" in case["expect"]:
            assert f"`{case['name']}`" in readme or case["expect"]["reply"] in readme, case
