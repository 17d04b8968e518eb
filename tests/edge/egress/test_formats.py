"""Per-row payload formats: the json form is the stored envelope, split, not signed again."""

from __future__ import annotations

import json

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.formats import EnvelopeEncoder, JsonEncoder, encoder_for
from edge.platform_kit.verifier import (
    BadSignature,
    Malformed,
    detached_to_envelope,
    link_hash,
    verify_detached,
)
from edge.signing.jws import Signer, jwks
from models.plant import Destination

BODY = {"v": 1, "gateway": "gw", "topic": "edge/s/a/l/m/state", "asset": "m", "stream": "state",
        "seq": 1, "prev": None, "created": "2026-11-22T10:00:00.000Z", "historical": False,
        "records": [{"execution": "active", "value": 1200.0}]}


@pytest.fixture
def signed() -> tuple[bytes, dict[str, list[dict[str, str]]]]:
    key = Ed25519PrivateKey.generate()
    env = Signer(key).sign_body(BODY)
    return json.dumps(env).encode(), jwks([key])


def test_json_form_is_the_canonical_body_and_the_same_signature(
    signed: tuple[bytes, dict[str, list[dict[str, str]]]],
) -> None:
    stored, keys = signed
    msg = JsonEncoder().encode(stored)
    assert msg.payload == rfc8785.dumps(BODY)
    (name, detached), = msg.user_properties
    env = json.loads(stored)
    assert name == "jws" and detached == f"{env['protected']}..{env['signature']}"
    assert verify_detached(msg.payload, detached, keys, topic=BODY["topic"]) == BODY
    assert link_hash(detached_to_envelope(msg.payload, detached)) == link_hash(env)
    assert msg.payload_mqtt311 == stored  # 3.1.1: the envelope, signed
    assert JsonEncoder(unsigned_on_mqtt311=True).encode(stored).payload_mqtt311 == msg.payload


def test_tampered_or_reattached_json_is_refused(
    signed: tuple[bytes, dict[str, list[dict[str, str]]]],
) -> None:
    stored, keys = signed
    msg = JsonEncoder().encode(stored)
    (_, detached), = msg.user_properties
    with pytest.raises(BadSignature):
        verify_detached(msg.payload.replace(b"active", b"ready!"), detached, keys)
    env = json.loads(stored)
    with pytest.raises(Malformed):  # an attached compact JWS is not the detached form
        verify_detached(msg.payload, f"{env['protected']}.{env['payload']}.{env['signature']}",
                        keys)


def test_envelope_format_is_unchanged_and_the_default(
    signed: tuple[bytes, dict[str, list[dict[str, str]]]],
) -> None:
    stored, _ = signed
    dest = Destination(id="d", url="mqtt://h")
    assert dest.format == "envelope"
    assert isinstance(encoder_for(dest), EnvelopeEncoder)
    msg = EnvelopeEncoder().encode(stored)
    assert (msg.payload, msg.user_properties, msg.payload_mqtt311) == (stored, (), None)
    with pytest.raises(ValueError, match="no per-row encoder"):
        encoder_for(Destination(id="d", url="mqtt://h", format="sparkplug_b"))
