"""The real OKUMA device model's Description becomes nameplate identification."""

from __future__ import annotations

from pathlib import Path

from adapters.mtconnect.documents import parse_probe

# vendored with licence and provenance: tests/fixtures/mtconnect-cppagent/README.md
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mtconnect-cppagent"
DEVICES = FIXTURES / "demo_Devices.xml"


def test_okuma_description_gives_identification() -> None:
    doc = parse_probe(DEVICES.read_bytes())
    assert doc.device == "OKUMA"
    assert doc.description == {
        "manufacturer": "OKUMA",
        "model": "MULT_U3000",
        "serial_number": "123456",
    }
