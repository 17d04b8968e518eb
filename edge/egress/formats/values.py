"""Opt-in unsigned per-signal values (`destinations[].values: true`): a Unified Namespace view.

Why: HMIs and SCADA want one retained topic per signal holding its latest value, not a
stream of batches. Each telemetry envelope a destination sends is followed by one retained
message per signal, `{prefix}/{site}/{area}/{line}/{machine}/values/{signal}`, with the
signal's last value in that envelope. These are **unsigned** (no JWS, no `seq`) and say so in
docs/protocol.md; the signed streams stay the evidence. They ride on the outbox rows, so a
backlog replays them in order and the retained value ends as the latest one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from edge.egress.formats.base import Companion, Encoded, PayloadEncoder
from edge.signing.jws import b64url_decode


class ValuesEncoder:
    """Wraps a destination's encoder and adds the per-signal companions to telemetry."""

    def __init__(self, inner: PayloadEncoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.mqtt311_form = inner.mqtt311_form

    def encode(self, envelope: bytes) -> Encoded:
        msg = self.inner.encode(envelope)
        body: dict[str, Any] = json.loads(b64url_decode(json.loads(envelope)["payload"]))
        topic = str(body.get("topic", ""))
        if body.get("stream") != "telemetry" or not topic.endswith("/telemetry"):
            return msg
        base = topic.removesuffix("/telemetry")
        last: dict[str, dict[str, Any]] = {}
        for record in body.get("records", []):
            last[record["signal"]] = record  # records are in time order: the last one wins
        companions = tuple(
            Companion(f"{base}/values/{signal}", json.dumps(
                {k: r.get(k) for k in ("value", "unit", "ts", "quality")},
                separators=(",", ":"), ensure_ascii=False).encode())
            for signal, r in last.items()
        )
        return replace(msg, companions=msg.companions + companions)
