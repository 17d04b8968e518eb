"""The SHDR adapter against real TCP servers: small recordings and a live machine model."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from e2e import until as wait_until
from test_mtconnect_vocabulary import BILLION_LAUGHS

from adapters.base import AdapterContext
from adapters.mtconnect.settings import ShdrSettings
from adapters.mtconnect.shdr import ShdrAdapter
from models.errors import DeviceUnavailable
from models.machine_state import CounterTracker
from models.sample import Quality, Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.shdr_replay import ShdrReplayer, load_recording, replay, serve_shdr


def adapter_for(port: int, **conn: Any) -> ShdrAdapter:
    settings = ShdrSettings.model_validate(
        {"connection": {"host": "127.0.0.1", "port": port, **conn}})
    return ShdrAdapter(AdapterContext("m1"), settings)


async def collect(a: ShdrAdapter, until: Callable[[list[Sample]], bool],
                  within: float = 5.0) -> list[Sample]:
    got: list[Sample] = []
    async with asyncio.timeout(within):
        async for batch in a.stream():
            got += batch
            if until(got):
                return got
    return got


@pytest.fixture
async def replayed(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[ShdrReplayer] = []

    async def make(text: str, **kw: Any) -> ShdrReplayer:
        path = tmp_path / f"rec{len(made)}.txt"
        path.write_text(text)
        r = await replay(path, port=0, speed=kw.pop("speed", 1000.0), **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


async def test_ping_pong_sets_heartbeat(replayed: Callable[..., Any]) -> None:
    r = await replayed("2024-01-01T00:00:00Z|execution|READY\n", heartbeat_ms=200)
    a = adapter_for(r.port(), heartbeat=0.1)
    await a.connect()
    reading = asyncio.create_task(collect(a, lambda s: False, within=60))  # PONGs, no data
    try:
        # three PINGs, each answered and its PONG read (the device counts a PING before
        # it answers, so equal counts mean none is in flight)
        await wait_until(lambda: a.pongs >= 3 and a.pongs == r.pings, 10,
                         "three PINGs answered by PONGs the adapter read")
        assert not reading.done(), "the stream ended while the device answered every PING"
        assert a.heartbeat == 0.2
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await a.aclose()


async def test_silent_device_is_unavailable(replayed: Callable[..., Any]) -> None:
    r = await replayed("2024-01-01T00:00:00Z|execution|READY\n", heartbeat_ms=200)
    r.answer_pings = False  # a device that stopped answering (hung adapter, dead link)
    a = adapter_for(r.port(), heartbeat=0.1, silence=0.5)
    await a.connect()
    with pytest.raises(DeviceUnavailable, match="nothing heard"):
        await collect(a, lambda s: False, within=3.0)
    await a.aclose()


async def test_closed_connection_is_unavailable(replayed: Callable[..., Any]) -> None:
    r = await replayed("2024-01-01T00:00:00Z|execution|READY\n")
    a = adapter_for(r.port())
    await a.connect()
    await collect(a, bool)
    r.drop_clients()
    with pytest.raises(DeviceUnavailable, match="closed"):
        await collect(a, lambda s: False)
    await a.connect()  # the runner reconnects on the same instance
    assert await collect(a, bool)
    await a.aclose()


async def test_multiline_assets_and_hostile_asset(replayed: Callable[..., Any]) -> None:
    bomb = BILLION_LAUGHS.decode()
    r = await replayed(
        "2024-01-01T00:00:00Z|execution|ACTIVE\n"
        "2024-01-01T00:00:01Z|@ASSET@|T1|CuttingTool|--multiline--AB12\n"
        '<CuttingTool assetId="T1"><Description>a|b|c</Description>\n'
        "</CuttingTool>\n--multiline--AB12\n"
        f"2024-01-01T00:00:02Z|@ASSET@|EVIL|CuttingTool|--multiline--ZZ\n{bomb}\n"
        "--multiline--ZZ\n"
        "2024-01-01T00:00:03Z|part_count|1\n"
        "2024-01-01T00:00:04Z|@REMOVE_ASSET@|T1\n")
    a = adapter_for(r.port())
    await a.connect()
    try:
        got = await collect(a, lambda s: any(x.value == "removed:T1" for x in s))
        assets = [s.value for s in got if s.signal == "asset_changed"]
        assert assets == ["CuttingTool:T1", "removed:T1"]
        assert a.refused_assets == 1 and a.assets == {}
        # the '|' inside the body did not leak into data items; the stream went on
        assert [s.value for s in got if s.signal == "part_count"] == [1]
    finally:
        await a.aclose()


async def test_counter_reset_and_clock_jump(replayed: Callable[..., Any]) -> None:
    r = await replayed(
        "2024-01-01T10:00:00Z|program|A|part_count|5|execution|ACTIVE\n"
        "2024-01-01T10:00:10Z|part_count|6|execution|READY\n"
        # a new run on its own, earlier clock; the counter was reset to 0
        "2024-01-01T09:00:00Z|program|B|part_count|0|execution|ACTIVE\n"
        "2024-01-01T09:00:10Z|part_count|1|system|FAULT|1001|||Spindle overload\n"
        "2024-01-01T09:00:11Z|part_count|UNAVAILABLE\n")
    a = adapter_for(r.port())
    await a.connect()
    try:
        got = await collect(a, lambda s: any(x.quality is Quality.BAD for x in s))
        counts = [s.value for s in got if s.signal == "part_count" and s.value is not None]
        assert counts == [5, 6, 0, 1]
        tracker = CounterTracker()
        increments = [tracker.update(int(v)) for v in counts if isinstance(v, int)]
        assert increments == [0, 1, 0, 1] and min(increments) >= 0
        assert a.clock_jumps == 1
        times = [s.source_ts for s in got if s.signal == "execution"]
        assert times[2] is not None and times[1] is not None and times[2] < times[1]
        # an unknown key with a condition level and five fields is a condition
        assert [s.value for s in got if s.signal == "alarm"] == ["1001"]
        bad = [s for s in got if s.quality is Quality.BAD]
        assert [(s.signal, s.value) for s in bad] == [("part_count", None)]
    finally:
        await a.aclose()


async def test_points_type_and_rename(replayed: Callable[..., Any]) -> None:
    r = await replayed("2024-01-01T00:00:00Z|Xexec|FEED_HOLD|S1rpm|1200|junk|1\n")
    settings = ShdrSettings.model_validate({
        "connection": {"host": "127.0.0.1", "port": r.port(), "timestamps": "gateway",
                       "unlisted": "drop"},
        "points": [{"key": "Xexec", "type": "EXECUTION"},
                   {"key": "S1rpm", "name": "spindle_speed", "category": "SAMPLE",
                    "unit": "1/min"}]})
    a = ShdrAdapter(AdapterContext("m1"), settings)
    await a.connect()
    try:
        got = await collect(a, lambda s: len(s) >= 2)
        assert [(s.signal, s.value, s.unit) for s in got] == [
            ("execution", "feed_hold", None), ("spindle_speed", 1200.0, "1/min")]
        assert all(s.source_ts is None for s in got)
    finally:
        await a.aclose()


async def test_live_machine_model() -> None:
    events = [ScriptEvent.model_validate({"at": 0, "execution": "active", "part_count": 7,
                                          "program": "O1000"}),
              ScriptEvent.model_validate({"at": 0.5, "execution": "interrupted",
                                          "alarm_code": 2002, "alarm_text": "tool | broken",
                                          "controller_mode": "mdi"})]
    model = MachineModel.scripted("m1", events, start=datetime.now(UTC))
    server = await serve_shdr([(model, "127.0.0.1", 0)], refresh_interval=0.05)
    a = adapter_for(server.port("m1"))
    await a.connect()
    try:
        got = await collect(a, lambda s: any(x.signal == "alarm" and x.value == "2002"
                                             for x in s))
        state = {s.signal: s.value for s in got}
        assert state["execution"] == "interrupted"
        assert state["controller_mode"] == "mdi"
        assert state["part_count"] == 7 and state["program"] == "O1000"
        assert state["asset_changed"] == "CuttingTool:T1.1"
        # the alarm text is sent quoted with the pipe escaped and read back whole
        assert a.normalizer.conditions.active["system"] == {"2002": "tool | broken"}
        assert a.pongs >= 1
    finally:
        await a.aclose()
        await server.aclose()


def test_recording_delays(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    p.write_text("2024-01-01T00:00:00Z|a|1\n2024-01-01T00:00:02.5Z|a|2\n"
                 "2023-01-01T00:00:00Z|a|3\n2023-01-01T05:00:00Z|a|4\n")
    assert [r.delay for r in load_recording(p, max_gap=10, run_gap=0.5)] == [0, 2.5, 0.5, 0.5]


OKUMA_DEVICES = Path(__file__).resolve().parents[2] / "fixtures" / "mtconnect-cppagent" / (
    "demo_Devices.xml")


async def raw_server(payload: bytes) -> asyncio.Server:
    """A TCP port that sends `payload` to whoever connects (a hostile or broken adapter)."""
    async def send(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(payload)
        await w.drain()

    return await asyncio.start_server(send, "127.0.0.1", 0)


async def test_junk_is_refused_counted_and_logged_once() -> None:
    junk = random.Random(12).randbytes(50_000)  # what a misconfigured port sends
    server = await raw_server(
        junk + b"\n2024-01-01T00:00:00Z|S1speed|1\x00\x00\x00\n"
        b"2024-01-01T00:00:01Z|S1load|2|S1temp|\x00nan\n"  # one control character: whole line
        b"2024-01-01T00:00:01Z|S1temp|nan|S1pos|1 2 3|S1dist|1abc\n"
        b"2024-01-01T00:00:01Z|k e y|1\n"
        b"|xy\n"  # a key and no value: random bytes made 4 such "good" samples in 30 s
        b"2024-01-01T00:00:02Z|execution|READY\n")
    port = server.sockets[0].getsockname()[1]
    settings = ShdrSettings.model_validate({
        "connection": {"host": "127.0.0.1", "port": port},
        "points": [{"key": k, "category": "SAMPLE"} for k in
                   ("S1speed", "S1load", "S1temp", "S1pos", "S1dist")]})
    a = ShdrAdapter(AdapterContext("m1", logger=structlog.get_logger()), settings)
    await a.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            got = await collect(a, lambda s: any(x.signal == "execution" for x in s))
    finally:
        await a.aclose()
        server.close()
    good = [(s.signal, s.value) for s in got if s.quality is Quality.GOOD]
    assert good == [("s1pos", "1 2 3"), ("execution", "ready")]
    bad = {s.signal: s.value for s in got if s.quality is Quality.BAD}
    assert bad == {"s1temp": None, "s1dist": None}
    refused = a.describe()["refused"]
    assert refused["not_utf8"] > 50 and refused["control_characters"] >= 2
    assert refused["bad_key"] == 1 and refused["missing_value"] == 1
    lines = [e for e in logs if e["event"] == "shdr_input_refused"]
    assert len(lines) == 1 and lines[0]["refused_total"] == 1  # once per interval


async def read_raw(payload: bytes, until: Callable[[list[Sample]], bool],
                   points: list[dict[str, Any]] | None = None,
                   **connection: Any) -> tuple[list[Sample], ShdrAdapter]:
    """What the SHDR client makes of `payload` sent by a raw TCP port, and the client."""
    server = await raw_server(payload)
    port = server.sockets[0].getsockname()[1]
    settings = ShdrSettings.model_validate({
        "connection": {"host": "127.0.0.1", "port": port, **connection},
        "points": points or []})
    a = ShdrAdapter(AdapterContext("m1"), settings)
    await a.connect()
    try:
        return await collect(a, until), a
    finally:
        await a.aclose()
        server.close()


async def test_keys_outside_the_device_model_are_refused() -> None:
    got, a = await read_raw(b"2024-01-01T00:00:00Z|pexecution|ACTIVE|k_e_1_h|5\n"
                            b"2024-01-01T00:00:01Z|p1Fact|6000|nosuchkey|1\n",
                            lambda s: any(x.signal == "feed_rate" for x in s),
                            device_model=str(OKUMA_DEVICES), device="OKUMA")
    assert [s.signal for s in got] == ["execution", "feed_rate"]
    assert a.describe()["refused"] == {"unknown_key": 2}
