"""Format `json`: the body as the payload, its signature as a detached JWS beside it.

Why: any JSON consumer (Node-RED, Telegraf, an EMQX rule, `jq`) reads the payload as it is,
and a consumer that checks signatures still can. The payload is exactly the RFC 8785 bytes
that were signed, so the detached JWS of RFC 7515 Appendix F (`protected..signature`)
verifies against BASE64URL(payload) without any re-canonicalization, and with the same
signature the envelope carries: nothing is signed twice, and `prev` of the next message is
the same hash (of `protected.BASE64URL(payload)`) as in the envelope form.

MQTT 3.1.1 has no user properties: the message then falls back to the envelope (or, when the
destination says `unsigned_on_mqtt311: true`, to the bare body); the sender logs that once.
"""

from __future__ import annotations

import json

from edge.egress.formats.base import Encoded
from edge.signing.jws import b64url_decode
from models.envelope import JWS_PROPERTY

__all__ = ["JWS_PROPERTY", "JsonEncoder"]


class JsonEncoder:
    """Derives the json form from the stored envelope (same protected header and signature)."""

    name = "json"

    def __init__(self, *, unsigned_on_mqtt311: bool = False) -> None:
        self.unsigned_on_mqtt311 = unsigned_on_mqtt311
        self.mqtt311_form = "unsigned body" if unsigned_on_mqtt311 else "envelope"

    def encode(self, envelope: bytes) -> Encoded:
        env = json.loads(envelope)
        body = b64url_decode(env["payload"])
        detached = f"{env['protected']}..{env['signature']}"
        return Encoded(
            body,
            ((JWS_PROPERTY, detached),),
            payload_mqtt311=body if self.unsigned_on_mqtt311 else envelope,
        )
