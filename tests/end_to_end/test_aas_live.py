"""The `aas` query carries the live twin: device identification fills the nameplate (the YAML
wins where both speak), live state and OEE fill their submodels, and it verifies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aas_core3 import jsonization, types, verification
from conftest import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import GatewayProcess, wait_for

from edge.platform_kit.client import query
from simulators.haas_server import _serial_of


def nameplate_value(env: types.Environment, id_short: str) -> Any:
    for sm in env.submodels or []:
        if sm.id_short == "Nameplate":
            for el in sm.submodel_elements or []:
                if el.id_short == id_short:
                    return getattr(el, "value", None)
    return None


@pytest.mark.slow
def test_aas_query_uses_device_identification(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pub.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    plant = tmp_path / "plant.yaml"
    state = tmp_path / "state"
    plant.write_text(f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state}, web: {{port: 0}}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:{mosquitto.port}"}}
platforms:
  - {{id: p, public_key_file: p.pub.pem}}
machines:
  - id: vf2-01
    area: hall-1
    line: line-2
    adapter: haas
    simulate: true
    nameplate: {{manufacturer: Haas Automation}}
    simulator: {{seed: 4, time_scale: 20}}
    connection: {{host: 127.0.0.1, port: {free_port()}, timeout: 2.0}}
""")
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: bool(gw.events("device_connected")), 20, "haas connected")
        record = asyncio.run(
            query(mosquitto.url, key, "edge/plant-a/gw-1", "aas", {"asset": "vf2-01"}, wait=15)
        )
    finally:
        gw.kill()
    assert record["ok"], record
    env = jsonization.environment_from_jsonable(record["result"]["machines"]["vf2-01"])
    assert list(verification.verify(env)) == []
    assert nameplate_value(env, "SerialNumber") == _serial_of("vf2-01")  # from Q100
    manufacturer = nameplate_value(env, "ManufacturerName")
    assert manufacturer is not None and manufacturer[0].text == "Haas Automation"  # YAML wins
