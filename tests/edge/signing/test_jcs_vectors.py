"""RFC 8785 known answers (cyberphone/json-canonicalization testdata) through our JCS paths.

Why: the envelope payload and the RFC 7638 thumbprints are only interoperable if our
canonical bytes equal every other JCS implementation's, byte for byte. The vectors are
vendored beside this file (Apache-2.0, see jcs_testdata/README.md) so this always runs; both
the gateway's fast path (`edge.signing.jws.canonical_json`) and the `rfc8785` package the
platform-side verifier uses must pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from edge.platform_kit import verifier
from edge.signing.jws import canonical_json

TESTDATA = Path(__file__).resolve().parent / "jcs_testdata"
NAMES = sorted(p.name for p in (TESTDATA / "input").glob("*.json"))
CANONICALIZERS: dict[str, Callable[[Any], bytes]] = {
    "gateway": canonical_json,
    "rfc8785": rfc8785.dumps,
}


@pytest.mark.parametrize("impl", sorted(CANONICALIZERS))
@pytest.mark.parametrize("name", NAMES)
def test_vector_canonicalizes_byte_for_byte(name: str, impl: str) -> None:
    source = (TESTDATA / "input" / name).read_bytes()
    expected = (TESTDATA / "output" / name).read_bytes()
    assert CANONICALIZERS[impl](json.loads(source)) == expected


@pytest.mark.parametrize("impl", sorted(CANONICALIZERS))
@pytest.mark.parametrize("name", NAMES)
def test_canonical_output_is_a_fixed_point(name: str, impl: str) -> None:
    # The verifier's "payload is canonical" check re-canonicalizes what it parsed.
    expected = (TESTDATA / "output" / name).read_bytes()
    assert CANONICALIZERS[impl](verifier._json(expected, name)) == expected


def test_all_pairs_present() -> None:
    outputs = sorted(p.name for p in (TESTDATA / "output").glob("*.json"))
    assert outputs == NAMES
    assert len(NAMES) >= 6
