"""`--console` prints the machine table from the fleet and the egress line from the slot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for


@pytest.mark.slow
def test_console_shows_machines_and_egress(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port))
    gw = GatewayProcess(plant, "--console", "--console-every", "0.5").start()
    try:

        def table() -> list[str]:
            return [e["line"] for e in gw.logs() if e.get("event") == "non-json"]

        wait_for(
            lambda: any(line.startswith("m1") and " up " in line for line in table()),
            20,
            "a console row for m1, link up",
        )
        wait_for(lambda: any("local: connected" in line for line in table()), 10, "egress line")
    finally:
        gw.kill()
