"""The demo's simulated machines keep the plant calendar's breaks (issue 14).

Why: the demo calendar has a lunch break (12:00-12:30 Europe/Berlin); machines that cut
through it make parts the OEE books as unplanned (edge/kpi/oee.py `unplanned_pq`, in no
figure). The demo plant's own mill and its SDM630 meter, built as `make demo` builds them
(edge/daemon/simulation.py), are served over a real Modbus socket on a fake clock and read
every 5 s across the break; the readings drive the gateway's OEE engine. A machine built
without the calendar is the control: it does produce in the break, so the test can fail.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pymodbus.client import AsyncModbusTcpClient

from edge.config.loader import parse_plant
from edge.daemon.simulation import simulated_models
from edge.kpi.oee import OeeEngine, OeeResult
from models.machine_state import Execution
from models.plant import ShiftCalendar
from simulators import MachineModel
from simulators.breaks import CalendarBreaks, breaks_between
from simulators.modbus_server import (
    EXECUTION_CODES,
    MODE_CODES,
    SDM630_IMPORT_KWH,
    SDM630_TOTAL_POWER,
    ModbusBinding,
    serve_modbus,
)

ROOT = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 12, 7, 11, 0, tzinfo=BERLIN)  # a Monday, the early shift
LUNCH = (datetime(2026, 12, 7, 12, 0, tzinfo=BERLIN), datetime(2026, 12, 7, 12, 30, tzinfo=BERLIN))
EXECUTIONS = {code: e for e, code in EXECUTION_CODES.items()}
MODES = {code: m for m, code in MODE_CODES.items()}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def demo_plant(tmp_path: Path) -> tuple[MachineModel, MachineModel, ModbusBinding]:
    """The demo's mill-01 (with its meter) as the demo builds it, its clock set to START;
    and the same mill built without the calendar."""
    plant = yaml.safe_load((ROOT / "config" / "demo-plant.yaml").read_text())
    mill = next(m for m in plant["machines"] if m["id"] == "mill-01")
    mill["simulator"]["start"] = START.isoformat()
    loaded = parse_plant(yaml.safe_dump(plant, sort_keys=False), str(tmp_path / "demo.yaml"))
    groups, meters = simulated_models(loaded)
    model = next(m for asset, _, m in groups["modbus"] if asset == "mill-01")
    meter = meters["mill-01-meter"]
    control = MachineModel.from_options("mill-01", mill["simulator"] | {
        "programs": {"O1000": {"ideal_cycle_time": 30}, "O2000": {"ideal_cycle_time": 45}}})
    return model, control, ModbusBinding(model, "127.0.0.1", 0, 2, meter)


def engine(calendar: ShiftCalendar) -> OeeEngine:
    """The gateway's OEE engine for mill-01, rated in wall-clock seconds (time_scale 20)."""
    return OeeEngine("mill-01", calendar, 30 / 20, {"O1000": 30 / 20, "O2000": 45 / 20})


async def poll_across_lunch(
    client: AsyncModbusTcpClient, clock: Clock, unit: int, eng: OeeEngine,
    seen: Callable[[datetime, Execution, int], None], meter_unit: int | None = None,
    meter_seen: Callable[[datetime, float, float], None] | None = None,
) -> None:
    """What the gateway does: read the machine every 5 s, feed its state and counters."""
    t = LUNCH[0] - timedelta(minutes=10)
    while t <= LUNCH[1] + timedelta(minutes=10):
        clock.now = t
        rr = await client.read_holding_registers(0, count=14, device_id=unit)
        assert not rr.isError(), rr
        raw = struct.pack(">14H", *rr.registers)
        exe, mode, avail, estop, alarm = struct.unpack_from(">5H", raw, 0)
        parts, bad = struct.unpack_from(">2I", raw, 20)
        execution = EXECUTIONS[exe]
        eng.on_state(t, execution, avail == 1, "O1000", bool(alarm or estop), MODES[mode])
        eng.on_counts(t, parts, bad)
        seen(t, execution, parts)
        if meter_unit is not None and meter_seen is not None:
            ir = await client.read_input_registers(0, count=0x4C, device_id=meter_unit)
            assert not ir.isError(), ir
            regs = struct.pack(">76H", *ir.registers)
            meter_seen(t, struct.unpack_from(">f", regs, 2 * SDM630_TOTAL_POWER)[0],
                       struct.unpack_from(">f", regs, 2 * SDM630_IMPORT_KWH)[0])
        t += timedelta(seconds=5)


