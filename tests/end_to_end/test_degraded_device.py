"""A connected device whose every point fails is reported, at a real broker (issue 12 item 7).

The gateway runs as a subprocess; machine `dead` is a Modbus unit (a socket server in this
test) that answers exception 4 to every request. Before: `availability: available` in the
state stream and `up` in the retained status while every value was bad. Now: the state says
`unavailable` and the retained status says `degraded`, with the reason naming the points.
"""

from __future__ import annotations

import json
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for

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


@pytest.fixture
def failing_unit(free_port: Callable[[], int]) -> Iterator[int]:
    port = free_port()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _Exception4)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    server.server_close()


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
        found = [json.loads(m.payload) for m in col.snapshot() if m.topic.endswith("/status")]
        detailed = [s for s in found if "devices" in s]
        return detailed[-1] if detailed else {}

    try:
        wait_for(lambda: status().get("devices", {}).get("dead") == "degraded", 30,
                 "retained status saying degraded")
        reason = status()["device_reasons"]["dead"]
        assert "execution" in reason and "spindle_speed" in reason
        assert status()["devices"]["m1"] == "up"
        [line] = gw.events("device_degraded")
        assert line["asset"] == "dead" and "part_count" in line["failing"]
    finally:
        gw.kill()
    states = [json.loads(m.payload) for m in col.snapshot()
              if m.topic == "edge/plant-a/hall-1/line-2/dead/state"]
    assert states
    records = [json.loads(b64url_decode(s["payload"]))["records"][0] for s in states]
    assert [r["availability"] for r in records] == ["unavailable"] * len(records)
