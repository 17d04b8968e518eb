"""The simulated energy meter: power follows the machine, energy is its exact integral, and
the sample SDM630 YAML reads the simulator's registers back through the real adapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from adapters.base import AdapterContext
from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.settings import ModbusSettings
from simulators import MachineModel, ScriptEvent
from simulators.meter import MeterModel, MeterProfile
from simulators.modbus_server import ModbusBinding, serve_modbus

START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "adapters/modbus/meters/eastron-sdm630.yaml"
SCRIPT = [
    ScriptEvent(at=0, execution="ready"),  # type: ignore[arg-type]
    ScriptEvent(at=10, execution="active"),  # type: ignore[arg-type]
    ScriptEvent(at=40, execution="feed_hold"),  # type: ignore[arg-type]
    ScriptEvent(at=50, execution="ready", emergency_stop=True),  # type: ignore[arg-type]
]


def meter(time_scale: float = 1.0) -> MeterModel:
    model = MachineModel.scripted("m1", SCRIPT, start=START, time_scale=time_scale)
    return MeterModel(model, MeterProfile(initial_kwh=100.0))


def at(s: float) -> datetime:
    return START + timedelta(seconds=s)


def test_power_follows_the_state_and_energy_is_its_integral() -> None:
    m = meter()
    p = m.profile
    cutting = p.base_w + p.spindle_w + p.load_w_per_percent * m.machine.programs[0].spindle_load
    assert [m.power_w(at(s)) for s in (5, 20, 45, 55)] == [
        p.base_w, cutting, p.base_w + p.spindle_w, p.standby_w]
    expected_j = 10 * p.base_w + 30 * cutting + 10 * (p.base_w + p.spindle_w) + 10 * p.standby_w
    assert m.energy_kwh(at(60)) == pytest.approx(100.0 + expected_j / 3.6e6, rel=1e-12)
    assert m.energy_kwh(at(30)) < m.energy_kwh(at(60))  # asked about the past: recomputed
    assert m.energy_between(at(10), at(40)) == pytest.approx(30 * cutting / 3.6e6, rel=1e-12)


def test_a_faster_simulation_draws_power_over_wall_time() -> None:
    fast = meter(time_scale=10.0)
    # 6 wall seconds = 60 simulated; power is what the register shows, energy its wall integral
    assert fast.energy_between(at(1), at(4)) == pytest.approx(
        fast.power_w(at(2)) * 3 / 3.6e6, rel=1e-12)


async def test_the_sample_sdm630_yaml_reads_the_simulated_meter() -> None:
    block = yaml.safe_load(SAMPLE.read_text())
    m = meter()
    clock = [at(20.0)]
    sim = await serve_modbus([ModbusBinding(m.machine, "127.0.0.1", 0, 1, m)],
                             clock=lambda: clock[0])
    try:
        connection = {**block["connection"], "host": "127.0.0.1", "port": sim.endpoints[0].port}
        settings = ModbusSettings.model_validate({"connection": connection,
                                                  "points": block["points"]})
        adapter = ModbusAdapter(AdapterContext(asset="meter"), settings)
        await adapter.connect()
        try:
            got = {s.signal: s.value for s in await adapter.read_once()}
        finally:
            await adapter.aclose()
    finally:
        await sim.aclose()
    watts = m.power_w(clock[0])
    assert got["total_power_w"] == pytest.approx(watts, rel=1e-6)
    assert sum(got[f"l{i}_power_w"] for i in (1, 2, 3)) == pytest.approx(watts, rel=1e-6)
    assert got["import_energy_kwh"] == pytest.approx(m.energy_kwh(clock[0]), abs=1e-5)
    assert got["l1_voltage_v"] == 230.0 and got["frequency_hz"] == 50.0
    assert got["export_energy_kwh"] == 0.0
    assert block["energy"]["energy_kwh"] == "import_energy_kwh"
