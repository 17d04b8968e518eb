"""Alarms over OPC UA events: the simulator raises AlarmConditionType events from the
machine model's alarm, the adapter turns them into `alarm` / `alarm_text` / `alarm_count`.

End to end over a real socket with a clock the test moves, so each step is a known state of
the scripted model. The reconnect case proves ConditionRefresh: after a server restart the
alarm is raised *before* the client subscribes, so only the refresh can tell the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from asyncua import ua
from test_opcua_adapter import collect

from adapters.base import AdapterContext
from adapters.opcua import alarms
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.settings import OpcUaSettings
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.opcua_server import serve_opcua

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def alarm_model(asset: str = "m1") -> MachineModel:
    """No alarm until 100 s, 1001 until 200 s, none until 300 s, then 2002."""
    return MachineModel.scripted(asset, [
        ScriptEvent(at=0, execution=Execution.ACTIVE, controller_mode=ControllerMode.AUTOMATIC,
                    program="O2000", part_count=1),
        ScriptEvent(at=100, execution=Execution.INTERRUPTED, alarm_code=1001,
                    alarm_text="spindle overload"),
        ScriptEvent(at=200, execution=Execution.ACTIVE, alarm_code=0),
        ScriptEvent(at=300, execution=Execution.INTERRUPTED, alarm_code=2002,
                    alarm_text="tool breakage"),
    ], start=START)


class Clock:
    def __init__(self) -> None:
        self.at = 50.0

    def __call__(self) -> datetime:
        return START + timedelta(seconds=self.at)


def profile_adapter(port: int) -> OpcUaAdapter:
    settings = OpcUaSettings.model_validate({"connection": {
        "endpoint": f"opc.tcp://127.0.0.1:{port}/", "publishing_interval": 0.1,
        "timeout": 2.0, "watchdog_interval": 0.5, "profile": "machine_tool"}})
    return OpcUaAdapter(AdapterContext("m1", 0.2, structlog.get_logger()), settings)


async def alarm_values(a: OpcUaAdapter, until: str,
                       within: float = 10.0) -> tuple[list[object], dict[str, Sample]]:
    """Every good `alarm` value published, in order, up to `until`; the latest samples."""
    values: list[object] = []
    latest: dict[str, Sample] = {}
    async with asyncio.timeout(within):
        async for batch in a.stream():
            latest.update({s.signal: s for s in batch})
            values += [s.value for s in batch
                       if s.signal == "alarm" and s.quality is Quality.GOOD]
            if values and values[-1] == until:
                return values, latest
    raise AssertionError("stream ended")


def alarm_is(code: str) -> Callable[[dict[str, Sample]], bool]:
    return lambda d: "alarm" in d and d["alarm"].value == code \
        and d["alarm"].quality is Quality.GOOD


async def test_alarm_raised_cleared_and_refreshed_after_restart(
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    clock = Clock()
    sim = await serve_opcua([(alarm_model(), f"opc.tcp://127.0.0.1:{port}/")],
                            refresh_interval=0.05, clock=clock)
    a = profile_adapter(port)
    try:
        await a.connect()
        got = await collect(a, alarm_is(""))
        assert got["alarm_count"].value == 0
        assert a.describe()["alarms"] == "messages"

        clock.at = 150
        got = await collect(a, alarm_is("1001"))
        assert got["alarm_text"].value == "spindle overload"
        assert got["alarm_count"].value == 1

        clock.at = 250
        got = await collect(a, alarm_is(""))
        assert got["alarm_count"].value == 0

        clock.at = 350
        await collect(a, alarm_is("2002"))

        await sim.stop()
        await sim.start()  # raises 2002 again before anyone subscribes
        await a.connect()
        values, got = await alarm_values(a, "2002")
        assert values == ["2002"]  # no false "" published before the refresh brought it
        assert got["alarm_text"].value == "tool breakage"
        assert got["alarm"].source_ts is not None  # the condition's Time, even refreshed
    finally:
        await a.aclose()
        await sim.aclose()


async def test_already_active_alarm_seen_on_first_connect(free_port: Callable[[], int]) -> None:
    port = free_port()
    clock = Clock()
    clock.at = 150
    sim = await serve_opcua([(alarm_model(), f"opc.tcp://127.0.0.1:{port}/")],
                            refresh_interval=0.05, clock=clock)
    a = profile_adapter(port)
    try:
        await a.connect()
        # no "" published before the refreshed alarm: the refresh bracket holds it back
        values, got = await alarm_values(a, "1001")
        assert values == ["1001"]
        assert got["alarm_count"].value == 1
    finally:
        await a.aclose()
        await sim.aclose()


def _cond(cid: str, active: bool, severity: int = 500, name: str | None = None,
          when: float = 0.0) -> dict[str, Any]:
    return {"EventType": ua.NodeId(9341, 0), "ConditionName": name or cid,  # type: ignore[arg-type]
            "ActiveState/Id": active, "Retain": active, "Severity": severity,
            "Message": ua.LocalizedText(f"text {cid}"),
            "Time": START + timedelta(seconds=when),
            alarms.CONDITION_ID: ua.NodeId(cid, 2)}  # type: ignore[arg-type]


def test_alarm_set_tracks_several_conditions_and_refresh() -> None:
    s = alarms.AlarmSet()
    assert s.signals()["alarm"] == ("", None)
    assert s.apply(_cond("A", True, 300, when=1))
    assert s.apply(_cond("B", True, 800, when=2))
    assert s.signals()["alarm"] == ("B", None)  # most severe wins
    assert s.signals()["alarm_count"] == (2, None)
    assert s.apply(_cond("B", False))
    assert s.signals()["alarm"] == ("A", None)
    assert not s.apply({"EventType": ua.NodeId(2041, 0), "Message": "hello"})  # type: ignore[arg-type]
    # a refresh that repeats only C drops A (no longer retained by the server)
    s.apply({"EventType": alarms.REFRESH_START})
    s.apply(_cond("C", True, 300, when=5))
    assert s.refreshing
    s.apply({"EventType": alarms.REFRESH_END})
    assert set(s.active) == {ua.NodeId("C", 2).to_string()}  # type: ignore[arg-type]
    assert s.signals()["alarm_text"] == ("text C", None)
    assert s.apply(_cond("C", False))
    assert s.signals() == {"alarm": ("", None), "alarm_text": ("", None),
                           "alarm_count": (0, None)}
