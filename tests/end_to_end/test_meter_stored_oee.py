"""A state directory with OEE rows an older gateway computed for an energy meter: the gateway
serves none of them (issue 15).

The store is written with real SQLite by a KpiService that rates the meter like any machine
(what gateways did before meters were left out of OEE): an engine at 0 % available and a
closed shift window. The gateway then starts on that state directory: the rows are dropped
(one log line with the count), the `oee` query of the meter answers `not_found` as for
every meter (docs/protocol.md, 23'), and /metrics carries no OEE gauge for it, while the
metered machine keeps its OEE.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import GatewayProcess, plant_yaml, wait_for

from edge.config.loader import load_plant
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME, OeeStore
from edge.platform_kit.client import query
from models.machine_state import Availability, ControllerMode, Execution, MachineState


def plant_text(tmp_path: Path, broker: int, ports: tuple[int, int]) -> str:
    """e2e's plant of one Modbus machine, plus its meter, a shift all day and a platform."""
    return plant_yaml(tmp_path / "state", [ports[0]], broker) + f"""
  - id: m1-meter
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 0.2
    meter_for: m1
    simulator: {{meter: {{initial_kwh: 100}}}}
    energy: {{energy_kwh: import_energy_kwh}}
    connection: {{host: 127.0.0.1, port: {ports[1]}, timeout: 0.5}}
    points:
      - {{name: import_energy_kwh, register: input, address: 0x0048, data_type: float32,
         unit: kWh}}
shifts:
  timezone: UTC
  shifts: [{{name: all, start: "00:00", end: "00:00", days: [mon, tue, wed, thu, fri, sat, sun]}}]
platforms:
  - {{id: buyer, public_key_file: platform.pem}}
"""


def seed_as_an_older_gateway(plant_file: Path) -> int:
    """Yesterday's shift rated for both machines, the meter too; the meter's row count."""
    loaded = load_plant(plant_file)
    unmetered = loaded.plant.model_copy(update={"machines": [
        m.model_copy(update={"meter_for": None}) for m in loaded.plant.machines]})
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day - timedelta(days=1)
    with OeeStore(loaded.state_dir / FILENAME) as store:
        now = [start]
        older = KpiService(unmetered, store, lambda: now[0])
        for asset in ("m1", "m1-meter"):
            older.on_state(asset, MachineState(asset, Availability.AVAILABLE, Execution.ACTIVE,
                                               ControllerMode.AUTOMATIC, part_count=0), start)
        now[0] = day + timedelta(seconds=1)
        assert {a for a, r in older.tick() if r["window"]["closed"]} == {"m1", "m1-meter"}
        older.close()
        assert store.closed_windows("m1-meter", start, day) != []
        with store._snapshot("count") as conn:
            return sum(conn.execute(f"SELECT count(*) FROM {t} WHERE asset = 'm1-meter'"
                                    ).fetchone()[0]
                       for t in ("engines", "segments", "counts", "windows"))


def oee_gauges(metrics_url: str) -> dict[str, list[str]]:
    """The `edge_gateway_oee_*` series of /metrics, by machine label."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    by: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("edge_gateway_oee_") and 'machine="' in line:
            machine = line.split('machine="', 1)[1].split('"', 1)[0]
            by.setdefault(machine, []).append(line)
    return by


@pytest.mark.slow
def test_a_meters_stored_oee_is_never_served(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "platform.pem").write_bytes(key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_text(tmp_path, mosquitto.port, (free_port(), free_port())))
    seeded = seed_as_an_older_gateway(plant)

    def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(query(f"mqtt://127.0.0.1:{mosquitto.port}", key,
                                 "edge/plant-a/gw-1", method, params))

    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: len(gw.events("device_connected")) >= 2, 30, "both devices connected")
        url = gw.events("status_page_started")[0]["metrics"]
        wait_for(lambda: "m1" in oee_gauges(url), 30, "the machine's OEE in /metrics")
        assert "m1-meter" not in oee_gauges(url)
        meter = ask("oee", {"asset": "m1-meter", "window": "shift"})
        yesterday = ask("oee", {"asset": "m1-meter", "window": "range",
                                "start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                                "end": datetime.now(UTC).isoformat()})
        machine = ask("oee", {"asset": "m1", "window": "today"})
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
    finally:
        gw.kill()
    for answer in (meter, yesterday):
        assert not answer["ok"] and answer["error"]["code"] == "not_found", answer
        assert "energy meter of m1" in answer["error"]["message"], answer
    assert machine["ok"], machine
    [dropped] = gw.events("oee_meter_rows_dropped")
    assert dropped["machines"] == ["m1-meter"] and dropped["rows"] == seeded
    with OeeStore(load_plant(plant).state_dir / FILENAME) as store:
        assert store.closed_windows("m1-meter", datetime(2000, 1, 1, tzinfo=UTC),
                                    datetime.now(UTC)) == []
        assert store.load("m1-meter") is None
        assert store.closed_windows("m1", datetime(2000, 1, 1, tzinfo=UTC),
                                    datetime.now(UTC)) != []
