"""Parts made while the gateway was down are booked, and a SIGKILL loses no part already seen
(issue 12, item 4).

The simulated machine runs in its own process (`edge-gateway simulate`), so it keeps making
parts while the gateway is SIGKILLed and restarted. Its script is anchored at a 32 s shift:
one part every 2 s, 11 in all, the counter going 0 -> 11. The closed shift record must
reconcile with that counter: pq + unplanned_pq + the parts in `losses.gap_parts` = 11 (less
the gateway's first reading, if it came up late), and the gap's first counter value is at
least the last count the platform saw before the kill.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import ROOT, GatewayProcess, scripted_shift_plant, verified_body, wait_for
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

PARTS = 11


def machine_count(port: int) -> int:
    """The part counter the simulated machine serves now (holding 10, uint32, as the plant's
    points read it), -1 while it does not answer: what the gateway would read if it ran."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    try:
        if not client.connect():
            return -1
        rr = client.read_holding_registers(10, count=2, device_id=1)
        return -1 if rr.isError() else rr.registers[0] << 16 | rr.registers[1]
    except ModbusException:
        return -1
    finally:
        client.close()


@pytest.mark.slow
def test_parts_made_while_the_gateway_was_down_are_booked(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    start = (datetime.now(UTC) + timedelta(seconds=10)).replace(microsecond=0)
    end = start + timedelta(seconds=32)  # room for two slow starts on a busy CI host
    script: list[dict[str, Any]] = [
        {
            "at": 0,
            "execution": "active",
            "controller_mode": "automatic",
            "part_count": 0,
            "bad_part_count": 0,
            "program": "O1000",
        },
        *({"at": 2 * k, "part_count": k} for k in range(1, PARTS + 1)),
    ]
    sim_port = free_port()
    plant = scripted_shift_plant(tmp_path, mosquitto.port, sim_port, (start, end), script, 0.1)
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    with (tmp_path / "simulator.log").open("wb") as log:
        sim = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "simulate", str(plant)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    gw = GatewayProcess(plant, simulators=False)

    def jwks() -> dict[str, Any]:
        return json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)

    def bodies(leaf: str) -> list[dict[str, Any]]:
        keys = jwks()
        return [
            verified_body(m.payload, keys, m.topic)
            for m in col.snapshot()
            if m.topic.endswith(f"/m1/{leaf}")
        ]

    def seen_counts() -> list[int]:
        return [
            r["value"]
            for b in bodies("telemetry")
            for r in b["records"]
            if r["signal"] == "part_count"
        ]

    def seen_count() -> int:
        return max(seen_counts(), default=-1)

    def closed() -> list[dict[str, Any]]:
        return [r for b in bodies("oee") for r in b["records"] if r["window"]["closed"]]

    try:
        gw.start()
        wait_for(lambda: any(m.topic.endswith("/keys") for m in col.snapshot()), 20, "JWKS")
        wait_for(lambda: bool(seen_counts()), 30, "the first counter reading")
        baseline = seen_counts()[0]  # 0 unless the gateway came up after the shift began
        wait_for(lambda: seen_count() >= 3, 30, "three parts seen by the platform")
        gw.signal(signal.SIGKILL)
        gw.wait()
        before_kill = seen_count()
        made = min(before_kill + 3, PARTS)  # >= 2 parts the gateway never read
        wait_for(lambda: machine_count(sim_port) >= made, 30, f"the machine at part {made}")
        gw = GatewayProcess(plant, simulators=False).start()  # the machine made parts meanwhile
        wait_for(lambda: bool(closed()), 60, "the closed shift window")
    finally:
        gw.kill()
        sim.terminate()
        sim.wait(10)
    (record,) = closed()
    counts, gaps = record["counts"], record["losses"]["gap_parts"]
    booked = sum(g["parts"] for g in gaps)
    print(
        f"counter 0 -> {PARTS}: pq {counts['pq']}, unplanned {counts['unplanned_pq']}, "
        f"gap parts {booked} {gaps}; last count seen before the kill {before_kill}"
    )
    assert counts["pq"] + counts["unplanned_pq"] + booked == PARTS - baseline
    (gap,) = gaps
    assert gap["counter"][0] >= before_kill, "a part the platform saw was lost by the SIGKILL"
    assert gap["parts"] >= 2 and gap["counter"][1] - gap["counter"][0] == gap["parts"]
