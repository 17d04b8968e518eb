"""The demo's OPC UA machine tool (config/demo-plant.yaml, dmu-01: `profile: machine_tool`
plus points) publishes each signal from one source only.

The acceptance audit of issue 13 found its AlarmCode point named `alarm`, the name the
profile gives the condition events' code: every alarm change then went out twice, `2002`
and `"2002"`, and a Sparkplug host re-birthed the device on each type flip. `validate`
now refuses such a point (tests/edge/config/test_point_name_clashes.py); this runs the
demo's block as shipped against the simulator over a real socket and checks what comes out.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import yaml
from test_opcua_alarms import Clock, alarm_model

from adapters.base import AdapterContext
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.settings import OpcUaSettings
from models.sample import Quality
from simulators.opcua_server import serve_opcua

DEMO = Path(__file__).resolve().parents[3] / "config" / "demo-plant.yaml"


def demo_block(machine: str) -> dict[str, Any]:
    plant = yaml.safe_load(DEMO.read_text())
    return next(m for m in plant["machines"] if m["id"] == machine)


async def test_demo_machine_tool_publishes_alarm_once_per_change(
    free_port: Callable[[], int],
) -> None:
    block = demo_block("dmu-01")
    port = free_port()
    connection = {**block["connection"], "endpoint": f"opc.tcp://127.0.0.1:{port}/",
                  "publishing_interval": 0.1, "watchdog_interval": 0.5}
    settings = OpcUaSettings.model_validate({"connection": connection,
                                             "points": block["points"]})
    assert settings.point_clashes() == []
    clock = Clock()
    clock.at = 350  # alarm 2002 active
    sim = await serve_opcua([(alarm_model("dmu-01"), f"opc.tcp://127.0.0.1:{port}/")],
                            refresh_interval=0.05, clock=clock)
    a = OpcUaAdapter(AdapterContext("dmu-01", 0.2, structlog.get_logger()), settings)
    types: dict[str, set[type]] = defaultdict(set)
    seen: dict[str, list[object]] = {}
    try:
        await a.connect()
        async with asyncio.timeout(15):
            async for batch in a.stream():
                good = [s for s in batch if s.quality is Quality.GOOD]
                per_signal = Counter(s.signal for s in good)
                assert per_signal["alarm"] <= 1, batch  # one `alarm` record per batch
                for s in good:
                    types[s.signal].add(type(s.value))
                    seen.setdefault(s.signal, []).append(s.value)
                # the condition's code, and the AlarmCode node's number under any name
                if "2002" in seen.get("alarm", []) and 2002 in [
                        *seen.get("alarm_code", []), *seen.get("alarm", [])]:
                    break
    finally:
        await a.aclose()
        await sim.aclose()
    assert types["alarm"] == {str}, types  # the condition's code, never the point's number
    assert types["alarm_code"] == {int}