def in_lunch(t: datetime) -> bool:
    return LUNCH[0] <= t < LUNCH[1]


async def test_the_demo_mill_and_its_meter_idle_through_the_lunch_break(tmp_path: Path) -> None:
    model, control, binding = demo_plant(tmp_path)
    assert model.pauses is not None and binding.meter is not None
    assert binding.meter.machine.pauses is not None  # the meter's machine keeps them too
    clock = Clock(START)
    bindings = [ModbusBinding(model, "127.0.0.1", 0, 1), binding,
                ModbusBinding(control, "127.0.0.1", 0, 3)]
    sim = await serve_modbus(bindings, clock=clock, refresh_interval=0)
    try:
        (port,) = {e.port for e in sim.endpoints}
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        cal = model.pauses.calendar
        states: list[tuple[datetime, Execution, int]] = []
        meter: list[tuple[datetime, float, float]] = []
        controls: list[tuple[datetime, Execution, int]] = []
        demo, ctrl = engine(cal), engine(cal)
        await poll_across_lunch(client, clock, 1, demo, lambda *s: states.append(s), 2,
                                lambda *s: meter.append(s))
        await poll_across_lunch(client, clock, 3, ctrl, lambda *s: controls.append(s))
        client.close()
    finally:
        await sim.aclose()

    end = LUNCH[1] + timedelta(minutes=10)
    result: OeeResult = demo.window(LUNCH[0] - timedelta(minutes=10), end, now=end)
    control_result = ctrl.window(LUNCH[0] - timedelta(minutes=10), end, now=end)
    # the control cuts through lunch: parts and running time the OEE cannot count
    assert control_result.unplanned_pq > 100 and control_result.unplanned_apt > 600
    # the demo's mill does not: idle all break, the counter standing still, production
    # before and after it
    assert result.unplanned_pq == 0 and result.unplanned_apt == 0, result
    lunch = [(e, p) for t, e, p in states if in_lunch(t)]
    assert {e for e, _ in lunch} == {Execution.READY}
    assert len({p for _, p in lunch}) == 1
    assert result.pq > 20 and Execution.ACTIVE in {e for t, e, _ in states
                                                   if t >= LUNCH[1]}
    # its meter draws idle power in the break, and its energy keeps to that
    assert {round(w) for t, w, _ in meter if in_lunch(t)} == {binding.meter.profile.base_w}
    kwh = {t: e for t, _, e in meter}
    idle = binding.meter.profile.base_w * 1800 / 3.6e6
    assert abs(kwh[LUNCH[1]] - kwh[LUNCH[0]] - idle) < 0.01


def test_breaks_are_the_calendars_planned_downtime_inside_shifts(tmp_path: Path) -> None:
    model, _, _ = demo_plant(tmp_path)
    assert model.pauses is not None
    cal = model.pauses.calendar
    day = datetime(2026, 12, 7, tzinfo=BERLIN)
    got = [(a.astimezone(BERLIN).strftime("%H:%M"), b.astimezone(BERLIN).strftime("%H:%M"))
           for a, b in breaks_between(cal, day, day + timedelta(days=1))]
    assert got == [("02:00", "02:30"), ("09:00", "09:15"), ("12:00", "12:30"),
                   ("18:00", "18:30")]
    pauses = CalendarBreaks(cal, START)
    assert pauses.paused_seconds(LUNCH[0]) == 0.0
    assert pauses.paused(LUNCH[0]) and not pauses.paused(LUNCH[1])
    assert pauses.paused_seconds(LUNCH[0] + timedelta(minutes=10)) == 600.0
    # a day later: every break of the day once, however the days were reached
    later = START + timedelta(days=1, minutes=1)
    assert pauses.paused_seconds(later) == (30 + 30 + 15 + 30) * 60
    assert CalendarBreaks(cal, START).paused_seconds(later) == (30 + 30 + 15 + 30) * 60
    # the model's clock stands still in the break
    assert model.elapsed(LUNCH[1]) == model.elapsed(LUNCH[0]) == 3600 * 20
