"""The OPC UA adapter against the OPC UA simulator, over real sockets.

Expected values come from the same scripted MachineModel the simulator serves, so a wrong
mapping, a lost subscription or a silent reconnect failure shows up as a wrong value or a
timeout, not as a passing test. Recovery runs through the gateway's real DeviceRunner.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shlex
import stat
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from e2e import until

from adapters.base import AdapterContext
from adapters.opcua.adapter import OpcUaAdapter, _why
from adapters.opcua.profile_signals import signal_sources
from adapters.opcua.security import UntrustedServerCertificate
from adapters.opcua.settings import OpcUaSettings
from edge.devices.runner import Backoff, DeviceRunner
from models.errors import ConfigurationError, DeviceUnavailable
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.opcua_server import SIM_URI, OpcUaSimulator, serve_opcua, start_for_gateway

SIM = f"nsu={SIM_URI};s=m1."
SAMPLE = Path(__file__).resolve().parents[3] / "adapters" / "opcua" / "sample.yaml"


def scripted() -> MachineModel:
    """Active on O2000 with 12 parts, 2 bad, then (after 1 h) interrupted: fixed values."""
    return MachineModel.scripted("m1", [
        ScriptEvent(at=0, execution=Execution.ACTIVE, controller_mode=ControllerMode.AUTOMATIC,
                    program="O2000", part_count=12, bad_part_count=2),
    ], start=datetime.now(UTC) - timedelta(seconds=5))


def make_settings(port: int, conn: dict[str, Any] | None = None,
                  points: list[dict[str, Any]] | None = None) -> OpcUaSettings:
    return OpcUaSettings.model_validate({
        "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}/", "publishing_interval": 0.1,
                       "timeout": 2.0, "watchdog_interval": 0.5, **(conn or {})},
        "points": points if points is not None else [
            {"name": "spindle_speed", "node": SIM + "SpindleSpeed", "unit": "1/min"},
            {"name": "program_text", "node": SIM + "Program"},
        ],
    })


def adapter(settings: OpcUaSettings, poll: float = 0.2) -> OpcUaAdapter:
    return OpcUaAdapter(AdapterContext("m1", poll, structlog.get_logger()), settings)


async def collect(a: OpcUaAdapter, want: Callable[[dict[str, Sample]], bool],
                  within: float = 10.0) -> dict[str, Sample]:
    """Latest sample per signal, once `want` holds (AssertionError with what came if not)."""
    latest: dict[str, Sample] = {}
    try:
        async with asyncio.timeout(within):
            async for batch in a.stream():
                latest.update({s.signal: s for s in batch})
                if want(latest):
                    return latest
    except TimeoutError:
        pass
    raise AssertionError(f"condition not met within {within}s; got {latest}")


@contextlib.asynccontextmanager
async def serving(port: int) -> AsyncIterator[OpcUaSimulator]:
    """The simulator with the scripted machine on `port` (the recovery tests use it too)."""
    s = await serve_opcua([(scripted(), f"opc.tcp://127.0.0.1:{port}/")])
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def sim(free_port: Callable[[], int]) -> AsyncIterator[tuple[OpcUaSimulator, int]]:
    port = free_port()
    async with serving(port) as s:
        yield s, port


async def test_subscribe_read_browse_path_and_map(sim: tuple[OpcUaSimulator, int]) -> None:
    _, port = sim
    browse = ("/{http://opcfoundation.org/UA/Machinery/}Machines/{urn:edge-gateway:simulator}m1"
              "/{urn:edge-gateway:simulator}Process/{urn:edge-gateway:simulator}PartCount")
    a = adapter(make_settings(port, points=[
        {"name": "execution", "node": SIM + "Execution"},
        {"name": "part_count", "node": browse, "mode": "read"},
        {"name": "channel", "node": SIM + "ChannelState", "map": {0: "active", 1: "held"}},
        {"name": "load", "node": SIM + "SpindleLoad", "deadband_type": "absolute",
         "deadband_value": 0.5, "queue_size": 5, "sampling_interval": 0.05},
        {"name": "ghost", "node": "nsu=urn:not-on-this-server;s=x"},
    ]))
    await a.connect()
    try:
        got = await collect(a, lambda d: {"execution", "part_count", "channel", "load",
                                          "ghost"} <= d.keys())
    finally:
        await a.aclose()
    assert got["execution"].value == "active"
    assert got["part_count"].value == 12
    assert got["channel"].value == "active"
    assert got["channel"].source_ts is not None
    assert got["ghost"].quality is Quality.BAD and got["ghost"].value is None
    assert got["availability"].value == "available"


async def test_machine_tool_profile_maps_state_counts_and_identification(
    sim: tuple[OpcUaSimulator, int],
) -> None:
    _, port = sim
    a = adapter(make_settings(port, {"profile": "machine_tool"}, points=[]))
    assert a.signal_sources()["execution"] == "(resolving)"  # discovery has not run
    await a.connect()
    try:
        got = await collect(a, lambda d: {"execution", "part_count", "bad_part_count",
                                          "program", "controller_mode"} <= d.keys())
    finally:
        await a.aclose()
    # where each derived signal comes from, for the status page and `probe` (issue 14)
    sim_ns = "nsu=urn:edge-gateway:simulator;s=m1"
    src = a.signal_sources()
    assert src["execution"] == (
        f"{sim_ns}.MachineryItemState.CurrentState + "
        f"{sim_ns}.ActiveProgram.State.CurrentState + {sim_ns}.FeedOverride"
    )
    assert src["program"] == f"{sim_ns}.ProgramName"
    assert src["part_count"] == f"{sim_ns}.PartsCompleted"
    assert src["bad_part_count"] == f"{sim_ns}.PartsCompleted + {sim_ns}.PartsGood"
    assert src["identification_serial_number"] == f"{sim_ns}.Identification.SerialNumber"
    assert src["alarm"] == f"events of {sim_ns}.Messages (messages)"
    assert got["execution"].value == "active"
    assert got["controller_mode"].value == "automatic"
    assert got["program"].value == "O2000"
    assert (got["part_count"].value, got["bad_part_count"].value) == (12, 2)
    assert got["identification_serial_number"].value == "SIM-m1"
    assert a.describe()["machine"] == "m1"
    assert a.identification["Manufacturer"] == "Edge Gateway Simulated Machines"


@pytest.mark.parametrize(("policy", "mode"), [
    ("Basic256Sha256", "SignAndEncrypt"), ("Aes256_Sha256_RsaPss", "Sign"),
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
])
async def test_secure_channel_with_trust_on_first_use(
    sim: tuple[OpcUaSimulator, int], tmp_path: Path, policy: str, mode: str,
) -> None:
    s, port = sim
    pki = tmp_path / "pki"
    a = adapter(make_settings(port, {"security_policy": policy, "security_mode": mode,
                                     "pki_dir": str(pki), "trust_on_first_use": True}))
    await a.connect()
    try:
        got = await collect(a, lambda d: "program_text" in d)
    finally:
        await a.aclose()
    assert got["program_text"].value == "O2000"
    assert stat.S_IMODE((pki / "client-key.pem").stat().st_mode) == 0o600
    pinned = list((pki / "trusted").iterdir())
    assert [p.read_bytes() for p in pinned] == [s.certificate]


async def test_untrusted_server_is_refused_until_trusted(
    sim: tuple[OpcUaSimulator, int], tmp_path: Path,
) -> None:
    _, port = sim
    pki = tmp_path / "pki"
    a = adapter(make_settings(port, {"security_policy": "Basic256Sha256",
                                     "security_mode": "SignAndEncrypt", "pki_dir": str(pki)}))
    with pytest.raises(UntrustedServerCertificate, match="to trust it: mv ") as err:
        await a.connect()
    rejected = next((pki / "rejected").iterdir())
    assert str(rejected) in str(err.value)
    # the command the operator is told to run works as printed on a fresh install
    command = str(err.value).split("to trust it: ", 1)[1].split(" (or ", 1)[0]
    mv = await asyncio.create_subprocess_exec(*shlex.split(command),
                                              stderr=asyncio.subprocess.PIPE)
    _, stderr = await mv.communicate()
    assert mv.returncode == 0, stderr
    assert (pki / "trusted" / rejected.name).is_file()
    await a.connect()  # same instance, no restart: what the runner does next
    try:
        got = await collect(a, lambda d: "program_text" in d)
    finally:
        await a.aclose()
    assert got["program_text"].value == "O2000"


async def test_monitored_items_spread_over_several_subscriptions(
    sim: tuple[OpcUaSimulator, int],
) -> None:
    _, port = sim
    names = ["SpindleSpeed", "SpindleLoad", "FeedRate", "Program", "PartCount"]
    a = adapter(make_settings(port, {"max_items_per_subscription": 2}, points=[
        {"name": n.lower(), "node": SIM + n} for n in names]))
    await a.connect()
    try:
        got = await collect(a, lambda d: {n.lower() for n in names} <= d.keys())
    finally:
        await a.aclose()
    assert a.subscription_count == 3
    assert got["partcount"].value == 12


class FreezableProxy:
    """A TCP relay that can stop relaying while keeping sockets open: a frozen server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [w, uw]
        for src, dst in ((r, uw), (ur, w)):
            t = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if self.frozen.is_set():
                    continue  # swallow: the peer hears nothing, the socket stays open
                dst.write(data)
                await dst.drain()

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for w in self._writers:
            w.close()
        if self.server is not None:
            self.server.close()


