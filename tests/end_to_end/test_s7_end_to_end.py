"""`edge-gateway run` with an S7 machine: known PLC values arrive decoded at a real Mosquitto.

The PLC is python-snap7's server holding values written byte by byte in tests/s7_plc.py
(not the project's simulator); what is checked is the verified envelope bodies a platform
receives: every S7 data type, decoded, quality good.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, verified_body, wait_for
from s7_plc import EXPECTED, POINTS, known_plc

TELEMETRY = "edge/plant-a/hall-1/line-1/plc1/telemetry"


def plant(state_dir: Path, broker_port: int, plc_port: int) -> str:
    return f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state_dir}, web: {{port: 0}}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:{broker_port}"}}
machines:
  - id: plc1
    area: hall-1
    line: line-1
    adapter: s7
    poll_interval: 0.2
    connection: {{host: 127.0.0.1, port: {plc_port}, rack: 0, slot: 1, timeout: 1.0}}
    points: {json.dumps(POINTS)}
"""


@pytest.mark.slow
def test_s7_values_arrive_decoded_at_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    with known_plc() as plc:
        path = tmp_path / "plant.yaml"
        path.write_text(plant(tmp_path / "state", mosquitto.port, plc.port))
        gw = GatewayProcess(path).start()
        try:
            wait_for(lambda: any(m.topic.endswith("/keys") for m in col.snapshot()), 15, "JWKS")
            jwks = json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)

            def records() -> dict[str, dict[str, Any]]:
                out: dict[str, dict[str, Any]] = {}
                for m in col.snapshot():
                    if m.topic == TELEMETRY:
                        for r in verified_body(m.payload, jwks, m.topic)["records"]:
                            out[r["signal"]] = r
                return out

            wait_for(lambda: set(EXPECTED) <= set(records()), 20, "every S7 signal")
            # one line per connect (was `s7_connected` and `device_connected`), with the S7
            # details in it
            connects = [e for e in gw.logs() if str(e.get("event")).endswith("_connected")
                        and e.get("level") == "info" and "endpoint" in e]
            assert [e["event"] for e in connects] == ["device_connected"], connects
            assert connects[0]["pdu"] > 0 and connects[0]["requests_per_cycle"] >= 1
        finally:
            gw.kill()
    got = records()
    assert {k: got[k]["value"] for k in EXPECTED} == EXPECTED
    assert {got[k]["quality"] for k in EXPECTED} == {"good"}
    assert got["spindle_speed"]["unit"] == "1/min"
