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
@pytest.mark.parametrize("workers", ["1", "2"])
def test_warns_when_every_machine_is_simulated_but_none_runs(
    tmp_path: Path, mosquitto: Mosquitto, workers: str
) -> None:
    """Once per start: with worker processes, each worker said it again (the newcomer
    walk-through's `make demo` plant run without --with-simulators: three warnings)."""
    plant = demo_plant_on_free_ports(tmp_path, f"mqtt://127.0.0.1:{mosquitto.port}")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--log-format", "json", "run", "-c", str(plant),
             "--no-console", "--workers", workers],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        def logged() -> list[dict[str, object]]:
            return [json.loads(line) for line in log.read_text().splitlines()
                    if line.startswith("{")]

        def events() -> list[object]:
            return [e.get("event") for e in logged()]

        wait_for(lambda: "gateway_started" in events(), 30, "gateway start")
        if workers != "1":  # past the warning's place in each worker: its egress is up
            wait_for(lambda: {e.get("worker") for e in logged()
                              if e.get("event") == "egress_ready"} == {0, 1}, 60,
                     "both workers' egress")
        assert events().count("every_machine_is_simulated_but_no_simulator_runs") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
