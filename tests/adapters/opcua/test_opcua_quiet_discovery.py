"""Discovery against the bundled OPC UA simulator logs no warning (publish_race.py).

asyncua warned "Received data for unknown subscription" whenever the adapter created a
second subscription (alarm events) while a publish was parked at the server: the simulator
answers a new subscription's first keep-alive before asyncua has registered it. The alarm
events now share the data subscription; a machine that needs several subscriptions gets the
residual warning routed to debug, and a real unknown-subscription warning still comes out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from adapters.base import AdapterContext
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.publish_race import SESSION_LOGGER, STARTUP_FILTER, UNKNOWN_SUBSCRIPTION
from adapters.opcua.settings import OpcUaSettings
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.opcua_server import SIM_URI, serve_opcua


def with_alarm() -> MachineModel:
    """Active, with an alarm raised before anyone subscribes (only ConditionRefresh shows it
    after the event items moved onto the data subscription)."""
    return MachineModel.scripted("m1", [
        ScriptEvent(at=0, execution=Execution.ACTIVE, controller_mode=ControllerMode.AUTOMATIC,
                    program="O2000", part_count=3, alarm_code=1016, alarm_text="coolant low"),
    ], start=datetime.now(UTC) - timedelta(seconds=5))


@contextmanager
def no_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """Every stdlib record (asyncua's) and structlog event (ours) at warning or above fails."""
    caplog.set_level(logging.WARNING)
    with capture_logs() as events:
        yield events
    loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    loud += [str(e) for e in events if e.get("log_level") in ("warning", "error", "critical")]
    assert loud == []


async def discover(port: int, conn: dict[str, Any],
                   want: Callable[[dict[str, Sample]], bool],
                   points: list[dict[str, Any]] | None = None) -> OpcUaAdapter:
    settings = OpcUaSettings.model_validate({
        "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}/", "publishing_interval": 0.1,
                       "timeout": 2.0, **conn},
        "points": points or []})
    a = OpcUaAdapter(AdapterContext("m1", 0.2, structlog.get_logger()), settings)
    await a.connect()
    latest: dict[str, Sample] = {}
    try:
        async with asyncio.timeout(10):
            async for batch in a.stream():
                latest.update({s.signal: s for s in batch})
                if want(latest):
                    return a
    finally:
        await a.aclose()
    raise AssertionError(f"stream ended; got {latest}")


def alarm_settled(code: str) -> Callable[[dict[str, Sample]], bool]:
    return lambda d: "alarm" in d and d["alarm"].quality is Quality.GOOD \
        and d["alarm"].value == code and "execution" in d


@pytest.mark.parametrize("profile", ["machine_tool", "sinumerik"])
async def test_profile_discovery_logs_no_warning(
    profile: str, free_port: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/"
    sim = await serve_opcua([(with_alarm(), url)],
                            sinumerik=[url] if profile == "sinumerik" else [])
    try:
        with no_warnings(caplog) as events:
            a = await discover(port, {"profile": profile}, alarm_settled("1016"))
    finally:
        await sim.aclose()
    assert a.subscription_count == 1  # data and alarm events on one subscription
    assert any(e["event"] == "opcua_machine_discovered" for e in events)


async def test_several_subscriptions_log_no_warning(
    free_port: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    """Items over three subscriptions plus the alarm events: every CreateSubscription after
    the first runs with a publish parked at the simulator."""
    port = free_port()
    sim = await serve_opcua([(with_alarm(), f"opc.tcp://127.0.0.1:{port}/")])
    names = ["SpindleSpeed", "SpindleLoad", "FeedRate", "Program", "PartCount"]
    try:
        with no_warnings(caplog):
            a = await discover(
                port, {"profile": "machine_tool", "max_items_per_subscription": 4},
                lambda d: alarm_settled("1016")(d) and {n.lower() for n in names} <= d.keys(),
                points=[{"name": n.lower(), "node": f"nsu={SIM_URI};s=m1.{n}"} for n in names])
    finally:
        await sim.aclose()
    assert a.subscription_count > 1


def test_a_real_unknown_subscription_still_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Outside a CreateSubscription of ours the warning is a real one and stays a warning."""
    caplog.set_level(logging.WARNING)
    log = logging.getLogger(SESSION_LOGGER)
    log.warning(UNKNOWN_SUBSCRIPTION, 7, {}.keys())
    with STARTUP_FILTER.creating():
        log.warning(UNKNOWN_SUBSCRIPTION, 8, {}.keys())
        log.warning("some other asyncua warning")
    assert [(r.levelno, r.getMessage()[-30:]) for r in caplog.records] == [
        (logging.WARNING, "subscription 7 active are dict_keys([])"[-30:]),
        (logging.WARNING, "some other asyncua warning"),
    ]
