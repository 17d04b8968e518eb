"""A scripted shift through the whole gateway: the closed `oee` window published at shift end
must match what the script implies (ISO 22400-2, as docs/oee.md defines it).

The shift is 10 s long and starts a few seconds after the test; the simulated machine's
script is anchored at the shift start: active 0-6 s, stopped 6-8 s, active 8-10 s, 8 parts
of which 1 bad, ideal cycle 1 s. So PBT = 10 s, APT = 8 s, PQ = 8, GQ = 7:
A = 0.8, E = 1 x 8 / 8 = 1.0, Q = 0.875, OEE = 0.7.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, scripted_shift_plant, verified_body, wait_for

POLL = 0.1


@pytest.mark.slow
def test_scripted_shift_publishes_the_oee_the_script_implies(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    start = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    end = start + timedelta(seconds=10)
    script = [
        {
            "at": 0,
            "execution": "active",
            "controller_mode": "automatic",
            "part_count": 0,
            "bad_part_count": 0,
            "program": "O1000",
        },
        {"at": 2, "part_count": 2},
        {"at": 4, "part_count": 4},
        {"at": 6, "execution": "stopped", "part_count": 6, "bad_part_count": 1},
        {"at": 8, "execution": "active"},
        {"at": 9, "part_count": 8},
    ]
    plant = scripted_shift_plant(
        tmp_path, mosquitto.port, free_port(), (start, end), script, POLL
    )
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: any(m.topic.endswith("/keys") for m in col.snapshot()), 20, "JWKS")
        jwks = json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)

        def closed() -> list[dict[str, Any]]:
            out = []
            for m in col.snapshot():
                if m.topic.endswith("/m1/oee"):
                    for r in verified_body(m.payload, jwks, m.topic)["records"]:
                        if r["window"]["closed"]:
                            out.append(r)
            return out

        wait_for(lambda: bool(closed()), 40, "the closed shift window")
    finally:
        gw.kill()
    (record,) = closed()
    assert record["window"]["kind"] == "shift" and record["window"]["name"] == "test"
    assert record["time"]["pbt"] == pytest.approx(10.0, abs=1e-6)
    assert record["counts"]["pq"] == 8 and record["counts"]["gq"] == 7
    assert record["counts"]["scrap"] == 1
    tolerance = 3 * POLL + 0.1  # state changes are seen one poll late, at worst
    assert record["time"]["apt"] == pytest.approx(8.0, abs=tolerance)
    assert record["availability"] == pytest.approx(0.8, abs=tolerance / 10)
    assert record["effectiveness"] == pytest.approx(8 * 1.0 / record["time"]["apt"], rel=1e-9)
    assert record["quality"] == pytest.approx(7 / 8, rel=1e-12)
    assert record["oee"] == pytest.approx(
        record["availability"] * record["effectiveness"] * record["quality"], rel=1e-12
    )
    assert record["oee"] == pytest.approx(0.7, abs=0.05)
