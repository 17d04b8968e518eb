"""The embedded broker: a working 3.1.1 broker, a clean MQTT 5 refusal, a clear busy-port error."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from amqtt.broker import Broker
from paho.mqtt.enums import CallbackAPIVersion

from edge.daemon.embedded_broker import EmbeddedBroker
from models.errors import TransportError

if TYPE_CHECKING:
    from conftest import Collector


def _connack(port: int, protocol: int, will: bool, within: float) -> Any:
    """Connect a plain paho client; the CONNACK reason (None if none came), off the event loop."""
    got = threading.Event()
    reason: list[Any] = []
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="gw-test",
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
        reconnect_on_failure=False,
    )
    if will:
        c.will_set("gw/status", b"offline", qos=1, retain=True)
    c.on_connect = lambda _c, _u, _f, rc, _p: (reason.append(rc), got.set())
    c.connect("127.0.0.1", port)
    deadline = time.monotonic() + within
    while not got.is_set() and time.monotonic() < deadline:
        c.loop(0.05)
    c.disconnect()
    return reason[0] if reason else None


async def test_pub_sub_roundtrip_over_311(mqtt_collector: Callable[..., Collector]) -> None:
    async with EmbeddedBroker(port=0) as broker:
        assert broker.port != 0 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
        c = mqtt_collector(broker.host, broker.port, "demo/#", protocol="3.1.1", wait=False)
        await c.subscribed()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            info = pub.publish("demo/x", b"hello", qos=1, retain=True)
            await asyncio.to_thread(info.wait_for_publish, 5)
            [m] = await c.wait(1)
            assert (m.topic, m.payload) == ("demo/x", b"hello")
            late = mqtt_collector(broker.host, broker.port, "demo/#", protocol="3.1.1", wait=False)
            got = await late.wait(1)
            # amqtt 0.12 hands a new subscriber each retained message twice (QoS 0, then 1).
            assert {(m.topic, m.payload, m.retain) for m in got} == {("demo/x", b"hello", True)}
        finally:
            pub.disconnect()
            pub.loop_stop()


@pytest.mark.parametrize("will", [False, True])
async def test_mqtt5_is_refused_at_once(will: bool) -> None:
    async with EmbeddedBroker(port=0) as broker:
        reason = await asyncio.to_thread(_connack, broker.port, mqtt.MQTTv5, will, 2.0)
        assert reason is not None and reason.value == 132  # "Unsupported protocol version"


async def test_amqtt_own_listener_leaves_v5_with_will_unanswered(
    free_port: Callable[[], int],
) -> None:
    """Why EmbeddedBroker owns the listener. If this starts failing, amqtt fixed it upstream."""
    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        assert await asyncio.to_thread(_connack, port, mqtt.MQTTv5, False, 2.0) is not None
        assert await asyncio.to_thread(_connack, port, mqtt.MQTTv5, True, 1.0) is None
    finally:
        await broker.shutdown()


async def test_busy_port_is_a_clear_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TransportError, match="already in use"):
            await EmbeddedBroker(port=port).start()


async def test_stop_is_prompt_and_frees_the_port() -> None:
    broker = EmbeddedBroker(port=0)
    await broker.start()
    port = broker.port
    assert await asyncio.to_thread(_connack, port, mqtt.MQTTv311, True, 2.0) is not None
    _, idle = await asyncio.open_connection("127.0.0.1", port)  # never sends a CONNECT
    started = time.monotonic()
    await broker.stop()
    assert time.monotonic() - started < 3
    idle.close()
    again = EmbeddedBroker(port=port)
    await again.start()
    await again.stop()
