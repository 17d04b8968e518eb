"""The Modbus simulator serves the README register map over a real socket, read-only."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_port
from e2e import until
from pymodbus.client import AsyncModbusTcpClient

from models.machine_state import ControllerMode, Execution
from simulators import MachineModel, MachineSnapshot, ScriptEvent
from simulators.modbus_server import (
    EXECUTION_CODES,
    ModbusBinding,
    encode_holding_registers,
    serve_modbus,
    start_modbus_simulator,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # on the 100 ms grid
ILLEGAL_ADDRESS = 2


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[int], AsyncModbusTcpClient]]:
    clients: list[AsyncModbusTcpClient] = []

    def make(port: int) -> AsyncModbusTcpClient:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


async def holding(client: AsyncModbusTcpClient, address: int, count: int, unit: int = 1) -> bytes:
    """Registers as bytes, in requests of at most 100 (Modbus allows 125 per read)."""
    raw = b""
    for start in range(address, address + count, 100):
        n = min(100, address + count - start)
        rr = await client.read_holding_registers(start, count=n, device_id=unit)
        assert not rr.isError(), rr
        raw += struct.pack(f">{n}H", *rr.registers)
    return raw


def f32(raw: bytes, register: int) -> float:
    return float(struct.unpack_from(">f", raw, 2 * register)[0])


def decode(raw: bytes) -> dict[str, object]:
    """Holding registers 0-107 decoded by the README table, independently of the server."""
    exe, mode, avail, estop, alarm, number = struct.unpack_from(">6H", raw, 0)
    parts, bad = struct.unpack_from(">2I", raw, 20)
    cdab = raw[200:204]
    (parts64,) = struct.unpack_from(">Q", raw, 204)
    (temp_x10,) = struct.unpack_from(">h", raw, 212)
    (status,) = struct.unpack_from(">H", raw, 214)
    return {
        "execution": exe,
        "mode": mode,
        "available": avail,
        "estop": estop,
        "alarm": alarm,
        "program_number": number,
        "parts": parts,
        "bad": bad,
        "spindle_speed": f32(raw, 20),
        "spindle_load": f32(raw, 22),
        "feed_rate": f32(raw, 24),
        "spindle_temperature": f32(raw, 26),
        "coolant_temperature": f32(raw, 28),
        "last_cycle_time": f32(raw, 30),
        "program": raw[80:96].rstrip(b"\0").decode("ascii"),
        "spindle_speed_cdab": struct.unpack(">f", cdab[2:] + cdab[:2])[0],
        "parts64": parts64,
        "spindle_temperature_x10": temp_x10,
        "status": status,
    }


def expected(s: MachineSnapshot) -> dict[str, object]:
    execution = [
        "ready",
        "active",
        "interrupted",
        "feed_hold",
        "stopped",
        "program_stopped",
        "program_completed",
        "wait",
        "optional_stop",
    ].index(s.execution.value)
    mode = ["automatic", "manual", "mdi", "edit", "semi_automatic"].index(s.controller_mode.value)
    f = pytest.approx
    return {
        "execution": execution,
        "mode": mode,
        "available": 1,
        "estop": int(s.emergency_stop),
        "alarm": s.alarm_code,
        "program_number": s.program_number,
        "parts": s.part_count,
        "bad": s.bad_part_count,
        "spindle_speed": f(s.spindle_speed, rel=1e-6),
        "spindle_load": f(s.spindle_load, rel=1e-6),
        "feed_rate": f(s.feed_rate, rel=1e-6),
        "spindle_temperature": f(s.spindle_temperature, rel=1e-6),
        "coolant_temperature": f(s.coolant_temperature, rel=1e-6),
        "last_cycle_time": f(s.last_cycle_time, rel=1e-6),
        "program": s.program,
        "spindle_speed_cdab": f(s.spindle_speed, rel=1e-6),
        "parts64": s.part_count,
        "spindle_temperature_x10": round(s.spindle_temperature * 10),
        "status": s.running | s.alarm_active << 1 | s.door_closed << 2,
    }


async def read_machine(client: AsyncModbusTcpClient, unit: int = 1) -> dict[str, object]:
    raw = await holding(client, 0, 108, unit)
    return decode(raw)


async def test_registers_match_the_snapshot(
    client_for: Callable[[int], AsyncModbusTcpClient],
) -> None:
    model = MachineModel("cnc-01", seed=1, time_scale=60, start=NOW - timedelta(hours=1))
    clock = Clock(NOW)
    async with await start_modbus_simulator(model, "127.0.0.1", 0, 1, clock=clock) as sim:
        client = client_for(sim.port("cnc-01"))
        assert await client.connect()
        snap = model.snapshot(NOW)
        assert await read_machine(client) == expected(snap)

        process = await holding(client, 200, 100)
        assert list(struct.unpack(">100H", process)) == model.process_values(snap)
        gaps = await holding(client, 6, 4) + await holding(client, 108, 92)
        assert set(gaps) == {0}

        ir = await client.read_input_registers(0, count=32, device_id=1)
        hr = await client.read_holding_registers(0, count=32, device_id=1)
        assert ir.registers == hr.registers
        coils = await client.read_coils(0, count=1, device_id=1)
        inputs = await client.read_discrete_inputs(0, count=2, device_id=1)
        assert coils.bits[0] == snap.running
        assert inputs.bits[:2] == [snap.alarm_active, snap.emergency_stop]

        # Time moves, registers follow; reads alone change nothing.
        first = await holding(client, 0, 300)
        assert await holding(client, 0, 300) == first
        clock.now = NOW + timedelta(minutes=7)
        assert await read_machine(client) == expected(model.snapshot(clock.now))
        assert await holding(client, 0, 300) != first


async def test_bits_and_codes_follow_a_scripted_machine(
    client_for: Callable[[int], AsyncModbusTcpClient],
) -> None:
    model = MachineModel.scripted(
        "cnc-02",
        [
            ScriptEvent(
                at=0,
                execution=Execution.ACTIVE,
                part_count=70_000,
                bad_part_count=3,
                program="O4242",
            ),
            ScriptEvent(
                at=60,
                execution=Execution.INTERRUPTED,
                alarm_code=2002,
                alarm_text="tool breakage",
                controller_mode=ControllerMode.MDI,
            ),
            ScriptEvent(at=120, execution=Execution.STOPPED, emergency_stop=True, alarm_code=0),
        ],
        start=NOW,
    )
    clock = Clock(NOW + timedelta(seconds=30))
    async with await serve_modbus([(model, "127.0.0.1", 0, 7)], clock=clock) as sim:
        client = client_for(sim.port("cnc-02"))
        await client.connect()
        regs = await read_machine(client, unit=7)
        assert (
            regs["execution"],
            regs["parts"],
            regs["parts64"],
            regs["program"],
            regs["program_number"],
            regs["status"],
        ) == (EXECUTION_CODES[Execution.ACTIVE], 70_000, 70_000, "O4242", 4242, 0b101)
        assert (await client.read_coils(0, count=1, device_id=7)).bits[0] is True

        clock.now = NOW + timedelta(seconds=90)
        regs = await read_machine(client, unit=7)
        assert (regs["execution"], regs["mode"], regs["alarm"], regs["status"]) == (
            2,
            2,
            2002,
            0b110,
        )
        di = await client.read_discrete_inputs(0, count=2, device_id=7)
        assert di.bits[:2] == [True, False]

        clock.now = NOW + timedelta(seconds=150)
        regs = await read_machine(client, unit=7)
        assert (regs["execution"], regs["estop"], regs["alarm"]) == (4, 1, 0)
        di = await client.read_discrete_inputs(0, count=2, device_id=7)
        assert di.bits[:2] == [False, True]


async def test_outside_the_map_is_an_illegal_address(
    client_for: Callable[[int], AsyncModbusTcpClient],
) -> None:
    model = MachineModel("cnc-01", seed=1)
    async with await start_modbus_simulator(model, "127.0.0.1", 0) as sim:
        client = client_for(sim.port("cnc-01"))
        await client.connect()
        requests: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.read_holding_registers(1000, count=1, device_id=1),
            lambda: client.read_holding_registers(299, count=2, device_id=1),
            lambda: client.read_input_registers(32, count=1, device_id=1),
            lambda: client.read_coils(16, count=1, device_id=1),
            lambda: client.read_discrete_inputs(100, count=1, device_id=1),
            lambda: client.write_register(0, 5, device_id=1),
            lambda: client.write_coil(0, True, device_id=1),
        ]
        for request in requests:
            rr = await request()
            assert rr.isError()
            assert rr.exception_code == ILLEGAL_ADDRESS
        ok = await client.read_holding_registers(0, count=1, device_id=1)  # still serving
        assert not ok.isError()


async def test_machines_on_two_ports_and_two_units_are_independent(
    client_for: Callable[[int], AsyncModbusTcpClient],
) -> None:
    a = MachineModel("a", seed=1, time_scale=60, start=NOW - timedelta(hours=2))
    b = MachineModel("b", seed=2, time_scale=60, start=NOW - timedelta(hours=3))
    c = MachineModel("c", seed=3, time_scale=60, start=NOW - timedelta(hours=4))
    clock = Clock(NOW)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    shared_port = free.getsockname()[1]
    free.close()
    bindings = [
        ModbusBinding(a, "127.0.0.1", 0, 1),
        ModbusBinding(b, "127.0.0.1", shared_port, 1),
        ModbusBinding(c, "127.0.0.1", shared_port, 2),
    ]
    async with await serve_modbus(bindings, clock=clock) as sim:
        assert sim.port("a") != shared_port == sim.port("b") == sim.port("c")
        ca, cb = client_for(sim.port("a")), client_for(shared_port)
        await ca.connect()
        await cb.connect()
        got = {
            "a": await read_machine(ca),
            "b": await read_machine(cb, 1),
            "c": await read_machine(cb, 2),
        }
        for m in (a, b, c):
            assert got[m.asset] == expected(m.snapshot(NOW))
        assert got["a"] != got["b"] != got["c"]


async def test_real_clock_values_move_without_anyone_writing() -> None:
    model = MachineModel("fast", seed=1, time_scale=600)
    async with await start_modbus_simulator(model, "127.0.0.1", 0) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port("fast"))
        await client.connect()
        try:
            first = (await client.read_holding_registers(200, count=100, device_id=1)).registers
            later = first

            async def moved() -> bool:
                nonlocal later
                later = (await client.read_holding_registers(200, count=100,
                                                             device_id=1)).registers
                return later != first

            # time_scale 600: values change within a second
            await until(moved, 5, "a register to change on the simulator's own clock")
        finally:
            client.close()
        assert first != later


async def test_bad_bindings_are_refused() -> None:
    model = MachineModel("m", start=NOW)
    with pytest.raises(ValueError, match="used twice"):
        await serve_modbus([(model, "127.0.0.1", 0, 1), (model, "127.0.0.1", 0, 1)])
    with pytest.raises(ValueError, match="unit id"):
        await serve_modbus([(model, "127.0.0.1", 0, 300)])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await start_modbus_simulator(model, "127.0.0.1", busy.getsockname()[1])
    finally:
        busy.close()


def test_encoding_is_the_documented_layout() -> None:
    model = MachineModel.scripted(
        "m",
        [
            ScriptEvent(
                at=0,
                execution=Execution.FEED_HOLD,
                part_count=2**33 + 5,
                program="ABCDEFGHIJKLMNOP",
            ),
        ],
        start=NOW,
    )
    regs = encode_holding_registers(model, model.snapshot(NOW))
    assert len(regs) == 300
    assert regs[0] == 3
    assert regs[10:12] == [0, 5]  # uint32 wraps: low 32 bits of 2**33 + 5
    assert regs[102:106] == [0, 2, 0, 5]
    assert bytes(b for r in regs[40:48] for b in r.to_bytes(2, "big")) == b"ABCDEFGHIJKLMNOP"


async def test_command_line_entry_serves_a_machine() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.modbus_server",
        "--port",
        str(port),
        "--seed",
        "1",
        "--time-scale",
        "60",
        cwd=ROOT,
    )
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    try:
        assert await asyncio.to_thread(wait_port, "127.0.0.1", port, 10.0), "simulator listens"
        assert await client.connect()
        rr = await client.read_holding_registers(0, count=6, device_id=1)
        assert not rr.isError()
        assert rr.registers[2] == 1  # available
        assert rr.registers[5] in (1000, 2000, 3000)
    finally:
        client.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
