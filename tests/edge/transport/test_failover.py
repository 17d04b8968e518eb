"""MqttTransport across several broker URLs: failover on loss and failback to the first.

Two real Mosquitto processes (not bridged: a subscriber on each) play a primary and a
standby. Why: the transport must move on when its node dies, deliver everything that was
not acknowledged on the next node before anything new (so per-topic order holds), and come
back to the first URL per the documented policy without losing a message on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from e2e import until
from structlog.testing import capture_logs

from edge.transport.mqtt import MqttTransport
from models.plant import Destination

if TYPE_CHECKING:
    from conftest import Collector, Mosquitto

FAST = {"backoff_min": 0.1, "backoff_max": 0.5}


def two_node(a: Mosquitto, b: Mosquitto, failback_after: float = 0.0) -> MqttTransport:
    dest = Destination(id="pair", urls=[a.url, b.url], failback_after=failback_after)
    return MqttTransport(dest, "gw-failover", **FAST)


def seqs(col: Collector) -> list[int]:
    return [int(m.payload) for m in col.snapshot()]


async def test_fails_over_in_order_and_returns_to_the_first_url(
    mosquitto_factory: Callable[..., Mosquitto], mqtt_collector: Callable[..., Collector]
) -> None:
    a, b = mosquitto_factory(), mosquitto_factory()
    on_a = mqtt_collector(a.host, a.port, "f/#")
    on_b = mqtt_collector(b.host, b.port, "f/#")
    t = two_node(a, b, failback_after=0.5)
    with capture_logs() as logs:
        await t.start()
        assert await t.wait_connected(10) and t.broker == f"127.0.0.1:{a.port}"
        n = 0

        async def send(count: int) -> None:
            nonlocal n
            await asyncio.gather(*(t.publish("f/x", str(n + i).encode())
                                   for i in range(count)))
            n += count

        await send(50)
        # Mosquitto acknowledges before it has written to its subscribers, and a stopped
        # Mosquitto drops what it had not written: that window is the broker's (a cluster
        # replicates), so let a's subscriber have the first 50 before a dies.
        await until(lambda: len(set(seqs(on_a))) == 50, 5, "a's subscriber")
        a.stop()  # the node the transport is on dies; publishes keep coming meanwhile
        pending = asyncio.create_task(send(200))
        await asyncio.wait_for(pending, 15)  # every one acknowledged, by b
        assert t.broker == f"127.0.0.1:{b.port}" and t.stats["failovers"] == 1
        # acknowledged by b is not yet at b's subscriber (Mosquitto acks first, see above):
        # everything sent so far must be at a's or b's before the check below counts them
        await until(lambda: set(range(n)) <= set(seqs(on_a)) | set(seqs(on_b)), 10,
                    f"all {n} acknowledged messages at a's or b's subscriber")
        a.start()  # the first url is back: the transport returns within failback_after
        await until(lambda: t.broker == f"127.0.0.1:{a.port}" and t.connected, 10, "failback")
        on_a2 = mqtt_collector(a.host, a.port, "f/#")  # a lost its sessions with the restart
        await send(50)
        await until(lambda: set(range(n - 50, n)) <= set(seqs(on_a2)), 5, "a's new subscriber")
    try:
        events = [e["event"] for e in logs]
        assert "mqtt_failover" in events and "mqtt_failback" in events
        assert t.stats["failovers"] == 2
        got = seqs(on_a) + seqs(on_b) + seqs(on_a2)
        assert set(got) == set(range(n))  # nothing acknowledged is lost
        for stream in (seqs(on_a), seqs(on_b), seqs(on_a2)):
            firsts = list(dict.fromkeys(stream))  # duplicates (lost PUBACKs) allowed
            assert firsts == sorted(firsts)  # never reordered
    finally:
        await t.stop()


async def test_all_nodes_down_then_the_second_comes_up(
    mosquitto_factory: Callable[..., Mosquitto], mqtt_collector: Callable[..., Collector]
) -> None:
    a, b = mosquitto_factory(start=False), mosquitto_factory(start=False)
    t = two_node(a, b)
    await t.start()
    sent = asyncio.create_task(t.publish("f/late", b"queued", retain=True))
    assert not await t.wait_connected(0.5)
    b.start()
    await asyncio.wait_for(sent, 10)
    try:
        assert t.broker == f"127.0.0.1:{b.port}"
        [m] = await mqtt_collector(b.host, b.port, "f/#").wait(1)
        assert m.payload == b"queued"
    finally:
        await t.stop()


def test_url_or_urls_exactly_one_and_one_scheme() -> None:
    with pytest.raises(ValueError, match="exactly one of 'url' or 'urls'"):
        Destination(id="d", url="mqtt://a", urls=["mqtt://b"])
    with pytest.raises(ValueError, match="exactly one of 'url' or 'urls'"):
        Destination(id="d")
    with pytest.raises(ValueError, match="same scheme"):
        Destination(id="d", urls=["mqtt://a", "mqtts://b"])
    with pytest.raises(ValueError, match="listed twice"):
        Destination(id="d", urls=["mqtt://a", "mqtt://a"])
    assert Destination(id="d", url="mqtt://a").brokers == ["mqtt://a"]
    assert Destination(id="d", urls=["mqtt://a", "mqtt://b:1884"]).brokers == [
        "mqtt://a", "mqtt://b:1884"]
