"""The query worked example in docs/protocol.md must stay true.

A platform developer implements a client from that page alone, so its request has to be
accepted and its reply has to be byte for byte what the gateway sends: the handler runs on
the documented request with both keys of the example (public test vectors) and a clock set
to the documented time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.platform_kit.client import sign_request
from edge.platform_kit.verifier import verify_envelope
from edge.query import handler
from edge.query.nonces import NonceMemory
from edge.signing.jws import Signer, b64url_decode, canonical_json, jwk_public
from models.plant import Plant

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
GATEWAY_KEY = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # RFC 8037 appendix A.1
PLATFORM_KEY = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"  # RFC 8032 test 2
NOW = datetime(2026, 11, 22, 10, 0, 0, 250_000, tzinfo=UTC)
REPLY_TOPIC = "platform/replies/5d1e"


def doc_block(name: str) -> Any:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{name} -->\s*```json\n(.*?)```", text, re.S)
    assert match, f"docs/protocol.md has no example:{name} block"
    return json.loads(match.group(1))


class ExampleBackend:
    """Answers `state` with the machine state the example shows; nothing else is asked."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def query_describe(self) -> dict[str, Any]:
        raise AssertionError("not asked in the example")

    def query_state(self, asset: str | None) -> dict[str, Any]:
        assert asset == "m1"
        return self.state

    def query_oee(self, asset: str, params: Any) -> dict[str, Any] | None:
        raise AssertionError("not asked in the example")

    def query_aas(self, asset: str | None) -> dict[str, Any]:
        raise AssertionError("not asked in the example")

    def query_capacity(self, asset: str | None) -> dict[str, Any]:
        raise AssertionError("not asked in the example")

    def query_health(self) -> dict[str, Any]:
        raise AssertionError("not asked in the example")


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> handler.QueryHandler:
    platform_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(PLATFORM_KEY))
    plant = Plant.model_validate(
        {
            "gateway": {"id": "gw-01", "site": "plant-a"},
            "machines": [
                {"id": "m1", "area": "hall-1", "line": "line-2", "adapter": "modbus",
                 "connection": {}}
            ],
            "platforms": [
                {"id": "platform-a", "public_key_file": "platform-a.pub.pem",
                 "methods": ["state"], "machines": ["m1"]}
            ],
        }
    )
    result = doc_block("query-reply-body")["records"][0]["result"]
    gateway = Signer(Ed25519PrivateKey.from_private_bytes(b64url_decode(GATEWAY_KEY)))
    monkeypatch.setattr(handler, "utc_now", lambda: NOW)  # the reply's `created`
    return handler.QueryHandler(
        plant,
        ExampleBackend(result),
        signer=lambda: gateway,
        keys={jwk_public(platform_key)["kid"]: (plant.platforms[0], platform_key.public_key())},
        logger=structlog.get_logger(),
        clock=lambda: NOW,
    )


def test_the_documented_request_is_what_the_reference_client_signs() -> None:
    platform_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(PLATFORM_KEY))
    assert jwk_public(platform_key) == doc_block("query-platform-jwk")
    request, body = doc_block("query-request"), doc_block("query-body")
    assert sign_request(platform_key, body) == request  # Ed25519 signatures are deterministic
    assert b64url_decode(request["payload"]) == canonical_json(body)


def test_the_gateway_answers_the_documented_reply(example: handler.QueryHandler) -> None:
    request = json.dumps(doc_block("query-request")).encode()
    reply = example.handle(
        handler.Incoming("edge/plant-a/gw-01/query", request, REPLY_TOPIC, b"7f3c2a91d04e5b68")
    )
    assert reply is not None
    assert reply.topic == REPLY_TOPIC and reply.correlation_data == b"7f3c2a91d04e5b68"
    assert json.loads(reply.payload) == doc_block("query-reply")
    body = verify_envelope(reply.payload, doc_block("jwks"), topic=REPLY_TOPIC)
    assert body == doc_block("query-reply-body")


def test_the_documented_replay_and_stale_refusals(example: handler.QueryHandler) -> None:
    request = json.dumps(doc_block("query-request")).encode()
    incoming = handler.Incoming("edge/plant-a/gw-01/query", request, REPLY_TOPIC, None)
    assert example.handle(incoming) is not None
    again = example.handle(incoming)
    assert again is not None
    record = json.loads(b64url_decode(json.loads(again.payload)["payload"]))["records"][0]
    assert record["error"] == {"code": "unauthorized", "message": "nonce already used"}
    example.clock = lambda: datetime(2026, 11, 22, 10, 1, 0, 1000, tzinfo=UTC)
    example.nonces = NonceMemory()  # a fresh nonce memory: only the time window can refuse now
    late = example.handle(incoming)
    assert late is not None
    record = json.loads(b64url_decode(json.loads(late.payload)["payload"]))["records"][0]
    assert record["error"] == {
        "code": "unauthorized",
        "message": "ts outside the accepted window of 60 s",
    }
