"""The envelope body of wire contract v1 (docs/protocol.md, "Body"), built in one place.

Signing wraps this body in a JWS; until then (and for anyone reading the body after
verification) this is the shape platforms rely on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from models.sample import Sample, format_ts

ENVELOPE_VERSION = 1
Stream = Literal[
    "telemetry", "state", "oee", "capacity", "bookings", "part", "response", "gap"
]
RETAINED_STREAMS = frozenset({"state", "oee", "capacity"})
JWS_PROPERTY = "jws"
"""MQTT 5 user property carrying a `json` destination's detached JWS (`protected..signature`)."""


def telemetry_record(sample: Sample) -> dict[str, Any]:
    value = sample.value
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # JSON has no NaN/Infinity; RFC 8785 refuses them
    return {
        "signal": sample.signal,
        "value": value,
        "unit": sample.unit,
        "ts": format_ts(sample.ts),
        "quality": sample.quality.value,
    }


def telemetry_records(samples: Iterable[Sample]) -> list[dict[str, Any]]:
    """`[telemetry_record(s) for s in samples]`, built for a whole batch at once.

    Why: this runs for every sample the gateway reads. The samples of one request share
    one timestamp object, so its text is made once per run of them, not looked up per
    sample; `_value_` is the enum's value without the descriptor `.value` goes through.
    tests/models/test_envelope.py holds it equal to `telemetry_record`."""
    out: list[dict[str, Any]] = []
    append = out.append
    isfinite = math.isfinite
    last: datetime | None = None
    text = ""
    for s in samples:
        value = s.value
        if isinstance(value, float) and not isfinite(value):
            value = None
        ts = s.source_ts or s.gateway_ts
        if ts is not last:
            last, text = ts, format_ts(ts)
        append({"signal": s.signal, "value": value, "unit": s.unit, "ts": text,
                "quality": s.quality._value_})
    return out


def envelope_body(
    *,
    gateway: str,
    topic: str,
    asset: str | None,
    stream: Stream,
    seq: int,
    prev: str | None,
    created: datetime,
    records: list[dict[str, Any]],
    historical: bool = False,
) -> dict[str, Any]:
    return {
        "v": ENVELOPE_VERSION,
        "gateway": gateway,
        "topic": topic,
        "asset": asset,
        "stream": stream,
        "seq": seq,
        "prev": prev,
        "created": format_ts(created),
        "historical": historical,
        "records": records,
    }
