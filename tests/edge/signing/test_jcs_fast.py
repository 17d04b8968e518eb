"""The gateway's fast canonical JSON (`edge.signing.jcs`) is byte-identical to `rfc8785`.

Why: every envelope signature covers these bytes, and the platform-side verifier
re-canonicalizes with `rfc8785` alone; one differing byte on one odd float or key and a
platform rejects an honest envelope. So equality is checked, not assumed: hypothesis over
the body schema (models/envelope.py shapes) with floats drawn from the whole double range
and the edges of ECMAScript number formatting, strings from all of Unicode (controls,
non-ASCII, astral) and keys that sort differently by UTF-16 code units than by code points;
and for values outside the proven shapes, that the fallback gives rfc8785's bytes or error.
"""

from __future__ import annotations

import enum
import math
import sys
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge.signing.jcs import canonical_json, es6_number
from edge.signing.jws import Signer, b64url_decode
from models.envelope import envelope_body, telemetry_record
from models.sample import Quality, Sample

EDGE_FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1e21, 1e21 * (1 - 2**-52), 9.999999999999999e20, 1e20,
    1e-7, 1.0000000000000001e-7, 9.999999999999999e-8, 1e-6, 1e-5, 1e-4, 9.999999999999999e-5,
    5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,  # min normal, subnormal
    sys.float_info.max, -sys.float_info.max, 2.0**53, 2.0**53 + 2, 2.0**53 - 1, 2.0**63,
    1e15, 1e16, 1e16 + 2, 123456789012345680.0, 4.35, 0.000001234, 1.5e300, 333333333.3333333,
]

# Keys: plain ASCII, non-ASCII BMP, the private-use area (U+E000..) and astral characters,
# whose relative order differs by UTF-16 code units and by code points.
key_chars = st.one_of(
    st.characters(max_codepoint=0x7F),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF, exclude_categories=("Cs",)),
    st.characters(min_codepoint=0x10000),
    st.characters(exclude_categories=("Cs",)),
)
keys = st.text(key_chars, max_size=6)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGE_FLOATS),
    st.floats(min_value=-1e22, max_value=1e22, allow_nan=False),
    st.floats(min_value=-1e-3, max_value=1e-3, allow_nan=False),
    st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
    st.integers(min_value=-1000, max_value=1000).map(float),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=30,
)

records = st.fixed_dictionaries(
    {
        "signal": texts,
        "value": st.one_of(st.none(), st.booleans(), numbers, texts),
        "unit": st.one_of(st.none(), texts),
        "ts": st.just("2026-12-06T06:54:54.772Z"),
        "quality": st.sampled_from(["good", "uncertain", "bad"]),
    }
)
state_records = st.dictionaries(keys, scalars, max_size=8)
bodies = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "gateway": texts,
        "topic": texts,
        "asset": st.one_of(st.none(), texts),
        "stream": st.sampled_from(["telemetry", "state", "oee", "capacity", "response"]),
        "seq": st.integers(min_value=1, max_value=2**53 - 1),
        "prev": st.one_of(st.none(), texts),
        "created": st.just("2026-12-06T06:54:54.772Z"),
        "historical": st.booleans(),
        "records": st.one_of(st.lists(records, max_size=8), st.lists(state_records, max_size=4),
                             st.lists(json_values, max_size=4)),
    }
)


@settings(max_examples=600, deadline=None)
@given(bodies)
def test_bodies_are_byte_identical_to_rfc8785(body: dict[str, Any]) -> None:
    assert canonical_json(body) == rfc8785.dumps(body)


@settings(max_examples=600, deadline=None)
@given(json_values)
@example({"\ue000": 1, "\U0001f600": 2, "a": [{"\uffff": None, "\U00010000": 0.5}]})
@example({"a": [1.0, -0.0, 1e21, 1e-7, 5e-324, sys.float_info.max, "\x00\x1f\x7f\u2028"]})
def test_any_json_value_is_byte_identical_to_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(EDGE_FLOATS)))
def test_float_layout_is_ecmascript(f: float) -> None:
    assert es6_number(f).encode() == rfc8785.dumps(f)
    assert canonical_json(f) == rfc8785.dumps(f)
    assert float(es6_number(f)) == f  # round-trips: no digit lost


@pytest.mark.parametrize(
    ("f", "text"),
    [(1e21, "1e+21"), (1e20, "100000000000000000000"), (1e-7, "1e-7"), (1e-6, "0.000001"),
     (-0.0, "0"), (5e-324, "5e-324"), (sys.float_info.max, "1.7976931348623157e+308"),
     (2.0**53, "9007199254740992"), (1.5, "1.5"), (-1e-4, "-0.0001"), (100.0, "100")],
)
def test_known_ecmascript_layouts(f: float, text: str) -> None:
    # ECMAScript Number.prototype.toString answers, as any browser console prints them.
    assert es6_number(f) == text


class Colour(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    AUTO = "automatic"


@pytest.mark.parametrize(
    "value",
    [(1, 2), {"a": (1.5, "x")}, Colour.RED, {"k": Colour.RED}, {1: "x"}, math.nan, [math.inf],
     Mode.AUTO, {Mode.AUTO: [Mode.AUTO]}, True, None,
     2**53, -(2**53), {"a": 2**60}, "\ud800", {"\udfff": 1}, b"bytes", object()],
    ids=repr,
)
def test_outside_the_proven_shapes_falls_back_to_rfc8785(value: Any) -> None:
    try:
        expected: bytes | type[Exception] = rfc8785.dumps(value)
    except Exception as exc:  # rfc8785's own error must come out unchanged
        expected = type(exc)
    if isinstance(expected, bytes):
        assert canonical_json(value) == expected
    else:
        with pytest.raises(expected):
            canonical_json(value)


def test_input_is_never_modified() -> None:
    body = {"records": [{"value": 1800.0, "x": [1e21, {"\U0001f600": -0.0}]}]}
    snapshot = repr(body)
    canonical_json(body)
    assert repr(body) == snapshot


def test_signed_envelope_payload_is_rfc8785_of_the_real_body() -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    now = datetime(2026, 12, 6, 6, 54, 54, 772000, tzinfo=UTC)
    recs = [telemetry_record(Sample("m1", f"s{i}", v, "mm", now, quality=Quality.GOOD))
            for i, v in enumerate([1800.0, 0.1, 1e21, -0.0, 7, "idle", None, True, math.nan])]
    body = envelope_body(gateway="gw", topic="t", asset="m1", stream="telemetry", seq=3,
                         prev=None, created=now, records=recs)
    env = Signer(Ed25519PrivateKey.generate()).sign_body(body)
    assert b64url_decode(env["payload"]) == rfc8785.dumps(body)
