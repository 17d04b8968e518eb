"""`edge-gateway simulate` stops promptly on SIGTERM and says so.

Why: it took 5-8 s and logged nothing: its servers stopped one after the other, and each
OPC UA server waited for its clock's next 1 s tick; a plant of several OPC UA machines
added those up, and systemd or a test harness waits that long for every restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e import ROOT, wait_for

OPCUA_MACHINES = 4


def _events(log: Path, name: str) -> list[dict[str, object]]:
    lines = (json.loads(x) for x in log.read_text().splitlines() if x.startswith("{"))
    return [e for e in lines if e.get("event") == name]


@pytest.mark.slow
def test_simulate_stops_within_a_second_of_sigterm_and_logs_it(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    machines = "".join(
        f"""
  - id: ua-{i}
    area: hall-1
    line: line-1
    adapter: opcua
    simulate: true
    connection: {{endpoint: "opc.tcp://127.0.0.1:{free_port()}/", profile: machine_tool}}
"""
        for i in range(OPCUA_MACHINES)
    ) + f"""
  - id: plc-s7
    area: hall-1
    line: line-2
    adapter: s7
    simulate: true
    connection: {{host: 127.0.0.1, port: {free_port()}, rack: 0, slot: 1}}
    points: [{{name: execution, address: DB10.DBW0, data_type: INT}}]
"""
    plant = tmp_path / "plant.yaml"
    plant.write_text(f"gateway: {{id: gw, site: s, state_dir: {tmp_path / 'state'}}}\n"
                     f"machines:{machines}")
    log = tmp_path / "simulate.log"
    with log.open("ab") as out:
        sims = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--log-format", "json", "simulate", str(plant)],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        # four asyncua address spaces take seconds of CPU each: on a host busy with other
        # work the start took over 60 s (it is not what this test times)
        wait_for(lambda: len(_events(log, "simulators_started")) == 2, 180,
                 "the OPC UA and S7 simulators started")
        sent = datetime.now(UTC)
        sims.send_signal(signal.SIGTERM)
        assert sims.wait(timeout=30) == 0
        exited = (datetime.now(UTC) - sent).total_seconds()
    finally:
        if sims.poll() is None:
            sims.kill()
            sims.wait()
    stopped = _events(log, "simulators_stopped")
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM", log.read_text()[-2000:]
    # one after the other, each OPC UA server waited up to 1 s: 3-4 s for these four. Timed
    # from the signal to the product's own `simulators_stopped` line, not to the process'
    # exit: the interpreter's teardown after it (~1 s of the 1.75 s the exit took on a quiet
    # host, more on a busy one) is not the stop this test is about.
    took = (datetime.fromisoformat(str(stopped[0]["timestamp"])) - sent).total_seconds()
    assert took < 2.0, f"servers stopped {took:.1f} s after SIGTERM (exit {exited:.1f} s)"
