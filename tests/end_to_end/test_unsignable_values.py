"""A third-party adapter's unsignable value costs only itself, at a real Mosquitto.

A plugin adapter (registered the way an installed package is: a `.dist-info` with an
`edge_gateway.adapters` entry point on the gateway's PYTHONPATH) reports, every poll, a
good counter beside an integer beyond 2**53 and a `Decimal`, which canonical JSON cannot
carry. Its neighbour is a simulated Modbus machine. Before the fix every batch holding the
bad values was refused, on every poll; now the platform receives, signed, the counter,
a `bad` record with a null value and a reason for each bad value, and the neighbour's data,
and the gateway logs the problem once per machine and signal, not once per poll.

The refusals are counted where an operator and a platform look (issue 12): the retained
status and the `health` reply carry `unsignable` (per machine; a platform limited to the
other machine sees none of them) and /metrics `edge_gateway_records_unsignable_total`.
Before, they were in the log only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import POINTS, GatewayProcess, verified_body, wait_for
from prometheus_client.parser import text_string_to_metric_families

from edge.platform_kit.client import query

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
    key, key_m1 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    for name, k in (("p", key), ("q", key_m1)):
        (tmp_path / f"{name}.pub.pem").write_bytes(
            k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    web = free_port()
    plant = tmp_path / "plant.yaml"
    plant.write_text(textwrap.dedent(f"""\
        gateway: {{id: gw-1, site: plant-a, state_dir: {tmp_path / "state"}, web: {{port: {web}}}}}
        destinations:
          - {{id: local, url: "mqtt://127.0.0.1:{mosquitto.port}"}}
        platforms:
          - {{id: everything, public_key_file: p.pub.pem}}
          - {{id: only-m1, public_key_file: q.pub.pem, machines: [m1]}}
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

    def status() -> dict[str, Any]:
        found = [json.loads(m.payload) for m in col.snapshot() if m.topic.endswith("/status")]
        return next((s for s in reversed(found) if "unsignable" in s), {})

    def metric() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{web}/metrics", timeout=5).text
        return {s.labels["action"]: s.value
                for f in text_string_to_metric_families(text)
                if f.name == "edge_gateway_records_unsignable"
                for s in f.samples if s.labels["machine"] == "odd"}

    gw = GatewayProcess(plant, env={"PYTHONPATH": str(plugin)}).start()
    try:
        wait_for(lambda: count(odd_topic) >= 10 and count(m1_topic) >= 5, 30,
                 "telemetry of both machines")
        # the first refusal of a machine publishes the status at once (not in 30 s)
        wait_for(lambda: status().get("unsignable", {}).get("replaced", 0) >= 2, 15,
                 "a retained status counting the refused records")
        assert set(status()["unsignable"]["by_machine"]) == {"odd"}
        assert status()["unsignable"]["dropped"] == 0
        wait_for(lambda: metric().get("replaced", 0) >= 20, 15, "the Prometheus counter")
        assert metric()["dropped"] == 0
        def health(k: Ed25519PrivateKey) -> dict[str, Any]:
            reply = asyncio.run(query(mosquitto.url, k, "edge/plant-a/gw-1", "health", {},
                                      wait=15))
            return reply["result"]["unsignable"]  # type: ignore[no-any-return]

        # two per poll (huge and amount): at least the 10 polls seen above
        mine = health(key)
        assert mine["replaced"] >= 20 and mine["by_machine"]["odd"]["replaced"] >= 20
        # a platform that may not see `odd` learns nothing of it
        assert health(key_m1) == {"replaced": 0, "dropped": 0, "by_machine": {}}
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