async def run_device(settings: OpcUaSettings) -> tuple[DeviceRunner, list[Sample],
                                                        asyncio.Task[None]]:
    samples: list[Sample] = []
    runner = DeviceRunner(
        "m1", OpcUaAdapter, settings=settings, poll_interval=0.2,
        on_samples=lambda _a, batch: samples.extend(batch), on_status=lambda *_: None,
        logger=structlog.get_logger(), backoff=Backoff(initial=0.2, cap=0.5))
    return runner, samples, asyncio.create_task(runner.run())


def _marks(samples: list[Sample]) -> list[str]:
    return [s.value for s in samples if s.signal == "availability"]  # type: ignore[misc]


@pytest.mark.slow
async def test_recovers_after_server_restart(sim: tuple[OpcUaSimulator, int]) -> None:
    s, port = sim
    _runner, samples, task = await run_device(make_settings(port, {"profile": "machine_tool"}))
    try:
        await until(lambda: any(x.signal == "execution" for x in samples), 10, "first data")
        await s.stop()
        await until(lambda: "unavailable" in _marks(samples), 10, "the gap")
        gap = len(samples)
        assert any(x.signal == "execution" and x.quality is Quality.BAD for x in samples)
        await s.start()
        await until(lambda: any(x.signal == "execution" and x.quality is Quality.GOOD
                                   for x in samples[gap:]), 20, "samples after restart")
        assert _marks(samples[gap:])[-1] == "available"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
