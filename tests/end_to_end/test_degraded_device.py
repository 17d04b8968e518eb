"""A connected device whose every point fails is reported, at a real broker (issue 12 item 7).

The gateway runs as a subprocess; machine `dead` is a Modbus unit (a socket server in this
test) that answers exception 4 to every request. Before: `availability: available` in the
state stream and `up` in the retained status while every value was bad. Now: the state says
`unavailable` and the retained status says `degraded`, with the reason naming the points.

Why a device is not up is told with its facts (issue 12): `device_faults` in the retained
status and in `health` gives the error class and its cause, since when, how many attempts
failed and how often the device came back; before, only a line of text in the status.
"""

from __future__ import annotations

import asyncio
import json
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import GatewayProcess, plant_yaml, wait_for

from edge.platform_kit.client import query
from edge.signing.jws import b64url_decode


class _Exception4(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        try:
            while head := sock.recv(7, 0x100):  # MSG_WAITALL: the MBAP header
                tid, _proto, length, unit = struct.unpack(">HHHB", head)
                pdu = sock.recv(length - 1, 0x100)
                sock.sendall(struct.pack(">HHHBBB", tid, 0, 3, unit, pdu[0] | 0x80, 4))
        except (OSError, struct.error):
            pass


def serve_exception4(port: int) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _Exception4)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def failing_unit(free_port: Callable[[], int]) -> Iterator[int]:
    port = free_port()
    server = serve_exception4(port)
    yield port
    server.shutdown()
    server.server_close()


DEAD_STATE = "edge/plant-a/hall-1/line-2/dead/state"


def latest_status(col: Collector) -> dict[str, Any]:
    found = [json.loads(m.payload) for m in col.snapshot() if m.topic.endswith("/status")]
    detailed = [s for s in found if "devices" in s]
    return detailed[-1] if detailed else {}


@pytest.mark.slow
def test_all_points_failing_is_degraded_in_state_and_status(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int], failing_unit: int,
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port,
                                dead_port=failing_unit))
    gw = GatewayProcess(plant).start()

    def status() -> dict[str, Any]:
        return latest_status(col)

    try:
        wait_for(lambda: status().get("devices", {}).get("dead") == "degraded", 30,
                 "retained status saying degraded")
        # the status goes straight to the link, the state envelope through the batcher and
        # the outbox: it may come later
        wait_for(lambda: any(m.topic == DEAD_STATE for m in col.snapshot()), 20,
                 "dead's state envelope")
        reason = status()["device_reasons"]["dead"]
        assert "execution" in reason and "spindle_speed" in reason
        assert status()["devices"]["m1"] == "up"
        [line] = gw.events("device_degraded")
        assert line["asset"] == "dead" and "part_count" in line["failing"]
    finally:
        gw.kill()
    states = [json.loads(m.payload) for m in col.snapshot() if m.topic == DEAD_STATE]
    assert states
    records = [json.loads(b64url_decode(s["payload"]))["records"][0] for s in states]
    assert [r["availability"] for r in records] == ["unavailable"] * len(records)


@pytest.mark.slow
def test_device_faults_say_why_since_when_and_how_often(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    """Nothing listens on `dead`'s port: down, DeviceUnavailable, `since` fixed while the
    failures grow. Then a unit answers (exception 4 to everything): the device came back
    once (`reconnects` 1) and is degraded, a state that raises nothing (`error` null)."""
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pub.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    dead_port = free_port()
    dests = (f'  - {{id: local, url: "mqtt://127.0.0.1:{mosquitto.port}"}}\n'
             "platforms:\n  - {id: p, public_key_file: p.pub.pem}\n")
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port,
                                dead_port=dead_port, destinations=dests))

    def health() -> dict[str, Any]:
        reply = asyncio.run(query(mosquitto.url, key, "edge/plant-a/gw-1", "health", {},
                                  wait=15))
        return reply["result"]  # type: ignore[no-any-return]

    gw = GatewayProcess(plant).start()
    server = None
    try:
        wait_for(lambda: latest_status(col).get("devices", {}).get("dead") == "down", 30,
                 "retained status saying down")
        fault = latest_status(col)["device_faults"]["dead"]
        assert fault["status"] == "down" and fault["error"] == "DeviceUnavailable"
        assert fault["reason"] == latest_status(col)["device_reasons"]["dead"]
        assert fault["failures"] >= 1 and fault["reconnects"] == 0
        assert "m1" not in latest_status(col)["device_faults"]  # up: no fault
        first = health()
        assert first["device_faults"]["dead"]["since"] == fault["since"]
        assert "127.0.0.1" in first["device_reasons"]["dead"]
        wait_for(lambda: health()["device_faults"]["dead"]["failures"]
                 > first["device_faults"]["dead"]["failures"], 30, "another failed attempt")
        assert health()["device_faults"]["dead"]["since"] == fault["since"]  # retries: same
        server = serve_exception4(dead_port)
        wait_for(lambda: latest_status(col).get("devices", {}).get("dead") == "degraded", 60,
                 "the unit answering, every point failing")
        back = latest_status(col)["device_faults"]["dead"]
        assert back["status"] == "degraded" and back["error"] is None and back["cause"] is None
        assert back["reconnects"] == 1 and back["failures"] == 0
        assert back["since"] > fault["since"]
    finally:
        gw.kill()
        if server is not None:
            server.shutdown()
            server.server_close()
