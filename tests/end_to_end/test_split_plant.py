"""Two gateway hosts serving one plant YAML, each its own share, against a real Mosquitto.

Why: the split is only useful if what a platform sees adds up to one plant, with every
machine published by exactly one gateway under its own identity, and each gateway's status
saying which machines it serves.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, verified_body, wait_for

from edge.config.shares import ENV_VAR


@pytest.mark.slow
def test_two_hosts_each_serve_their_share(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector], monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = plant_yaml(tmp_path / "state", [free_port(), free_port(), free_port()], mosquitto.port)
    text = text.replace("gateway: {id: gw-1,", "gateways: [gw-1, gw-2]\ngateway: {id: gw-1,")
    for machine, gateway in (("m1", "gw-1"), ("m2", "gw-2"), ("m3", "gw-1")):
        text = text.replace(f"  - id: {machine}\n", f"  - id: {machine}\n    gateway: {gateway}\n")
    hosts = []
    for name in ("host-1", "host-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plant.yaml").write_text(text)  # the same file on each host
        hosts.append(tmp_path / name / "plant.yaml")

    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    monkeypatch.setenv(ENV_VAR, "gw-2")
    gw1 = GatewayProcess(hosts[0], "--gateway-id", "gw-1").start()  # the flag wins
    gw2 = GatewayProcess(hosts[1]).start()  # the environment picks gw-2
    try:
        def status(gw: str) -> dict[str, object] | None:
            msgs = [m for m in col.snapshot() if m.topic == f"edge/plant-a/{gw}/status"]
            return json.loads(msgs[-1].payload) if msgs else None

        wait_for(lambda: status("gw-1") is not None and status("gw-2") is not None, 30,
                 "both gateways' status")
        assert status("gw-1")["machines"] == ["m1", "m3"]  # type: ignore[index]
        assert status("gw-2")["machines"] == ["m2"]  # type: ignore[index]

        def telemetry(machine: str) -> list[object]:
            return [m for m in col.snapshot()
                    if m.topic == f"edge/plant-a/hall-1/line-1/{machine}/telemetry"]

        wait_for(lambda: all(len(telemetry(m)) >= 3 for m in ("m1", "m2", "m3")), 30,
                 "telemetry of all three machines")
        jwks = {gw: json.loads(next(m.payload for m in col.snapshot()
                                    if m.topic == f"edge/plant-a/{gw}/keys"))
                for gw in ("gw-1", "gw-2")}
        assert jwks["gw-1"]["keys"][0]["kid"] != jwks["gw-2"]["keys"][0]["kid"]  # own keys
        for machine, gw in (("m1", "gw-1"), ("m2", "gw-2"), ("m3", "gw-1")):
            bodies = [verified_body(m.payload, jwks[gw], m.topic)  # type: ignore[attr-defined]
                      for m in telemetry(machine)]
            assert {b["gateway"] for b in bodies} == {gw}
            seqs = [b["seq"] for b in bodies]
            assert seqs == list(range(1, len(seqs) + 1))  # one chain: served once
        assert (tmp_path / "state" / "gw-1" / "keys").is_dir()
        assert (tmp_path / "state" / "gw-2" / "keys").is_dir()

        # SIGHUP keeps each host on its share: m3 moves from gw-1 to gw-2 in both copies
        moved = text.replace("  - id: m3\n    gateway: gw-1\n", "  - id: m3\n    gateway: gw-2\n")
        for plant in hosts:
            plant.write_text(moved)
        gw1.signal(signal.SIGHUP)
        gw2.signal(signal.SIGHUP)
        wait_for(lambda: bool(gw1.events("reloaded")) and bool(gw2.events("reloaded")), 30,
                 "both reloads")
        assert gw1.events("reloaded")[-1]["devices_stopped"] == ["m3"]
        assert gw2.events("reloaded")[-1]["devices_started"] == ["m3"]
        assert gw2.events("reloaded")[-1]["machines"] == 2
    finally:
        gw1.kill()
        gw2.kill()
