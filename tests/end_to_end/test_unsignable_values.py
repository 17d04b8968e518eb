"""A third-party adapter's unsignable value costs only itself, at a real Mosquitto.

A plugin adapter (registered the way an installed package is: a `.dist-info` with an
`edge_gateway.adapters` entry point on the gateway's PYTHONPATH) reports, every poll, a
good counter beside an integer beyond 2**53 and a `Decimal`, which canonical JSON cannot
carry. Its neighbour is a simulated Modbus machine. Before the fix every batch holding the
bad values was refused, on every poll; now the platform receives, signed, the counter,
a `bad` record with a null value and a reason for each bad value, and the neighbour's data,
and the gateway logs the problem once per machine and signal, not once per poll.
"""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto
from e2e import POINTS, GatewayProcess, verified_body, wait_for

pytestmark = pytest.mark.slow

PLUGIN = '''
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel

from adapters.base import PollingAdapter
from models.sample import Sample, utc_now


class OddSettings(BaseModel):
    connection: dict[str, object] | None = None
    points: list[dict[str, object]] = []


class OddAdapter(PollingAdapter):
    """Reports values no gateway can sign, as a careless plugin would."""

    settings_model: ClassVar[type[BaseModel]] = OddSettings
    polls = 0

    async def connect(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def read_once(self):
        type(self).polls += 1
        now, a = utc_now(), self.context.asset
        return [Sample(a, "count", type(self).polls, None, now),
                Sample(a, "huge", 2**60 + type(self).polls, None, now),
                Sample(a, "amount", Decimal("1.5"), None, now)]
'''


def install_plugin(where: Path) -> Path:
    where.mkdir()
    (where / "odd_adapter.py").write_text(PLUGIN)
    info = where / "edge_gateway_odd_adapter-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-gateway-odd-adapter\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        "[edge_gateway.adapters]\nodd = odd_adapter:OddAdapter\n")
    return where


def test_unsignable_values_leave_the_rest_flowing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    plugin = install_plugin(tmp_path / "plugin")
    plant = tmp_path / "plant.yaml"
    plant.write_text(textwrap.dedent(f"""\
        gateway: {{id: gw-1, site: plant-a, state_dir: {tmp_path / "state"}}}
        destinations:
          - {{id: local, url: "mqtt://127.0.0.1:{mosquitto.port}"}}
        machines:
          - id: odd
            area: hall-1
            line: line-1
            adapter: odd
            poll_interval: 0.1
            connection: {{}}
          - id: m1
            area: hall-1
            line: line-1
            adapter: modbus
            simulate: true
            poll_interval: 0.2
            simulator: {{seed: 1, time_scale: 60}}
            connection: {{host: 127.0.0.1, port: {free_port()}, timeout: 0.5}}
        """) + POINTS)
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    odd_topic = "edge/plant-a/hall-1/line-1/odd/telemetry"
    m1_topic = "edge/plant-a/hall-1/line-1/m1/telemetry"

    def count(topic: str) -> int:
        return sum(m.topic == topic for m in col.snapshot())

    gw = GatewayProcess(plant, env={"PYTHONPATH": str(plugin)}).start()
    try:
        wait_for(lambda: count(odd_topic) >= 10 and count(m1_topic) >= 5, 30,
                 "telemetry of both machines")
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
    finally:
        gw.kill()
    msgs = col.snapshot()
    jwks = json.loads(next(m for m in msgs if m.topic.endswith("/keys")).payload)
    odd = [verified_body(m.payload, jwks, m.topic) for m in msgs if m.topic == odd_topic]
    counts = []
    for body in odd:
        by_signal = {r["signal"]: r for r in body["records"]}
        assert set(by_signal) == {"count", "huge", "amount"}
        counts.append(by_signal["count"]["value"])
        assert by_signal["count"]["quality"] == "good"
        for name, reason in (("huge", "value: integer beyond 2**53 - 1"),
                             ("amount", "value: type Decimal is not JSON")):
            assert by_signal[name]["value"] is None and by_signal[name]["quality"] == "bad"
            assert by_signal[name]["reason"] == reason
    assert counts == sorted(counts) and len(set(counts)) == len(counts) >= 10
    m1 = [verified_body(m.payload, jwks, m.topic) for m in msgs if m.topic == m1_topic]
    assert all(any(r["signal"] == "spindle_speed" for r in b["records"]) for b in m1)
    lines = gw.events("record_not_signable")
    assert sorted((e["asset"], e["signal"], e["records"]) for e in lines) == [
        ("odd", "amount", 1), ("odd", "huge", 1)], lines  # once, not once per poll
