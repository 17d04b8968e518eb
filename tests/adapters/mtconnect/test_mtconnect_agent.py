"""The MTConnect agent adapter against the agent simulator, over real HTTP sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.base import AdapterContext
from adapters.mtconnect.agent import MtconnectAgentAdapter
from adapters.mtconnect.settings import MtconnectAgentSettings
from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError
from models.sample import Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.mtconnect_agent import AgentSimulator, serve_agents, start_for_gateway

START = datetime(2026, 1, 5, 6, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def adapter_for(url: str, asset: str = "m1", **conn: Any) -> MtconnectAgentAdapter:
    settings = MtconnectAgentSettings.model_validate({"connection": {"url": url, **conn}})
    return MtconnectAgentAdapter(AdapterContext(asset, poll_interval=0.05), settings)


def latest(samples: list[Sample]) -> dict[str, Any]:
    return {s.signal: s.value for s in samples}


async def next_batch(it: AsyncIterator[Any], within: float = 5.0) -> list[Sample]:
    async with asyncio.timeout(within):
        return list(await anext(it))


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    made: list[AgentSimulator] = []

    async def make(models: list[MachineModel], **kw: Any) -> AgentSimulator:
        sim = await serve_agents([(m, "127.0.0.1", 0) for m in models], **kw)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.aclose()


async def test_current_state_matches_the_model(sim_factory: Callable[..., Any]) -> None:
    clock = Clock(START + timedelta(hours=1))
    model = MachineModel("m1", seed=3, time_scale=1.0, start=START)
    sim = await sim_factory([model], clock=clock, refresh_interval=0)
    a = adapter_for(sim.url("m1"))
    await a.connect()
    try:
        it = aiter(a.stream())
        state = latest(await next_batch(it))
        snap = model.snapshot(clock.now)
        assert state["execution"] == snap.execution.value
        assert state["controller_mode"] == snap.controller_mode.value
        assert state["part_count"] == snap.part_count
        assert state["bad_part_count"] == snap.bad_part_count
        assert state["program"] == snap.program
        assert state["emergency_stop"] is snap.emergency_stop
        assert state["availability"] == "available"
        assert state["alarm"] == (str(snap.alarm_code) if snap.alarm_code else "")
        assert state["spindle_speed"] == snap.spindle_speed
        assert a.describe()["device"] == "m1"
        # the device model's Description travels as identification for the AAS nameplate
        assert (state["manufacturer"], state["model"]) == ("edge-gateway", "simulated CNC")
    finally:
        await a.aclose()


async def test_sample_streaming_is_continuous(sim_factory: Callable[..., Any]) -> None:
    """Every sequence number is read exactly once, page after page (count=7)."""
    clock = Clock(START)
    model = MachineModel("m1", seed=1, time_scale=1.0, start=START)
    sim = await sim_factory([model], clock=clock, refresh_interval=1.0)
    a = adapter_for(sim.url("m1"), count=7)
    await a.connect()
    try:
        it = aiter(a.stream())
        await next_batch(it)  # /current
        agent = sim.agents["m1"]
        first_next = a.next_sequence
        assert first_next is not None
        before = a.observations
        clock.advance(600)  # 10 simulated minutes: hundreds of observations
        agent.advance()
        while a.next_sequence is not None and a.next_sequence <= agent.last_sequence:
            await next_batch(it)
        # no gap, no duplicate: exactly the observations first_next..last, in 7-item pages
        assert a.next_sequence == agent.last_sequence + 1
        assert a.observations - before == agent.last_sequence - first_next + 1 > 50
        assert a.pages >= (agent.last_sequence - first_next + 1) / 7
        assert a.overruns == a.restarts == 0
    finally:
        await a.aclose()


async def test_agent_restart_resynchronizes(sim_factory: Callable[..., Any]) -> None:
    events = [
        ScriptEvent.model_validate({"at": 0, "execution": "active", "part_count": 10}),
        ScriptEvent.model_validate({"at": 100, "execution": "stopped", "part_count": 11,
                                    "alarm_code": 1001, "alarm_text": "spindle overload"}),
    ]
    clock = Clock(START + timedelta(seconds=10))
    model = MachineModel.scripted("m1", events, start=START)
    sim = await sim_factory([model], clock=clock, refresh_interval=0)
    a = adapter_for(sim.url("m1"))
    await a.connect()
    try:
        it = aiter(a.stream())
        assert latest(await next_batch(it))["execution"] == "active"
        old_instance = a.instance_id
        clock.advance(100)
        sim.agents["m1"].restart()  # sequence numbers start again at 1
        batch: list[Sample] = []
        while not batch:
            batch = await next_batch(it)
        state = latest(batch)
        assert a.restarts == 1 and a.instance_id != old_instance
        assert (state["execution"], state["part_count"], state["alarm"]) == ("stopped", 11,
                                                                             "1001")
    finally:
        await a.aclose()


async def test_buffer_overrun_resynchronizes(sim_factory: Callable[..., Any]) -> None:
    clock = Clock(START + timedelta(seconds=5))
    events = [ScriptEvent.model_validate({"at": 0, "execution": "active", "part_count": 1}),
              ScriptEvent.model_validate({"at": 50, "execution": "feed_hold",
                                          "part_count": 2})]
    model = MachineModel.scripted("m1", events, start=START)
    sim = await sim_factory([model], clock=clock, refresh_interval=0, buffer_size=16)
    a = adapter_for(sim.url("m1"))
    await a.connect()
    try:
        it = aiter(a.stream())
        await next_batch(it)
        clock.advance(60)
        sim.agents["m1"].advance()  # the state change happens...
        sim.agents["m1"].flood(100)  # ...then the buffer wraps before we read again
        batch: list[Sample] = []
        while not any(s.signal == "execution" for s in batch):
            batch = await next_batch(it)
        assert a.overruns == 1
        state = latest(batch)
        assert (state["execution"], state["part_count"]) == ("feed_hold", 2)
        assert a.next_sequence == sim.agents["m1"].sequence
    finally:
        await a.aclose()


async def test_several_devices_on_one_agent(sim_factory: Callable[..., Any]) -> None:
    models = [MachineModel(f"m{i}", seed=i) for i in (1, 2)]
    sim = await serve_agents([(m, "127.0.0.1", 0) for m in models])
    try:
        assert sim.port("m2") == sim.port("m1")  # one agent, two devices
        a = adapter_for(sim.url("m2"), asset="m2", device="m2")
        await a.connect()
        state = latest(await next_batch(aiter(a.stream())))
        assert state["program"] == models[1].snapshot(datetime.now(UTC)).program
        await a.aclose()
        bad = adapter_for(sim.url("m1"), device="nope")
        with pytest.raises(ConfigurationError):
            await bad.connect()
    finally:
        await sim.aclose()


async def test_unreachable_agent_is_transient(free_port: Callable[[], int]) -> None:
    a = adapter_for(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(DeviceUnavailable):
        await a.connect()
    await a.aclose()


async def test_hostile_agent_billion_laughs_refused() -> None:
    from test_mtconnect_vocabulary import BILLION_LAUGHS

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: "
                     + str(len(BILLION_LAUGHS)).encode() + b"\r\nConnection: close\r\n\r\n"
                     + BILLION_LAUGHS)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        a = adapter_for(f"http://127.0.0.1:{port}")
        with pytest.raises(ProtocolError, match="unsafe XML"):
            await a.connect()
        await a.aclose()
    finally:
        server.close()


async def _flooding_agent(chunked: bool, body: bytes, repeat: int) -> tuple[asyncio.Server,
                                                                           list[int]]:
    """An agent answering `body * repeat`; `sent` counts the bytes it managed to write."""
    sent = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = (b"Transfer-Encoding: chunked" if chunked
                else b"Content-Length: %d" % (len(body) * repeat))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n" + head + b"\r\n\r\n")
        try:
            for _ in range(repeat):
                writer.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
                await writer.drain()
                sent[0] += len(body)
            writer.write(b"0\r\n\r\n" if chunked else b"")
            await writer.drain()
        except OSError:
            pass  # the client hung up on us: what a refusal looks like from here
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), sent


@pytest.mark.parametrize(("chunked", "body", "repeat", "match"), [
    (False, b"<" + b"x" * 999_999, 200, "over max_reply_bytes"),  # 200 MB announced
    (True, b"<" + b"x" * 999_999, 200, "larger than max_reply_bytes"),  # 200 MB, no length
    (True, b"<a/>" * 100_000, 4, "XML tags"),  # 1.6 MB, but 400,000 elements to build
], ids=["content_length", "chunked", "tiny_elements"])
async def test_hostile_agent_flood_refused_within_the_cap(chunked: bool, body: bytes,
                                                          repeat: int, match: str) -> None:
    """A 200 MB reply (issue 12: the gateway's RSS went from 87 to 183 MB) is refused at
    `max_reply_bytes` (2 MiB by default) or, with a Content-Length, before reading it."""
    server, sent = await _flooding_agent(chunked, body, repeat)
    port = server.sockets[0].getsockname()[1]
    try:
        a = adapter_for(f"http://127.0.0.1:{port}")
        with pytest.raises(ProtocolError, match=match):
            await a.connect()
        await a.aclose()
    finally:
        server.close()
    assert sent[0] < 16 * 2**20  # the rest was never read (socket buffers hold a few MB)


async def test_start_for_gateway(free_port: Callable[[], int]) -> None:
    port = free_port()
    settings = MtconnectAgentSettings.model_validate(
        {"connection": {"url": f"http://127.0.0.1:{port}"}})
    model = MachineModel("cell-7", seed=2)
    handle = await start_for_gateway([("cell-7", settings, model)])
    try:
        a = MtconnectAgentAdapter(AdapterContext("cell-7"), settings)
        await a.connect()
        state = latest(await next_batch(aiter(a.stream())))
        assert state["execution"] in {e.lower() for e in (
            "ACTIVE", "READY", "INTERRUPTED", "FEED_HOLD", "STOPPED", "PROGRAM_STOPPED",
            "PROGRAM_COMPLETED", "WAIT", "OPTIONAL_STOP")}
        await a.aclose()
    finally:
        await handle.aclose()
