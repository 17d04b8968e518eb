"""The demo's Siemens machines as a platform receives them: `dmc-01` (OPC UA `profile:
sinumerik`, no point list) and `cell-07` (S7), served by `run --with-simulators` from the
real config/demo-plant.yaml, their signed `state` records read at a real Mosquitto.

Why: issue 16's "done when" is about what the demo *publishes*; the adapter tests stop at
the adapter (tests/adapters/opcua/test_opcua_sinumerik.py), and the demo OEE test only
proves part counts indirectly. Here execution, mode, program and part count must each
arrive in a verified `state` envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, demo_plant_on_free_ports, verified_body, wait_for

SIEMENS = ("dmc-01", "cell-07")
WANTED = ("execution", "controller_mode", "program", "part_count")


@pytest.mark.slow
def test_demo_siemens_machines_publish_execution_mode_program_and_parts(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    path = demo_plant_on_free_ports(tmp_path, mosquitto.url)
    plant = yaml.safe_load(path.read_text())
    plant["machines"] = [m for m in plant["machines"] if m["id"] in SIEMENS]
    (dmc,) = [m for m in plant["machines"] if m["id"] == "dmc-01"]
    assert dmc["connection"]["profile"] == "sinumerik" and "points" not in dmc
    path.write_text(yaml.safe_dump(plant, sort_keys=False))
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    latest: dict[str, dict[str, Any]] = {m: {} for m in SIEMENS}

    def complete() -> bool:
        keys = [m for m in col.snapshot() if m.topic.endswith("/keys")]
        if not keys:
            return False
        jwks = json.loads(keys[-1].payload)
        for m in col.snapshot():
            asset = m.topic.split("/")[-2]
            if m.topic.endswith("/state") and asset in latest:
                for record in verified_body(m.payload, jwks, m.topic)["records"]:
                    latest[asset].update({k: v for k, v in record.items() if v is not None})
        return all(set(WANTED) <= set(latest[a]) for a in SIEMENS)

    gw = GatewayProcess(path).start()
    try:
        wait_for(complete, 90, f"{WANTED} in the state of {SIEMENS}")
    finally:
        gw.kill()
    for asset in SIEMENS:
        got = latest[asset]
        assert isinstance(got["part_count"], int), (asset, got)
        assert isinstance(got["execution"], str) and isinstance(got["controller_mode"], str)
    assert latest["dmc-01"]["program"].endswith(".MPF"), latest["dmc-01"]
    assert latest["cell-07"]["program"], latest["cell-07"]