async def test_recovers_after_server_freeze(sim: tuple[OpcUaSimulator, int]) -> None:
    _, port = sim
    proxy = FreezableProxy(port)
    await proxy.start()
    _runner, samples, task = await run_device(make_settings(proxy.port))
    try:
        await until(lambda: any(x.signal == "program_text" for x in samples), 10,
                       "first data")
        proxy.frozen.set()
        t0 = time.monotonic()
        await until(lambda: "unavailable" in _marks(samples), 10, "freeze detected")
        assert time.monotonic() - t0 < 6  # watchdog 0.5 s, request timeout 2 s
        gap = len(samples)
        proxy.frozen.clear()
        await until(lambda: any(x.signal == "program_text" and x.quality is Quality.GOOD
                                   for x in samples[gap:]), 20, "samples after the freeze")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.aclose()


@pytest.mark.slow
async def test_memory_and_tasks_flat_across_reconnects(sim: tuple[OpcUaSimulator, int]) -> None:
    _, port = sim
    a = adapter(make_settings(port, {"profile": "machine_tool"}))

    async def cycle() -> None:
        await a.connect()
        await collect(a, lambda d: "execution" in d)
        await a.aclose()

    for _ in range(3):  # warm caches (imports, type tables)
        await cycle()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(15):
        await cycle()
    # closed clients finish their own teardown tasks: wait for that, not for a fixed time
    await until(lambda: len(asyncio.all_tasks()) <= tasks_before, 10, "client tasks to end")
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(asyncio.all_tasks()) <= tasks_before
    assert grown < 1_500_000, f"{grown} bytes kept after 15 reconnects"


async def test_stream_raises_when_connection_dropped(sim: tuple[OpcUaSimulator, int]) -> None:
    s, port = sim
    a = adapter(make_settings(port))
    await a.connect()
    await collect(a, lambda d: "program_text" in d)
    await s.stop()
    batches: list[list[Sample]] = []
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(10):
            async for batch in a.stream():
                batches.append(list(batch))
    last = {x.signal: x for x in batches[-1]}
    assert last["availability"].value == "unavailable"
    assert last["program_text"].quality is Quality.BAD
    await a.aclose()


