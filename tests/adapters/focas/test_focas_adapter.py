"""FocasAdapter against the FOCAS simulator over real sockets, and the framing byte by byte.

The framing tests pin the layout described by pyfanuc's published protocol samples (the
GETTIMEDATE request is reproduced byte for byte), so a change to our encoder that drifts
from that description fails here, not only against our own simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fixed_reply_peer import fixed_reply_peer
from pydantic import ValidationError
from sample_machine import read_sample_block

from adapters.base import AdapterContext
from adapters.focas import protocol as p
from adapters.focas.adapter import FocasAdapter
from adapters.focas.settings import FocasSettings
from models.errors import DeviceUnavailable, ProtocolError
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.focas_server import serve_focas
from simulators.machine import MachineModel, ScriptEvent

POINTS = [
    {"name": "part_count", "source": "parameter", "number": 6711, "data_type": "int"},
    {"name": "bad_part_count", "source": "macro", "number": 500, "data_type": "int"},
    {"name": "last_cycle_time", "source": "macro", "number": 501, "unit": "s"},
    {"name": "cycle_time_ms", "source": "parameter", "number": 6757, "data_type": "int"},
    {"name": "missing", "source": "macro", "number": 12345},
]


def scripted(execution: Execution = Execution.ACTIVE, **kw: Any) -> MachineModel:
    event = ScriptEvent(at=0, execution=execution,
                        controller_mode=kw.pop("mode", ControllerMode.AUTOMATIC),
                        program="O3000", part_count=77, bad_part_count=3,
                        last_cycle_time=61.5, **kw)
    return MachineModel.scripted("fanuc-1", [event])


def adapter_for(port: int, points: list[dict[str, Any]] | None = None, **conn: Any
                ) -> FocasAdapter:
    settings = FocasSettings.model_validate({
        "connection": {"host": "127.0.0.1", "port": port, "timeout": 1.0, **conn},
        "points": POINTS if points is None else points,
    })
    return FocasAdapter(AdapterContext(asset="fanuc-1", poll_interval=0.05), settings)


def by_signal(samples: Any) -> dict[str, Sample]:
    return {s.signal: s for s in samples}


@asynccontextmanager
async def focas(model: MachineModel) -> AsyncIterator[int]:
    sim = await serve_focas(model, port=0)
    try:
        yield sim.ports[model.asset]
    finally:
        await sim.aclose()


# --- framing ------------------------------------------------------------------------------

def test_request_frame_matches_the_published_capture() -> None:
    # pyfanuc README, "GETTIMEDATE": header, one sub-packet of 0x1c bytes, function 0x45
    frame = p.encode_frame(p.DATA_REQUEST, p.encode_requests([p.Request(0x45)]))
    assert frame.hex() == (
        "a0a0a0a0" "0001" "2101" "001e" "0001" "001c" "0001" "0001" "0045" + "00" * 20
    )


def test_reply_roundtrip_and_reader_split() -> None:
    body = p.encode_replies([p.Reply(p.FUNC_PROGRAM_NUMBER, 0, p.PROGRAM_NUMBER.pack(1, 2)),
                             p.Reply(p.FUNC_MACRO, p.EW_NUMBER)])
    frame = p.encode_frame(p.DATA_RESPONSE, body, p.VERSION_RESPONSE)
    reader = p.FrameReader()
    got = []
    for i in range(len(frame)):
        got += reader.feed(frame[i:i + 1])
    assert got == [(2, p.DATA_RESPONSE, body)]
    replies = p.decode_replies(body)
    assert replies[0].data == p.PROGRAM_NUMBER.pack(1, 2)
    assert replies[1].error == p.EW_NUMBER


def test_reader_refuses_bad_magic_and_overrun() -> None:
    with pytest.raises(ValueError, match="magic"):
        p.FrameReader().feed(b"\x00" * 10)
    with pytest.raises(ValueError, match="overruns"):
        p.decode_replies(b"\x00\x01\x00\xff")


def test_record_codecs() -> None:
    assert p.decode_macro(p.encode_macro(12.345)) == pytest.approx(12.345)
    assert p.decode_macro(p.encode_macro(None)) is None
    assert p.decode_parameter(p.encode_parameter(6711, 42, 8)) == (6711, 42)
    info = p.SysInfo(2, 8, "31", "M", "G421", "24.0", "3")
    assert p.SysInfo.decode(info.encode()) == info
    assert info.model == "FANUC Series 31i-M"
    st = p.StatInfo(1, 3, 1, 0, 0, 0, 0)
    assert p.StatInfo.decode(st.encode()) == st


def test_invalid_settings() -> None:
    invalid: list[dict[str, Any]] = [
        {"connection": {}},
        {"connection": {"host": "h"}, "points": [{"name": "x", "source": "pmc", "number": 1}]},
    ]
    for raw in invalid:
        with pytest.raises(ValidationError):
            FocasSettings.model_validate(raw)


def test_a_point_named_like_a_fixed_signal_clashes() -> None:
    """Refused by the loader at the point's name (tests/edge/config/test_point_name_clashes.py)."""
    settings = FocasSettings.model_validate({"connection": {"host": "h"}, "points": [
        {"name": "spindle_speed", "source": "macro", "number": 1},
        {"name": "execution", "source": "macro", "number": 2}]})
    assert settings.point_clashes() == [
        (1, "rename the point, e.g. execution_point; the FOCAS adapter already publishes "
            "`execution`")]


