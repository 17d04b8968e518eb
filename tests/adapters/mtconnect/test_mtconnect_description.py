"""The real OKUMA device model's Description becomes nameplate identification."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.mtconnect.documents import parse_probe

DEVICES = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "material"
    / "mtconnect"
    / "demo_Devices.xml"
)


@pytest.mark.skipif(not DEVICES.exists(), reason=f"third-party material absent: {DEVICES}")
def test_okuma_description_gives_identification() -> None:
    doc = parse_probe(DEVICES.read_bytes())
    assert doc.device == "OKUMA"
    assert doc.description == {
        "manufacturer": "OKUMA",
        "model": "MULT_U3000",
        "serial_number": "123456",
    }
