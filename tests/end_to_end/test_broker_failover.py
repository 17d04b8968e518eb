"""The gateway survives the death of its broker node: nothing lost, nothing reordered.

Two real Mosquitto processes: A, and B bridging `edge/#` in from A, so a subscriber on B
(the survivor) sees what the gateway publishes on either. The gateway runs with
`urls: [A, B]`; A is killed (SIGKILL) mid-stream. What B's subscriber got is checked with the
platform-side verifier: signatures, and per topic no seq missing, none out of order
(duplicates are allowed at QoS 1: same seq, dropped by platforms).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for

from edge.platform_kit.verifier import verify_stream


@pytest.mark.slow
def test_killed_broker_node_loses_nothing(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> None:
    a = mosquitto_factory()
    b = mosquitto_factory(
        f"connection to-a\naddress 127.0.0.1:{a.port}\ntopic edge/# in 1\n"
        "cleansession true\nrestart_timeout 1\nbridge_protocol_version mqttv311\n")
    on_b = mqtt_collector(b.host, b.port, "edge/#")
    probe = mqtt_collector(a.host, a.port, "edge/#")  # the bridge is up once it sees A's data
    dests = (f"  - {{id: pair, urls: [{a.url}, {b.url}], failback_after: 0}}\n")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port(), free_port()], 0,
                                destinations=dests))
    gw = GatewayProcess(plant).start()
    try:
        def telemetry(col: Collector) -> int:
            return sum(m.topic.endswith("/telemetry") for m in col.snapshot())

        wait_for(lambda: telemetry(on_b) >= 10, 30, "telemetry at B through the bridge")
        count_before = telemetry(probe)
        wait_for(lambda: telemetry(probe) >= count_before + 10, 10, "more data on A")
        assert a.proc is not None
        a.proc.kill()  # the node the gateway is on dies mid-stream
        a.proc.wait()
        killed_at = telemetry(on_b)
        wait_for(lambda: telemetry(on_b) >= killed_at + 20, 20, "data at B after the kill")
        assert gw.events("mqtt_failover")

        def on_b_says() -> dict[str, object] | None:  # the detailed status names the node
            for m in reversed(on_b.snapshot()):
                if m.topic.endswith("/gw-1/status") and b'"destinations"' in m.payload:
                    return json.loads(m.payload)["destinations"]["pair"]  # type: ignore[no-any-return]
            return None

        wait_for(lambda: (on_b_says() or {}).get("failovers") == 1, 20, "status after failover")
        assert on_b_says()["broker"] == f"127.0.0.1:{b.port}"  # type: ignore[index]
        gw.signal(signal.SIGTERM)
        assert gw.wait(20) == 0

        def offline() -> bool:  # published after everything else was acknowledged, in order
            return any(m.topic.endswith("/gw-1/status") and b'"offline"' in m.payload
                       for m in on_b.snapshot())

        wait_for(offline, 10, "the offline status at B")
    finally:
        gw.kill()
    got = on_b.snapshot()
    jwks = json.loads(next(m.payload for m in reversed(got) if m.topic.endswith("/keys")))
    lines = [json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)}) for m in got
             if m.topic.endswith(("/telemetry", "/state"))]
    report = verify_stream(lines, jwks)
    assert report.missing == 0, report.to_dict()
    assert report.counts["reordered"] == 0, report.to_dict()
    assert report.ok, report.to_dict()
