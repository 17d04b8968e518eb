"""RFC 8785 known answers (cyberphone/json-canonicalization testdata) through our JCS path.

Why: the envelope payload and the RFC 7638 thumbprints are only interoperable if our
canonical bytes equal every other JCS implementation's, byte for byte. The vectors live in
the shared third-party material, which a user's install does not have: skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.platform_kit import verifier
from edge.signing.jws import canonical_json

TESTDATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "material" / "jcs" / "testdata"
NAMES = sorted(p.name for p in (TESTDATA / "input").glob("*.json")) if TESTDATA.is_dir() else []

pytestmark = pytest.mark.skipif(
    not NAMES, reason=f"JCS vectors not found at {TESTDATA} (shared/material is absent)"
)


@pytest.mark.parametrize("name", NAMES)
def test_vector_canonicalizes_byte_for_byte(name: str) -> None:
    source = (TESTDATA / "input" / name).read_bytes()
    expected = (TESTDATA / "output" / name).read_bytes()
    assert canonical_json(json.loads(source)) == expected


@pytest.mark.parametrize("name", NAMES)
def test_canonical_output_is_a_fixed_point(name: str) -> None:
    # The verifier's "payload is canonical" check re-canonicalizes what it parsed.
    expected = (TESTDATA / "output" / name).read_bytes()
    assert canonical_json(verifier._json(expected, name)) == expected


def test_all_pairs_present() -> None:
    outputs = sorted(p.name for p in (TESTDATA / "output").glob("*.json"))
    assert outputs == NAMES
    assert len(NAMES) >= 6
