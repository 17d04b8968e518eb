"""README's "one block per family" YAML is a valid plant: a plant engineer copies it as is."""

from __future__ import annotations

import re
from pathlib import Path

from edge.config.loader import parse_plant

README = Path(__file__).resolve().parents[3] / "README.md"


def test_family_blocks_validate() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Connecting a machine: one block per family", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    loaded = parse_plant("gateway: {id: gw-1, site: plant-a}\nmachines:\n" + block.group(1),
                         "README.md")
    adapters = {m.adapter for m in loaded.plant.machines}
    # every row of the table above it: the protocols, and OPC UA with and without a profile
    assert {"s7", "opcua", "modbus", "focas", "haas", "mtconnect", "shdr"} <= adapters
    profiles = {m.connection.get("profile") for m in loaded.plant.machines
                if m.adapter == "opcua"}
    assert {"sinumerik", "machinery", None} <= profiles
