"""simulators/s7_server.py: the documented DB layout, read by the S7 adapter and by bytes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from snap7.async_client import AsyncClient
from snap7.type import Area

from adapters.base import AdapterContext
from adapters.s7.adapter import S7Adapter
from adapters.s7.settings import S7Settings
from models.plant import Machine
from models.sample import Quality
from simulators.machine import MachineModel
from simulators.s7_server import EXECUTION_CODES, MODE_CODES, serve_s7, start_for_gateway

SAMPLE = Path(__file__).resolve().parents[2] / "adapters" / "s7" / "sample.yaml"
START = datetime(2026, 1, 5, 6, tzinfo=UTC)


def frozen(at: datetime) -> Any:
    return lambda: at


async def test_sample_yaml_reads_the_simulated_machine(free_port: Any) -> None:
    machine = Machine.model_validate(yaml.safe_load(SAMPLE.read_text(encoding="utf-8")))
    assert machine.adapter == "s7"
    raw = {"connection": {**machine.connection, "host": "127.0.0.1", "port": free_port()},
           "points": machine.points}
    settings = S7Settings.model_validate(raw)
    model = MachineModel.from_options(machine.id, {"seed": 6, "time_scale": 60})
    sim = await start_for_gateway([(machine.id, settings, model)])
    try:
        adapter = S7Adapter(AdapterContext(asset=machine.id), settings)
        await adapter.connect()
        try:
            got = {s.signal: s for s in await adapter.read_once()}
        finally:
            await adapter.aclose()
    finally:
        await sim.aclose()
    assert set(got) == {p["name"] for p in machine.points}
    assert all(s.quality is Quality.GOOD for s in got.values()), got
    assert got["execution"].value in {e.value for e in EXECUTION_CODES}
    assert isinstance(got["program"].value, str) and got["program"].value
    assert got["plc_clock"].value.startswith("20")


async def test_layout_matches_the_model_byte_for_byte() -> None:
    at = START + timedelta(hours=1, minutes=7)
    model = MachineModel("s7-sim", seed=2, time_scale=1, start=START)
    snap = model.snapshot(at)
    sim = await serve_s7(model, port=0, clock=frozen(at))
    try:
        client = AsyncClient()
        await client.connect("127.0.0.1", 0, 1, sim.ports["s7-sim"])
        try:
            db = await client.db_read(10, 0, 92)
            counter = await client.read_area(Area.CT, 0, 5, 1)
            inputs = await client.read_area(Area.PE, 0, 1, 1)
        finally:
            await client.disconnect()
    finally:
        await sim.aclose()
    execution, mode, bits = struct.unpack_from(">hhB", db, 0)
    assert (execution, mode) == (EXECUTION_CODES[snap.execution], MODE_CODES[snap.controller_mode])
    assert bool(bits & 1) == snap.emergency_stop and bool(bits & 4) == snap.door_closed
    assert struct.unpack_from(">ii", db, 8) == (snap.part_count, snap.bad_part_count)
    assert db[18:18 + db[17]].decode() == snap.program
    assert struct.unpack_from(">f", db, 50)[0] == struct.unpack(">f", struct.pack(
        ">f", snap.spindle_speed))[0]
    assert struct.unpack_from(">H", db, 58)[0] == snap.sim_time.year
    assert int(counter.hex()[1:]) == snap.part_count % 1000
    assert bool(inputs[0] & 0b1000) == snap.door_closed
