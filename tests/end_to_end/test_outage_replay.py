"""A backlog is replayed the same way after a broker outage as after a gateway restart.

docs/protocol.md promises that every envelope replayed from the outbox carries the MQTT 5 user
property `historical=true` and arrives at no more than `backlog_rate` envelopes/s. Before the
fix only the restart path kept that promise: after a network outage (a TCP proxy between
gateway and a real Mosquitto, stopped and started) the sender never noticed the link had
been down and published the whole backlog unmarked and unpaced. An MQTT 5 subscriber reads
the user properties and the arrival times at the broker.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto, Received
from e2e import GatewayProcess, proxied_plant, stored, verified_body, wait_for

BACKLOG_RATE = 10.0  # envelopes/s: low, so the pace is measurable against broker jitter
BACKLOG = 12  # envelopes sealed while the broker is unreachable: enough to measure the pace


def _flag(msg: Received) -> str | None:
    props = dict(getattr(msg.properties, "UserProperty", None) or [])
    return props.get("historical")


def _envelopes(col: Collector) -> list[Received]:
    return [m for m in col.snapshot() if not m.topic.endswith(("/status", "/keys"))]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["reconnect", "restart"])
def test_backlog_is_flagged_and_paced_after_an_outage(
    path: str,
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    plant, proxy = proxied_plant(
        tmp_path, free_port, mosquitto.port, f"backlog_rate: {BACKLOG_RATE}, min_free_disk_bytes: 0"
    )
    proxy.start()
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: any(_flag(m) is None for m in _envelopes(col)), 30, "live data")
        proxy.stop()
        wait_for(lambda: bool(gw.events("mqtt_disconnected")), 20, "the gateway sees the outage")
        backlog = stored(tmp_path / "state")
        wait_for(  # the outage lasts until it has made a backlog worth measuring
            lambda: stored(tmp_path / "state") >= backlog + BACKLOG, 30, "a backlog of envelopes"
        )
        if path == "restart":
            gw.signal(signal.SIGKILL)
            gw.wait()
            gw = GatewayProcess(plant).start()
            wait_for(lambda: len(gw.events("egress_ready")) == 2, 20, "second start")
            kept = stored(tmp_path / "state")
            wait_for(  # the new process seals some data while the broker is still away
                lambda: stored(tmp_path / "state") >= kept + 3, 20, "envelopes of the new process"
            )
        before = len(col.snapshot())
        proxy.start()
        wait_for(
            lambda: any(_flag(m) is None for m in _envelopes(col)[before:]),
            60,
            "live data after the backlog",
        )
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
    finally:
        gw.kill()
        proxy.stop()

    msgs = col.snapshot()
    jwks = json.loads(next(m for m in msgs if m.topic.endswith("/keys")).payload)
    after = [m for m in msgs[before:] if not m.topic.endswith(("/status", "/keys"))]
    bodies = [verified_body(m.payload, jwks, m.topic) for m in after]
    # single destination: the signed flag says "sealed while the broker was unreachable"
    sealed_offline = [m for m, b in zip(after, bodies, strict=True) if b["historical"]]
    assert len(sealed_offline) >= 10, "the outage produced a backlog"
    unflagged = [m for m in sealed_offline if _flag(m) != "true"]
    rate = (len(sealed_offline) - 1) / (sealed_offline[-1].at - sealed_offline[0].at)
    print(
        f"{path}: {len(sealed_offline) - len(unflagged)} of {len(sealed_offline)} replayed "
        f"envelopes flagged, arriving at {rate:.1f}/s (bound {BACKLOG_RATE}/s)"
    )
    assert not unflagged, f"{len(unflagged)} of {len(sealed_offline)} replayed envelopes unmarked"
    assert rate <= BACKLOG_RATE * 1.25, f"replay at {rate:.0f}/s, bound {BACKLOG_RATE}/s"