async def test_sample_yaml_against_start_for_gateway(free_port: Callable[[], int]) -> None:
    """adapters/opcua/sample.yaml works as documented (only the port is changed)."""
    block = yaml.safe_load(SAMPLE.read_text())
    block["connection"]["endpoint"] = f"opc.tcp://127.0.0.1:{free_port()}/"
    settings = OpcUaSettings.model_validate({"connection": block["connection"],
                                             "points": block["points"]})
    model = MachineModel.from_options(block["id"], block["simulator"])
    handle = await start_for_gateway([(block["id"], settings, model)])
    names = {p["name"] for p in block["points"]} | {"execution", "part_count"}
    try:
        a = OpcUaAdapter(AdapterContext(block["id"], 0.2, structlog.get_logger()), settings)
        await a.connect()
        try:
            got = await collect(a, lambda d: names <= d.keys())
        finally:
            await a.aclose()
    finally:
        await handle.aclose()
    assert all(got[n].quality is Quality.GOOD for n in names), got
    snap = model.snapshot(datetime.now(UTC))
    assert got["program"].value == snap.program
    assert got["identification_serial_number"].value == f"SIM-{block['id']}"


async def test_username_password_from_env_and_wrong_password_is_fatal(
    free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    handle = await serve_opcua([(scripted(), f"opc.tcp://127.0.0.1:{port}/")],
                               users={"gateway": "right"})
    try:
        monkeypatch.setenv("OPCUA_TEST_PW", "right")
        good = adapter(make_settings(port, {"username": "gateway",
                                            "password": {"env": "OPCUA_TEST_PW"}}))
        await good.connect()
        try:
            got = await collect(good, lambda d: "program_text" in d)
        finally:
            await good.aclose()
        assert got["program_text"].value == "O2000"
        monkeypatch.setenv("OPCUA_TEST_PW", "wrong")
        bad = adapter(make_settings(port, {"username": "gateway",
                                           "password": {"env": "OPCUA_TEST_PW"}}))
        with pytest.raises(ConfigurationError, match="refused the user 'gateway'") as err:
            await bad.connect()
        assert "wrong" not in str(err.value)
    finally:
        await handle.aclose()


async def test_server_advertised_item_limit_splits_subscriptions(
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    handle = await serve_opcua([(scripted(), f"opc.tcp://127.0.0.1:{port}/")],
                               max_monitored_items_per_subscription=2)
    names = ["SpindleSpeed", "SpindleLoad", "FeedRate", "Program", "PartCount"]
    try:
        a = adapter(make_settings(port, points=[{"name": n.lower(), "node": SIM + n}
                                                for n in names]))
        await a.connect()
        try:
            got = await collect(a, lambda d: {n.lower() for n in names} <= d.keys())
        finally:
            await a.aclose()
    finally:
        await handle.aclose()
    assert a.subscription_count == 3
    assert got["program"].value == "O2000"


def test_a_connect_or_setup_failure_always_has_a_reason() -> None:
    """asyncua's timeouts and watchdog raise exceptions without text; the device's reason
    (status, page, log) named nothing after `cannot connect:` / `setup failed:`."""
    assert _why(TimeoutError(), 8) == (
        "no answer from the server within 8 s (TimeoutError): server frozen or network down")
    assert _why(ConnectionResetError(), 0) == "ConnectionResetError"
    assert _why(OSError("refused"), 0) == "refused"


def test_signal_sources_name_only_the_inputs_a_signal_is_derived_from() -> None:
    """part_count is PartsCompleted when the job has one, else the lifetime counter (never
    both); a signal none of whose inputs the server has is left out, not guessed."""
    both = {"parts_completed": "ns=1;s=done", "parts_lifetime": "ns=1;s=life"}
    assert signal_sources("machine_tool", both, {}, None)["part_count"] == "ns=1;s=done"
    lifetime = {"parts_lifetime": "ns=1;s=life", "item_state": "ns=1;s=st"}
    src = signal_sources("machinery", lifetime, {}, None)
    assert "part_count" not in src  # machinery publishes no counts
    assert src["availability"] == "(session) + ns=1;s=st"
    assert "alarm" not in src  # no event notifier: no alarm signals
    assert signal_sources("machine_tool", lifetime, {}, None)["part_count"] == "ns=1;s=life"
    assert signal_sources("none", None, {}, None) == {"availability": "(session)"}
