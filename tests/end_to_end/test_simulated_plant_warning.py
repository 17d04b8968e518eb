"""A plant whose machines are all `simulate: true`, started without simulators (the demo
plant installed as the production plant), says why every device will be down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Mosquitto
from e2e import ROOT, demo_plant_on_free_ports, wait_for


@pytest.mark.slow
def test_warns_when_every_machine_is_simulated_but_none_runs(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    plant = demo_plant_on_free_ports(tmp_path, f"mqtt://127.0.0.1:{mosquitto.port}")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--log-format", "json", "run", "-c", str(plant),
             "--no-console"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        def events() -> list[str]:
            return [json.loads(line).get("event", "") for line in log.read_text().splitlines()
                    if line.startswith("{")]

        wait_for(lambda: "gateway_started" in events(), 30, "gateway start")
        assert "every_machine_is_simulated_but_no_simulator_runs" in events()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
