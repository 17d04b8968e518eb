"""Format `envelope`: the flattened JWS exactly as the sealer stored it (the v1 default)."""

from __future__ import annotations

from edge.egress.formats.base import Encoded


class EnvelopeEncoder:
    """Identity: what the outbox holds is what the broker gets."""

    name = "envelope"
    mqtt311_form = "envelope"

    def encode(self, envelope: bytes) -> Encoded:
        return Encoded(envelope)
