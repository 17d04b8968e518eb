"""ModbusAdapter against real pymodbus servers over real sockets and a pty serial line."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import pytest
from e2e import until
from pydantic import BaseModel
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from recording_logger import RecordingLogger

from adapters.base import AdapterContext
from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.codec import encode
from adapters.modbus.settings import BIT_KINDS, ModbusPoint, ModbusSettings
from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError
from models.sample import Quality, Sample

KINDS = ("coil", "discrete", "holding", "input")  # SimDevice's block order


POINTS: list[dict[str, Any]] = [
    {
        "name": "spindle_speed",
        "register": "holding",
        "address": 0,
        "data_type": "float32",
        "byte_order": "CDAB",
        "unit": "1/min",
    },
    {"name": "part_count", "register": "holding", "address": 2, "data_type": "uint32"},
    {
        "name": "temperature",
        "register": "holding",
        "address": 4,
        "data_type": "int16",
        "scale": 0.1,
        "unit": "Cel",
    },
    {
        "name": "execution",
        "register": "holding",
        "address": 5,
        "map": {0: "stopped", 1: "ready", 2: "active"},
    },
    {"name": "program", "register": "holding", "address": 6, "data_type": "string", "length": 4},
    {"name": "door_open", "register": "holding", "address": 10, "data_type": "bit", "bit": 3},
    {"name": "coolant_on", "register": "holding", "address": 10, "data_type": "bit", "bit": 0},
    {"name": "emergency_stop", "register": "holding", "address": 11, "data_type": "bool"},
    {
        "name": "energy",
        "register": "holding",
        "address": 12,
        "data_type": "int64",
        "byte_order": "DCBA",
    },
    {
        "name": "position",
        "register": "holding",
        "address": 16,
        "data_type": "float64",
        "byte_order": "BADC",
        "unit": "mm",
    },
    {"name": "mode_code", "register": "holding", "address": 20, "map": {0: "automatic"}},
    {"name": "load", "register": "input", "address": 0, "unit": "%"},
    {"name": "spindle_on", "register": "coil", "address": 3},
    {"name": "alarm", "register": "discrete", "address": 5},
    {"name": "other_unit", "register": "holding", "address": 0, "unit_id": 2},
]
VALUES: dict[str, Any] = {
    "spindle_speed": 1234.5,
    "part_count": 70000,
    "temperature": -12.5,
    "execution": "active",
    "program": "O1234",
    "door_open": True,
    "coolant_on": False,
    "emergency_stop": False,
    "energy": -5_000_000_000,
    "position": -123.456,
    "mode_code": 9,
    "load": 42,
    "spindle_on": True,
    "alarm": True,
    "other_unit": 777,
}


def device_blocks(points: list[ModbusPoint], values: dict[str, Any]) -> dict[int, SimDevice]:
    """Registers a device holding these values would expose; unlisted addresses are holes."""
    cells: dict[int, dict[str, dict[int, int]]] = {}
    for p in points:
        unit = p.unit_id or 1
        kind_cells = cells.setdefault(unit, {k: {} for k in KINDS})[p.kind]
        for i, reg in enumerate(encode(values[p.name], p)):
            kind_cells[p.address + i] = kind_cells.get(p.address + i, 0) | reg  # bits OR up
    devices = {}
    for unit, by_kind in cells.items():
        blocks: list[list[SimData]] = []
        for kind in KINDS:
            addrs = sorted(by_kind[kind]) or [60000]  # SimDevice wants every block non-empty
            runs: list[list[int]] = []
            for a in addrs:
                if runs and a == runs[-1][-1] + 1:
                    runs[-1].append(a)
                else:
                    runs.append([a])
            bits = kind in BIT_KINDS
            blocks.append(
                [
                    SimData(
                        run[0],
                        values=[
                            bool(by_kind[kind].get(a, 0)) if bits else by_kind[kind].get(a, 0)
                            for a in run
                        ],
                        datatype=DataType.BITS if bits else DataType.REGISTERS,
                    )
                    for run in runs
                ]
            )
        devices[unit] = SimDevice(unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]))
    return devices


def settings(points: list[dict[str, Any]], **connection: Any) -> ModbusSettings:
    return ModbusSettings.model_validate({"connection": connection, "points": points})


@asynccontextmanager
async def tcp_server(
    points: list[dict[str, Any]],
    values: dict[str, Any],
    *,
    port: int = 0,
    framer: FramerType = FramerType.SOCKET,
) -> AsyncIterator[int]:
    model = [ModbusPoint.model_validate(p) for p in points]
    devices = list(device_blocks(model, values).values())
    server = ModbusTcpServer(devices, address=("127.0.0.1", port), framer=framer)
    try:
        yield await start(server)
    finally:
        await stop(server)


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    async def guarded(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handle(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def start(server: Any) -> int:
    """Start a pymodbus server in the background; the port it listens on."""
    await server.serve_forever(background=True)
    sockets = getattr(server.transport, "sockets", None)  # a serial server has none
    port: int = sockets[0].getsockname()[1] if sockets else 0
    return port


async def stop(server: Any) -> None:
    await server.shutdown()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_adapter(s: ModbusSettings, logger: Any = None, keep_raw: bool = False) -> ModbusAdapter:
    return ModbusAdapter(
        AdapterContext(asset="m1", poll_interval=0.1, logger=logger, keep_raw=keep_raw), s)


def by_signal(samples: list[Sample] | Any) -> dict[str, Sample]:
    out = {s.signal: s for s in samples}
    assert len(out) == len(samples), "a signal was reported twice"
    return out


def assert_values(got: dict[str, Sample], names: list[str]) -> None:
    for name in names:
        expected = VALUES[name]
        sample = got[name]
        assert sample.quality is Quality.GOOD, name
        if isinstance(expected, float):
            assert sample.value == pytest.approx(expected, rel=1e-6), name
        else:
            assert sample.value == expected, name


async def test_values_decode_and_missing_register_is_bad_not_fatal() -> None:
    ghost = {"name": "ghost", "register": "holding", "address": 500}
    async with tcp_server(POINTS, VALUES) as port:
        logger = RecordingLogger()
        adapter = make_adapter(settings([*POINTS, ghost], host="127.0.0.1", port=port), logger)
        await adapter.connect()
        try:
            got = by_signal(await adapter.read_once())
            again = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()

    assert set(got) == {p["name"] for p in POINTS} | {"ghost"}
    assert_values(got, [n for n in VALUES if n != "mode_code"])
    assert got["mode_code"].value == "9"
    assert got["mode_code"].quality is Quality.UNCERTAIN
    assert got["ghost"].value is None
    assert got["ghost"].quality is Quality.BAD
    assert got["spindle_speed"].unit == "1/min"
    assert got["spindle_speed"].asset == "m1"
    assert got["spindle_speed"].gateway_ts.tzinfo is not None
    assert again["ghost"].quality is Quality.BAD
    assert again["part_count"].value == 70000
    # unit1: coil, discrete, holding 0-20, holding 500, input; unit 2: holding
    assert adapter.last_cycle_requests == 6
    info = adapter.describe()
    assert info["requests_per_cycle"] == 6
    assert info["points"] == len(POINTS) + 1
    assert info["endpoint"] == f"tcp://127.0.0.1:{port}"
    # logged once although it failed in both cycles
    assert [(e, kw["points"], kw["address"]) for e, kw in logger.events] == [
        ("modbus_exception", ["ghost"], 500)
    ]
    assert "illegal data address" in logger.events[0][1]["error"]


async def test_wire_layout_independent_of_our_encoder() -> None:
    """Registers written by hand, so a codec bug cannot cancel itself out through `encode`."""
    device = SimDevice(
        1,
        simdata=(
            [SimData(0, values=[False, True], datatype=DataType.BITS)],
            [SimData(0, values=[True], datatype=DataType.BITS)],
            [
                SimData(
                    0, values=[0x0000, 0x3F80, 0x0102, 0x0304, 0x4F4B], datatype=DataType.REGISTERS
                )
            ],
            [SimData(0, values=[0xFFFE], datatype=DataType.REGISTERS)],
        ),
    )
    points = [
        {
            "name": "f",
            "register": "holding",
            "address": 0,
            "data_type": "float32",
            "byte_order": "CDAB",
        },
        {"name": "u", "register": "holding", "address": 2, "data_type": "uint32"},
        {"name": "s", "register": "holding", "address": 4, "data_type": "string", "length": 1},
        {"name": "i", "register": "input", "address": 0, "data_type": "int16"},
        {"name": "c", "register": "coil", "address": 1},
    ]
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    try:
        adapter = make_adapter(settings(points, host="127.0.0.1", port=await start(server)))
        await adapter.connect()
        got = by_signal(await adapter.read_once())
        await adapter.aclose()
    finally:
        await stop(server)
    assert {k: v.value for k, v in got.items()} == {
        "f": 1.0,
        "u": 0x01020304,
        "s": "OK",
        "i": -2,
        "c": True,
    }


async def test_raw_values_are_each_points_registers_or_the_refusal() -> None:
    """What the machine page shows beside a decoded value: the point's own words of the
    coalesced read, or why the device refused them; nothing kept unless asked for."""
    device = SimDevice(1, simdata=(
        [SimData(0, values=[False], datatype=DataType.BITS)],
        [SimData(0, values=[False], datatype=DataType.BITS)],
        [SimData(0, values=[0x0001, 0x86A0, 0x00FB], datatype=DataType.REGISTERS)],
        [SimData(0, values=[0], datatype=DataType.REGISTERS)],
    ))
    points = [
        {"name": "count", "register": "holding", "address": 0, "data_type": "uint32"},
        {"name": "temp", "register": "holding", "address": 2},
        {"name": "ghost", "register": "holding", "address": 500},
    ]
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    try:
        port = await start(server)
        kept = ModbusAdapter(AdapterContext(asset="m1", keep_raw=True),
                             settings(points, host="127.0.0.1", port=port))
        plain = make_adapter(settings(points, host="127.0.0.1", port=port))
        for adapter in (kept, plain):
            await adapter.connect()
            await adapter.read_once()
            await adapter.aclose()
    finally:
        await stop(server)
    raw = kept.raw_values()
    assert raw["count"] == "0x0001 0x86a0"
    assert raw["temp"] == "0x00fb"
    assert raw["ghost"].startswith("exception 2 (illegal data address")
    assert plain.raw_values() == {}


async def test_one_request_per_point_rescues_a_picky_device() -> None:
    points = [
        {"name": "a", "register": "holding", "address": 0},
        {"name": "hole", "register": "holding", "address": 5},
    ]  # 1-4 do not exist
    async with tcp_server(points[:1], {"a": 11}) as port:
        coalesced = make_adapter(settings(points, host="127.0.0.1", port=port), keep_raw=True)
        split = make_adapter(
            settings(points, host="127.0.0.1", port=port, one_request_per_point=True)
        )
        for adapter in (coalesced, split):
            await adapter.connect()
        try:
            one = by_signal(await coalesced.read_once())
            two = by_signal(await split.read_once())
        finally:
            await coalesced.aclose()
            await split.aclose()
    # the joined read was refused (illegal address), then split and retried in the same cycle
    assert coalesced.last_cycle_requests == 3
    assert (one["a"].value, one["a"].quality) == (11, Quality.GOOD)
    assert one["hole"].quality is Quality.BAD
    assert len(coalesced.plan) == 2, "the split is remembered"
    # the status page's raw view: registers as read, or why the device refused them
    assert coalesced.raw_values() == {"a": "0x000b", "hole": "exception 2 (illegal data address)"}
    assert split.raw_values() == {}, "kept only when asked"
    assert split.last_cycle_requests == 2
    assert (two["a"].value, two["a"].quality) == (11, Quality.GOOD)
    assert two["hole"].quality is Quality.BAD


async def test_no_listener_is_device_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    async with raw_server(silent) as port:
        pass  # now closed: nobody listens on `port`
    adapter = make_adapter(settings(POINTS[:1], host="127.0.0.1", port=port, timeout=0.5))
    with pytest.raises(DeviceUnavailable):
        await adapter.connect()
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await adapter.read_once()
    await adapter.aclose()


async def test_silent_device_is_unavailable_within_the_timeout() -> None:
    async def swallow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await r.read(1024):
            pass

    async with raw_server(swallow) as port:
        adapter = make_adapter(settings(POINTS[:3], host="127.0.0.1", port=port, timeout=1.0))
        await adapter.connect()
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable, match=r"no reply within 1\.0s"):
            await adapter.read_once()
        elapsed = time.monotonic() - started
        await adapter.aclose()
    # not before the timeout; not after the adapter's guard (timeout * 1.5 + 0.1) plus a
    # second for a loaded host: a read that retried (pymodbus' default: 3 more) or waited
    # past the guard takes 4 s or more. (0.3 s with 0.2 s to spare failed on a busy host.)
    assert 0.95 <= elapsed < 1.0 * 1.5 + 0.1 + 1.0, f"{elapsed:.2f} s"


def reply(
    handler: Callable[[int, int, bytes], bytes],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A hand-made Modbus TCP device: `handler(tid, unit, pdu)` returns raw bytes to send."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            tid, _pid, length, unit = struct.unpack(">HHHB", await r.readexactly(7))
            w.write(handler(tid, unit, await r.readexactly(length - 1)))
            await w.drain()

    return serve


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda tid, unit, pdu: b"\xff\x00\x13 garbage", id="garbage"),
        pytest.param(
            lambda tid, unit, pdu: mbap(tid + 7, unit, b"\x03\x04\x00\x01\x00\x02"),
            id="wrong-transaction-id",
        ),
        pytest.param(
            lambda tid, unit, pdu: mbap(tid, unit + 1, b"\x03\x04\x00\x01\x00\x02"), id="wrong-unit"
        ),
    ],
)
async def test_garbled_reply_is_a_protocol_error(
    answer: Callable[[int, int, bytes], bytes],
) -> None:
    async with raw_server(reply(answer)) as port:
        adapter = make_adapter(settings(POINTS[:2], host="127.0.0.1", port=port, timeout=0.3))
        await adapter.connect()
        with pytest.raises(ProtocolError):
            await adapter.read_once()
        # the stream may be out of step: the connection was dropped
        with pytest.raises(DeviceUnavailable, match="not connected"):
            await adapter.read_once()
        await adapter.aclose()


async def test_short_reply_marks_its_points_bad() -> None:
    # asked for 4 registers (float32 + uint32), the device sends one
    answer = reply(lambda tid, unit, pdu: mbap(tid, unit, b"\x03\x02\x12\x34"))
    async with raw_server(answer) as port:
        logger = RecordingLogger()
        adapter = make_adapter(settings(POINTS[:2], host="127.0.0.1", port=port), logger)
        await adapter.connect()
        got = by_signal(await adapter.read_once())
        await adapter.aclose()
    assert {s.quality for s in got.values()} == {Quality.BAD}
    assert "short reply: 1 of 4" in logger.events[0][1]["error"]


async def test_device_goes_away_and_comes_back() -> None:
    s_points = POINTS[:2]
    async with tcp_server(s_points, VALUES) as port:
        adapter = make_adapter(settings(s_points, host="127.0.0.1", port=port, timeout=0.5))
        await adapter.connect()
        assert by_signal(await adapter.read_once())["part_count"].value == 70000
    await until(lambda: not port_open(port), 5, "the device to be gone")
    with pytest.raises(DeviceUnavailable):
        await adapter.read_once()
    with pytest.raises(DeviceUnavailable):
        await adapter.connect()
    async with tcp_server(s_points, {**VALUES, "part_count": 70001}, port=port):
        await adapter.connect()  # what the runner does after its backoff
        assert by_signal(await adapter.read_once())["part_count"].value == 70001
        await adapter.aclose()


async def test_rtu_over_tcp() -> None:
    async with tcp_server(POINTS, VALUES, framer=FramerType.RTU) as port:
        adapter = make_adapter(
            settings(POINTS, transport="rtu_over_tcp", host="127.0.0.1", port=port)
        )
        await adapter.connect()
        try:
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
    assert_values(got, ["spindle_speed", "energy", "position", "program", "other_unit", "alarm"])
    assert adapter.describe()["endpoint"] == f"rtu+tcp://127.0.0.1:{port}"


@contextmanager
def null_modem() -> Iterator[tuple[str, str]]:
    """Two pty pairs joined master-to-master: a serial cable with a device path at each end."""
    loop = asyncio.get_running_loop()
    (ma, sa), (mb, sb) = os.openpty(), os.openpty()
    for fd in (ma, mb, sa, sb):
        tty.setraw(fd)
    for fd in (ma, mb):
        os.set_blocking(fd, False)

    def pump(src: int, dst: int) -> None:
        with suppress(OSError):  # includes BlockingIOError
            os.write(dst, os.read(src, 4096))

    loop.add_reader(ma, pump, ma, mb)
    loop.add_reader(mb, pump, mb, ma)
    try:
        yield os.ttyname(sa), os.ttyname(sb)
    finally:
        loop.remove_reader(ma)
        loop.remove_reader(mb)
        for fd in (ma, mb, sa, sb):
            os.close(fd)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs ptys")
async def test_rtu_over_a_serial_line() -> None:
    points = [{**p, "unit_id": 5} for p in POINTS if "unit_id" not in p]
    model = [ModbusPoint.model_validate(p) for p in points]
    with null_modem() as (device_end, gateway_end):
        server = ModbusSerialServer(
            list(device_blocks(model, VALUES).values()), port=device_end, baudrate=115200
        )
        await start(server)
        adapter = make_adapter(
            settings(
                points,
                transport="rtu",
                port_path=gateway_end,
                baudrate=115200,
                parity="N",
                timeout=1.0,
            )
        )
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
            await stop(server)
    assert_values(got, [p["name"] for p in points if p["name"] != "mode_code"])
    assert adapter.describe()["endpoint"] == f"rtu://{gateway_end}?115200-8N1"


async def test_missing_serial_port_is_device_unavailable() -> None:
    adapter = make_adapter(settings(POINTS[:1], transport="rtu", port_path="/dev/nonexistent-tty"))
    with pytest.raises(DeviceUnavailable):
        await adapter.connect()


def test_wrong_settings_type_is_a_configuration_error() -> None:
    class Other(BaseModel):
        x: int = 1

    with pytest.raises(ConfigurationError):
        ModbusAdapter(AdapterContext(asset="m1"), Other())


def test_adapter_never_imports_the_daemon() -> None:
    code = (
        "import sys, adapters.modbus.adapter, adapters.modbus.plan; "
        "sys.exit(any(m == 'edge' or m.startswith('edge.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