# --- over TCP -----------------------------------------------------------------------------

async def test_reads_identity_status_program_and_points() -> None:
    async with focas(scripted(Execution.ACTIVE)) as port:
        adapter = adapter_for(port)
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
            assert adapter.last_cycle_requests == 1  # everything in one data request
        finally:
            await adapter.aclose()
    assert got["model"].value == "FANUC Series 31i-M"
    assert got["cnc_series"].value == "G421"
    assert got["control_version"].value == "24.0"
    assert got["execution"].value == "active"
    assert got["controller_mode"].value == "automatic"
    assert got["emergency_stop"].value is False
    assert got["alarm"].value == ""
    assert got["program"].value == "O3000"
    assert got["program_number"].value == 3000
    assert got["part_count"].value == 77
    assert got["bad_part_count"].value == 3
    assert got["last_cycle_time"].value == pytest.approx(61.5)
    assert got["cycle_time_ms"].value == 1500
    assert got["missing"].quality is Quality.BAD


@pytest.mark.parametrize(("execution", "mode", "extra", "expect"), [
    (Execution.FEED_HOLD, ControllerMode.AUTOMATIC, {}, {"execution": "feed_hold"}),
    (Execution.READY, ControllerMode.MDI, {}, {"execution": "ready", "controller_mode": "mdi"}),
    (Execution.INTERRUPTED, ControllerMode.MANUAL, {"emergency_stop": True},
     {"execution": "stopped", "controller_mode": "manual", "emergency_stop": True,
      "alarm": "ALARM"}),
    (Execution.STOPPED, ControllerMode.EDIT, {"alarm_code": 1001},
     {"controller_mode": "edit", "alarm": "ALARM"}),
])
async def test_state_mapping(execution: Execution, mode: ControllerMode,
                             extra: dict[str, Any], expect: dict[str, Any]) -> None:
    async with focas(scripted(execution, mode=mode, **extra)) as port:
        adapter = adapter_for(port, points=[], max_requests_per_frame=1)
        try:
            await adapter.connect()
            got = by_signal(await adapter.read_once())
            assert adapter.last_cycle_requests == 2  # one sub-request per frame
        finally:
            await adapter.aclose()
    assert {k: got[k].value for k in expect} == expect


async def test_silent_control_is_device_unavailable() -> None:
    async with fixed_reply_peer(None) as port:
        adapter = adapter_for(port, timeout=0.3)
        with pytest.raises(DeviceUnavailable, match="no reply to open"):
            await adapter.connect()
        await adapter.aclose()


async def test_garbage_is_protocol_error() -> None:
    async with fixed_reply_peer(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        adapter = adapter_for(port)
        with pytest.raises(ProtocolError, match="magic"):
            await adapter.connect()
        await adapter.aclose()


async def test_wrong_frame_type_is_protocol_error() -> None:
    async with fixed_reply_peer(p.encode_frame(p.CLOSE_RESPONSE, b"", 2)) as port:
        adapter = adapter_for(port)
        with pytest.raises(ProtocolError, match="open answered"):
            await adapter.connect()
        await adapter.aclose()


async def test_control_going_away_is_device_unavailable() -> None:
    sim = await serve_focas(scripted(), port=0)
    adapter = adapter_for(sim.ports["fanuc-1"], points=[])
    try:
        await adapter.connect()
        await adapter.read_once()
        await sim.aclose()
        with pytest.raises(DeviceUnavailable):
            await adapter.read_once()
    finally:
        await adapter.aclose()


# --- the sample machine block works against the simulator ---------------------------------

async def test_sample_yaml_runs_against_the_simulator(free_port: Any) -> None:
    from simulators.focas_server import start_for_gateway

    got = await read_sample_block("focas", FocasAdapter, FocasSettings, start_for_gateway,
                                  free_port())
    assert all(s.quality is Quality.GOOD for s in got.values())
    assert {"part_count", "total_part_count", "cycle_time_ms", "bad_part_count", "execution",
            "program", "model"} <= set(got)
