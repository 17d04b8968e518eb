"""HaasAdapter against the Haas simulator over real sockets and a pty serial line, plus the
framing rules byte by byte (STX/ETB, `>` prompts, blank lines, split reads)."""

from __future__ import annotations

import os
import tty
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fixed_reply_peer import fixed_reply_peer
from pydantic import ValidationError
from sample_machine import read_sample_block

from adapters.base import AdapterContext
from adapters.haas import protocol as p
from adapters.haas.adapter import HaasAdapter
from adapters.haas.settings import HaasSettings
from models.errors import DeviceUnavailable, ProtocolError
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.haas_server import HaasSimulator, reply_for, serve_haas
from simulators.machine import MachineModel, ScriptEvent

MACROS = [
    {"name": "spindle_speed", "macro": 3027, "unit": "1/min"},
    {"name": "bad_part_count", "macro": 3902, "data_type": "int"},
    {"name": "spindle_load", "macro": 1098, "unit": "%"},
    {"name": "nonsense", "macro": 99999},
]


def scripted(execution: Execution = Execution.READY, **kw: Any) -> MachineModel:
    event = ScriptEvent(at=0, execution=execution, controller_mode=kw.pop("mode", None)
                        or ControllerMode.AUTOMATIC, program="O2000", part_count=41,
                        bad_part_count=2, **kw)
    return MachineModel.scripted("haas-1", [event])


def adapter_for(connection: dict[str, Any], points: list[dict[str, Any]] | None = None
                ) -> HaasAdapter:
    settings = HaasSettings.model_validate(
        {"connection": connection, "points": MACROS if points is None else points})
    return HaasAdapter(AdapterContext(asset="haas-1", poll_interval=0.05), settings)


def by_signal(samples: list[Sample] | Any) -> dict[str, Sample]:
    return {s.signal: s for s in samples}


@asynccontextmanager
async def haas(model: MachineModel, framing: Any = "stx") -> AsyncIterator[int]:
    sim = await serve_haas(model, port=0, framing=framing)
    try:
        yield sim.ports[model.asset]
    finally:
        await sim.aclose()


# --- framing ------------------------------------------------------------------------------

def test_command_bytes() -> None:
    assert p.command(100) == b"?Q100\r\n"
    assert p.command(600, 3027) == b"?Q600 3027\r\n"


@pytest.mark.parametrize("wire", [
    b"\x02PROGRAM, O01000, IDLE, PARTS, 123\x17\r\n>",  # the manual's framing
    b">PROGRAM, O01000, IDLE, PARTS, 123\r\n",  # prompt first, as many NGC controls send
    b"\r\n\r\n>\r\n>PROGRAM, O01000, IDLE, PARTS, 123\r\n>",  # blank lines and stray prompts
    b"PROGRAM, O01000, IDLE, PARTS, 123\n",  # bare line
])
def test_reply_reader_tolerates_framings(wire: bytes) -> None:
    assert p.ReplyReader().feed(wire) == ["PROGRAM, O01000, IDLE, PARTS, 123"]


def test_reply_reader_split_reads_and_two_replies() -> None:
    r = p.ReplyReader()
    wire = b"\x02MODE, (MEM)\x17\r\n>\x02MACRO, 3027.000000\x17\r\n>"
    got: list[str] = []
    for i in range(len(wire)):  # one byte at a time
        got += r.feed(wire[i:i + 1])
    assert got == ["MODE, (MEM)", "MACRO, 3027.000000"]


def test_reply_reader_refuses_endless_garbage() -> None:
    with pytest.raises(ValueError, match="terminator"):
        p.ReplyReader().feed(b"x" * (p.MAX_REPLY + 1))


