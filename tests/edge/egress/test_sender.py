"""The sender and `drop_oldest`: an envelope is delivered or counted as dropped, never both.

Why: a flaky end-to-end test saw `sealed 150 == delivered 63 + dropped 89`: two envelopes
were delivered *and* counted as dropped. The sender read a batch of rows, then paced the
backlog (`backlog_rate`) with the rows in memory; an append meanwhile evicted some of them
under `drop_oldest` (counting them), and the sender published them anyway. Here a real
Mosquitto, a real `MqttTransport` and a real outbox in tmp_path replay a backlog slowly
while new envelopes keep evicting the oldest rows; what an independent subscriber received
plus `dropped` must equal what was appended, exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from e2e import until

from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.sender import DestinationSender
from edge.signing.jws import b64url_encode
from edge.status.gateway_source import destination_status
from edge.transport.mqtt import MqttTransport
from models.plant import Destination

if TYPE_CHECKING:
    from conftest import Collector, Mosquitto

TOPIC = "edge/test/sender/telemetry"
SIZE = 200  # bytes per row: payload + topic


def put(ob: Outbox, n: int) -> None:
    for _ in range(n):
        seq, _prev = ob.load_chain().next(TOPIC)
        payload = f"envelope-{seq:05d}".encode().ljust(SIZE - len(TOPIC), b".")
        link = b64url_encode(hashlib.sha256(payload).digest())
        ob.append(TOPIC, seq, link, payload, retain=False, dests=["d"])


async def test_rows_evicted_while_the_backlog_is_paced_are_never_published(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, TOPIC)

    def received() -> set[bytes]:
        return {bytes(m.payload) for m in col.snapshot()}

    with Outbox(tmp_path / FILENAME, caps={"d": OutboxCap(20 * SIZE)}) as ob:
        put(ob, 20)  # a backlog, sealed before the link came up
        dest = Destination(id="d", url=f"mqtt://{mosquitto.host}:{mosquitto.port}")
        transport = MqttTransport(dest, "gw-sender-test", backoff_min=0.1, backoff_max=0.5)
        await transport.start()
        assert await transport.wait_connected(10)
        sender = DestinationSender("d", transport, ob, structlog.get_logger(), backlog_rate=20)
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: len(received()) >= 1, 10, "the first replayed envelope")
            for _ in range(10):  # live data keeps arriving while the backlog is replayed
                put(ob, 4)
                seen = len(received())
                await until(lambda n=seen: len(received()) > n, 10, "the replay going on")
            await until(lambda: ob.pending("d")[0] == 0, 20, "the outbox drained")
            await until(lambda: len(received()) >= 60 - ob.counters("d")["dropped"], 10,
                        "every envelope not dropped at the subscriber")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            published = transport.stats["published"]
            await transport.stop()
        counters = ob.counters("d")
    delivered = received()
    assert counters["dropped"] > 0 and counters["appended"] == 60
    assert len(delivered) + counters["dropped"] == 60, (len(delivered), counters)
    assert counters["acked"] == len(delivered) == published  # nothing evicted was published


async def test_the_page_counts_envelopes_not_every_puback_of_the_link(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector]
) -> None:
    """The destinations page and /metrics showed `acked` above `sent`: acked was the
    transport's PUBACK count, which also holds the retained status, the JWKS and query
    replies. Both now count this destination's envelopes: published, then acknowledged."""
    col = mqtt_collector(mosquitto.host, mosquitto.port, TOPIC)
    with Outbox(tmp_path / FILENAME, caps={"d": OutboxCap(100 * SIZE)}) as ob:
        put(ob, 5)
        dest = Destination(id="d", url=f"mqtt://{mosquitto.host}:{mosquitto.port}")
        transport = MqttTransport(dest, "gw-sender-count", backoff_min=0.1, backoff_max=0.5)
        await transport.start()
        assert await transport.wait_connected(10)
        for leaf in ("status", "keys", "reply"):  # what the gateway sends beside the outbox
            await transport.publish(f"edge/test/gw/{leaf}", b"{}", qos=1)
        sender = DestinationSender("d", transport, ob, structlog.get_logger())
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: ob.pending("d")[0] == 0, 10, "the outbox drained")
            await until(lambda: len(col.snapshot()) == 5, 10, "5 envelopes at the subscriber")
            shown = destination_status(dest, transport, sender, ob)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await transport.stop()
    assert transport.stats["acked"] == 8  # the link's PUBACKs: 5 envelopes and 3 others
    assert (shown.sent, shown.acked) == (5, 5)
