"""The parent of `run --workers 2` polls nothing, so it imports no protocol library.

It validated the plant through each adapter's entry point, which imported the adapter
module and with it pymodbus (asyncua, snap7 for their machines): ~0.22 MB per machine of
RSS in a process that never opens a device (bench/report-issue17.md, 2k). The settings
models now come from `edge_gateway.adapter_settings` (edge/config/registry.py).

The parent runs its real command line in a subprocess whose exit prints what it imported;
it is stopped (SIGTERM) only after both workers connected their machines and its own
/metrics answered, so start-up and serving are both in what it imported. The workers are
the same command's children and import their adapters as before (checked too: otherwise
the test could pass on a gateway that never started a device).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mosquitto
from e2e import ROOT, plant_yaml, wait_for

PROTOCOL_LIBRARIES = ("pymodbus", "asyncua", "snap7")

# the parent's command line, with its modules written to argv[1] when it exits
PARENT = """import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "edge-gateway"
runpy.run_module("edge.cli", run_name="__main__")
"""


def logged(log: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


@pytest.mark.slow
def test_the_parent_of_two_workers_imports_no_protocol_library(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    plant = tmp_path / "plant.yaml"
    # two simulated Modbus machines, and an OPC UA and an S7 machine nobody serves: the
    # parent validates all four machines' settings
    plant.write_text(plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port)
                     + f"""
  - id: cnc-ua
    area: hall-1
    line: line-2
    adapter: opcua
    connection: {{endpoint: "opc.tcp://127.0.0.1:{free_port()}/", profile: machine_tool}}
  - id: plc-s7
    area: hall-1
    line: line-2
    adapter: s7
    connection: {{host: 127.0.0.1, port: {free_port()}, rack: 0, slot: 1}}
    points: [{{name: execution, address: DB10.DBW0, data_type: INT}}]
""")
    modules, log = tmp_path / "parent-modules.json", tmp_path / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sims = subprocess.Popen([sys.executable, "-m", "edge.cli", "simulate", str(plant)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    with log.open("ab") as out:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, str(modules), "--log-format", "json",
             "run", "-c", str(plant), "--no-console", "--workers", "2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(logged(log, "device_connected")) >= 2, 40,
                 "both machines connected by the workers")
        url = logged(log, "status_page_started")[0]["metrics"]
        assert isinstance(url, str)
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert b"edge_gateway_device_up" in reply.read()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
    finally:
        for proc in (parent, sims):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    imported = set(json.loads(modules.read_text()))
    assert "edge.daemon.workers" in imported, "not the parent of a worker pool"
    loud = sorted(m for m in imported if m.split(".")[0] in PROTOCOL_LIBRARIES)
    assert loud == [], f"the parent imported {loud[:5]} ..."
    adapters = sorted(m for m in imported if m.startswith("adapters.") and
                      not m.endswith((".settings", ".base", ".address", ".engineering")))
    assert "adapters.modbus.adapter" not in adapters, adapters
