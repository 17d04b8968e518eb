"""A whole gateway with a `sparkplug_b` destination, read by the independent test host.

The machine is a Modbus simulator in its own process, so the device really goes away
(killed) and comes back (started again): DDEATH, then DBIRTH. State, telemetry and part
records arrive as device metrics; stopping the gateway ends the session with an NDEATH, whose
bdSeq must be the NBIRTH's (a clean stop publishes it; a lost connection leaves it to the
will, tests/edge/egress/test_sparkplug.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto, wait_port
from e2e import POINTS, ROOT, GatewayProcess, wait_for
from sparkplug_host import SparkplugHost


class Simulator:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.modbus_server", "--port", str(self.port),
             "--time-scale", "60", "--seed", "3"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        assert wait_port("127.0.0.1", self.port), "simulator did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def simulator(free_port: Callable[[], int]) -> Iterator[Simulator]:
    sim = Simulator(free_port())
    sim.start()
    yield sim
    sim.stop()


@pytest.mark.slow
def test_gateway_as_sparkplug_edge_node(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    simulator: Simulator,
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "#")
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        f"gateway: {{id: gw-1, site: plant-a, state_dir: {tmp_path / 'state'},"
        " web: {port: 0}}\n"
        "destinations:\n"
        f'  - {{id: sp, url: "mqtt://127.0.0.1:{mosquitto.port}", format: sparkplug_b,'
        " sparkplug: {group_id: line-a}}\n"
        "machines:\n"
        "  - id: m1\n    area: hall-1\n    line: line-1\n    adapter: modbus\n"
        "    poll_interval: 0.2\n    part_record: {}\n"
        f"    connection: {{host: 127.0.0.1, port: {simulator.port}, timeout: 0.5}}\n{POINTS}"
    )
    host = SparkplugHost("line-a", "gw-1")
    done = 0

    def pump() -> None:
        nonlocal done
        msgs = col.snapshot()
        for m in msgs[done:]:
            host.feed(m.topic, m.payload)
        done = len(msgs)

    def until(predicate: Callable[[], bool], what: str, within: float = 30) -> None:
        wait_for(lambda: (pump(), predicate())[1], within, what)

    def m1_values() -> dict[str, object]:
        device = host.devices.get("m1")
        return device.values if device is not None else {}

    gw = GatewayProcess(plant).start()
    try:
        until(lambda: "Signals/spindle_speed" in m1_values()
              and m1_values().get("State/Availability") == "available", "m1 born with data")
        assert host.kinds[0] == "NBIRTH"
        until(lambda: host.kinds.count("DDATA") >= 3, "DDATA by alias")
        # issue 15: part records reach a Sparkplug host too, each whole in Part/Record
        until(lambda: isinstance(m1_values().get("Part/Seq"), int), "a part as device metrics")
        part = json.loads(str(m1_values()["Part/Record"]))
        assert part["part_seq"] == m1_values()["Part/Seq"] and part["verdict"] in (
            "good", "scrap", "unknown")
        simulator.stop()
        until(lambda: host.devices["m1"].deaths == 1, "DDEATH after the device went away")
        births = host.devices["m1"].births
        simulator.start()
        until(lambda: host.devices["m1"].births > births and host.devices["m1"].alive,
              "DBIRTH after the device came back")
        gw.signal(signal.SIGTERM)  # a clean stop: the gateway publishes the NDEATH itself
        until(lambda: host.ndeaths == host.nbirths[-1:], "NDEATH with the NBIRTH's bdSeq")
        assert gw.wait() == 0
    finally:
        gw.kill()
    assert "Signals/spindle_speed" in m1_values() and "State/Execution" in m1_values()
    assert {m.topic.split("/")[0] for m in col.snapshot()} == {"spBv1.0"}  # no status, keys
    assert not [e for e in gw.logs() if e.get("level") == "error"]