def test_reply_parsers() -> None:
    assert p.parse_status("PROGRAM, O01000, IDLE, PARTS, 123") == p.Status("IDLE", "O01000", 123)
    assert p.parse_status("STATUS, BUSY") == p.Status("BUSY")
    assert p.parse_status("PROGRAM, O00001, FEED HOLD, PARTS, 0").status == "FEED HOLD"
    with pytest.raises(ValueError):
        p.parse_status("SERIAL NUMBER, 1")
    assert p.mode_word("MODE, (MEM)") == "MEM"
    assert p.mode_word("MODE, MDI") == "MDI"
    assert p.parse_macro("MACRO, 3027.500000") == 3027.5
    assert p.value_of("SERIAL NUMBER, 1234567") == "1234567"
    assert [p.program_name(x) for x in ("O01000", "O00012", "O12345", "MYPART.NC")] == [
        "O1000", "O0012", "O12345", "MYPART.NC"]
    assert p.is_error("INVALID COMMAND")


def test_simulator_replies_match_the_machine() -> None:
    model = scripted(Execution.FEED_HOLD)
    now = datetime.now(UTC)
    assert reply_for(model, "?Q500", now) == "PROGRAM, O02000, FEED HOLD, PARTS, 41"
    assert reply_for(model, "?Q104", now) == "MODE, (MEM)"
    assert reply_for(model, "?Q600 3902", now) == "MACRO, 2.000000"
    assert reply_for(model, "?Q999", now) == "INVALID COMMAND"
    assert reply_for(scripted(Execution.ACTIVE), "Q500", now) == "STATUS, BUSY"


# --- settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    {"connection": {}},  # tcp without host
    {"connection": {"transport": "serial"}},  # serial without port_path
    {"connection": {"host": "h"}, "points": [{"name": "a", "macro": 1}, {"name": "a", "macro": 2}]},
    {"connection": {"host": "h", "bogus": 1}},
    {"connection": {"host": "h", "mode": False, "status": False}},
])
def test_invalid_settings_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HaasSettings.model_validate(raw)


def test_a_macro_named_like_an_enabled_command_signal_clashes() -> None:
    """Refused by the loader at the point's name; `part_count` is the documented override,
    and a command turned off leaves its names free."""
    points = [{"name": "execution", "macro": 1}, {"name": "controller_mode", "macro": 2},
              {"name": "part_count", "macro": 3901}]
    on = HaasSettings.model_validate({"connection": {"host": "h"}, "points": points})
    assert sorted(on.point_clashes()) == [
        (0, "rename the point, e.g. execution_point; Q500 (status: true) already publishes "
            "`execution`"),
        (1, "rename the point, e.g. controller_mode_point; Q104 (mode: true) already "
            "publishes `controller_mode`"),
    ]
    off = HaasSettings.model_validate({"connection": {"host": "h", "mode": False},
                                       "points": points[1:]})
    assert off.point_clashes() == []


@pytest.mark.parametrize("execution", [Execution.READY, Execution.ACTIVE])
async def test_part_count_from_the_m30_macro_replaces_q500s(execution: Execution) -> None:
    """Q500 reports PARTS while idle and only BUSY while cutting; #3901 keeps counting, so
    with a `part_count` point only the macro's goes out, in either state."""
    async with haas(scripted(execution)) as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port},
                              points=[{"name": "part_count", "macro": 3901, "data_type": "int"}])
        try:
            await adapter.connect()
            samples = list(await adapter.read_once())
        finally:
            await adapter.aclose()
    assert [s.value for s in samples if s.signal == "part_count"] == [41]


# --- over TCP -----------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["stx", "prompt"])
async def test_reads_identity_mode_status_and_macros(framing: str) -> None:
    async with haas(scripted(Execution.READY), framing) as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port, "timeout": 1.0})
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
    assert got["serial_number"].value and str(got["serial_number"].value).isdigit()
    assert got["model"].value == "VF-2SS"
    assert got["control_version"].value == "100.21.000.1120"
    assert got["controller_mode"].value == "automatic"
    assert got["haas_mode"].value == "MEM"
    assert got["execution"].value == "ready"
    assert got["program"].value == "O2000"  # canonical form, as FOCAS and the YAML write it
    assert got["program_number"].value == 2000
    assert got["part_count"].value == 41
    assert got["alarm"].value == ""
    assert got["bad_part_count"].value == 2
    assert got["spindle_speed"].value == 0.0 and got["spindle_speed"].unit == "1/min"
    assert got["nonsense"].quality is Quality.BAD and got["nonsense"].value is None
    assert adapter.describe()["requests_per_cycle"] == 2 + len(MACROS)


