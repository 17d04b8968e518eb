"""Payload formats of a destination (`destinations[].format`, docs/protocol.md "Payload formats").

Every format starts from the one signed envelope the sealer stored per destination in the
outbox, so a format never signs twice and store-and-forward works the same for all:

* `envelope` (`EnvelopeEncoder`): the stored flattened JWS as it is.
* `json` (`JsonEncoder`): the body's RFC 8785 bytes as the payload, the same signature as a
  detached JWS in an MQTT 5 user property.
* `values: true` (`ValuesEncoder`) adds unsigned retained per-signal companions to either.
* `sparkplug_b` is not a per-row encoding (it needs births, aliases and its own sequence):
  `edge.egress.formats.sparkplug` holds its session.
"""

from __future__ import annotations

from edge.egress.formats.base import Companion, Encoded, PayloadEncoder
from edge.egress.formats.envelope import EnvelopeEncoder
from edge.egress.formats.json_detached import JWS_PROPERTY, JsonEncoder
from edge.egress.formats.values import ValuesEncoder
from models.plant import Destination

__all__ = [
    "JWS_PROPERTY",
    "Companion",
    "Encoded",
    "EnvelopeEncoder",
    "JsonEncoder",
    "PayloadEncoder",
    "ValuesEncoder",
    "encoder_for",
]


def encoder_for(destination: Destination) -> PayloadEncoder:
    """The per-row encoder of a destination whose format is `envelope` or `json`, with the
    unsigned per-signal values added when the destination asks for them."""
    encoder: PayloadEncoder
    if destination.format == "json":
        encoder = JsonEncoder(unsigned_on_mqtt311=destination.unsigned_on_mqtt311)
    elif destination.format == "envelope":
        encoder = EnvelopeEncoder()
    else:
        raise ValueError(f"format {destination.format!r} has no per-row encoder")
    return ValuesEncoder(encoder) if destination.values else encoder