async def test_busy_reports_active_without_program() -> None:
    async with haas(scripted(Execution.ACTIVE)) as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port}, points=[])
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
    assert got["execution"].value == "active"
    assert "program" not in got and "part_count" not in got


async def test_alarm_and_modes() -> None:
    model = scripted(Execution.INTERRUPTED, mode=ControllerMode.MDI, alarm_code=1001)
    async with haas(model) as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port, "identify": False}, points=[])
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
    assert got["execution"].value == "stopped"
    assert got["alarm"].value == "ALARM"
    assert got["controller_mode"].value == "mdi"
    assert "serial_number" not in got


async def test_silent_control_is_device_unavailable() -> None:
    async with fixed_reply_peer(None) as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port, "timeout": 0.3})
        with pytest.raises(DeviceUnavailable, match="no reply to Q100"):
            await adapter.connect()
        await adapter.aclose()


async def test_garbled_status_is_protocol_error_and_drops_the_link() -> None:
    async with fixed_reply_peer(b">SOMETHING ELSE\r\n") as port:
        adapter = adapter_for({"host": "127.0.0.1", "port": port, "identify": False,
                               "mode": False}, points=[])
        await adapter.connect()
        with pytest.raises(ProtocolError, match="Q500"):
            await adapter.read_once()
        with pytest.raises(DeviceUnavailable):  # the link was closed: reconnect needed
            await adapter.read_once()
        await adapter.aclose()


async def test_control_going_away_is_device_unavailable() -> None:
    sim = await serve_haas(scripted(), port=0)
    port = sim.ports["haas-1"]
    adapter = adapter_for({"host": "127.0.0.1", "port": port, "timeout": 0.5}, points=[])
    try:
        await adapter.connect()
        await adapter.read_once()
        await sim.aclose()
        with pytest.raises(DeviceUnavailable):
            await adapter.read_once()
    finally:
        await adapter.aclose()


# --- over a serial line -------------------------------------------------------------------

@contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pty: the master fd is the control's end, the slave path is the gateway's port."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs ptys")
async def test_same_framing_over_a_serial_line() -> None:
    with pty_pair() as (master, path):
        sim = HaasSimulator()
        sim.add_fd(scripted(Execution.FEED_HOLD), master, "stx", lambda: datetime.now(UTC))
        adapter = adapter_for({"transport": "serial", "port_path": path, "baudrate": 115200,
                               "timeout": 1.0})
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
        finally:
            await adapter.aclose()
            await sim.aclose()
    assert got["execution"].value == "feed_hold"
    assert got["part_count"].value == 41
    assert got["bad_part_count"].value == 2
    assert adapter.endpoint == f"serial://{path}?115200-8N1"


async def test_missing_serial_port_is_device_unavailable() -> None:
    adapter = adapter_for({"transport": "serial", "port_path": "/dev/nonexistent-haas"})
    with pytest.raises(DeviceUnavailable):
        await adapter.connect()
    await adapter.aclose()


# --- the sample machine block works against the simulator ---------------------------------

async def test_sample_yaml_runs_against_the_simulator(free_port: Any) -> None:
    from simulators.haas_server import start_for_gateway

    got = await read_sample_block("haas", HaasAdapter, HaasSettings, start_for_gateway,
                                  free_port())
    assert {"serial_number", "model", "control_version", "execution", "controller_mode",
            "spindle_speed", "bad_part_count", "spindle_load", "last_cycle_time"} <= set(got)
