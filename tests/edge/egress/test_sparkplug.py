"""The Sparkplug session at a real Mosquitto, read by an independent host (tests/sparkplug_host.py).

Real parts throughout: the sealer signs into a real SQLite outbox, the session drains it over
the real transport, a TCP proxy pulls the cable, and a paho subscriber hands every message
to a decoder protoc built from the vendored .proto.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import TcpProxy, until
from sparkplug_host import SparkplugHost, decoder

from edge.egress.formats.sparkplug import SparkplugSender, sparkplug_node_for
from edge.egress.outbox import Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.writer import OutboxWriter
from edge.signing.jws import Signer
from edge.transport.mqtt import MqttTransport
from models.envelope import Stream
from models.plant import Destination, Gateway

TOPIC = "edge/plant-a/hall-1/line-1/m1"


class Feeder:
    """Hands the collector's messages to the host in arrival order, once each."""

    def __init__(self, col: Collector, host: SparkplugHost) -> None:
        self.col, self.host, self.done = col, host, 0

    def pump(self) -> None:
        msgs = self.col.snapshot()
        for m in msgs[self.done:]:
            self.host.feed(m.topic, m.payload)
        self.done = len(msgs)

    async def until(self, predicate: Callable[[], bool], what: str, within: float = 15) -> None:
        """e2e.until, feeding the host what arrived before each look."""
        def pumped() -> bool:
            self.pump()
            return predicate()

        try:
            await until(pumped, within, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; kinds {self.host.kinds}") from None


def state(available: bool) -> dict[str, object]:
    return {"availability": "available" if available else "unavailable", "execution": "active",
            "controller_mode": "automatic", "emergency_stop": False, "alarms": [],
            "program": "O1", "part_count": 1, "bad_part_count": 0,
            "ts": "2026-11-22T10:00:00.000Z"}


def telemetry(i: int) -> list[dict[str, object]]:
    return [{"signal": "spindle_speed", "value": float(i), "unit": "1/min",
             "ts": "2026-11-22T10:00:00.000Z", "quality": "good"}]


class Session:
    """A real edge node session: sealer -> SQLite outbox -> SparkplugSender -> transport."""

    def __init__(self, tmp_path: Path, url: str, primary_host_id: str | None = None, *,
                 queued: bool = False) -> None:
        """`queued`: writes through the outbox's writer thread, as in the gateway."""
        self.dest = Destination(id="sp", url=url, format="sparkplug_b",
                                sparkplug={"primary_host_id": primary_host_id})
        node = sparkplug_node_for(self.dest, Gateway(id="gw-1", site="plant-a"))
        log = structlog.get_logger()
        self.outbox = Outbox(tmp_path / "outbox.sqlite3", caps={"sp": OutboxCap(2**24)},
                             logger=log)
        self.transport = MqttTransport(self.dest, "gw-1-sp", will=node.will, logger=log,
                                       backoff_min=0.05, backoff_max=0.2)
        self.writer = OutboxWriter(self.outbox) if queued else None
        store = self.writer or self.outbox
        self.sender = SparkplugSender("sp", self.transport, store, node, log,
                                      primary_host_id=primary_host_id)
        self.sealer = Sealer("gw-1", Signer(Ed25519PrivateKey.generate()), store,
                             [self.dest], is_connected=lambda _d: self.transport.connected)
        self.task: asyncio.Task[None] | None = None

    def seal(self, stream: Stream, records: list[dict[str, object]]) -> None:
        self.sealer.seal(f"{TOPIC}/{stream}", "m1", stream, records)
        self.sender.wake()

    async def __aenter__(self) -> Session:
        await self.transport.start()
        self.task = asyncio.create_task(self.sender.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.sender.close()
        await self.transport.stop()
        if self.writer is not None:
            await self.writer.close()
        self.outbox.close()


@pytest.fixture
def rig(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> Iterator[tuple[Mosquitto, TcpProxy, Collector]]:
    proxy = TcpProxy(free_port(), mosquitto.port)
    proxy.start()
    col = mqtt_collector(mosquitto.host, mosquitto.port, "spBv1.0/#")
    yield mosquitto, proxy, col
    proxy.stop()


@pytest.mark.parametrize("queued", [False, True], ids=["inline", "writer-thread"])
async def test_session_births_aliases_seq_wrap_device_loss_rebirth_and_bdseq(
    tmp_path: Path, rig: tuple[Mosquitto, TcpProxy, Collector],
    mqtt_collector: Callable[..., Collector], queued: bool,
) -> None:
    broker, proxy, col = rig
    sp = Session(tmp_path, f"mqtt://127.0.0.1:{proxy.listen_port}", queued=queued)
    host = SparkplugHost("plant-a", "gw-1")
    feed = Feeder(col, host)
    m1 = lambda: host.devices.get("m1")  # noqa: E731

    sp.seal("state", [state(True)])  # before the link: a backlog
    async with sp:
        await feed.until(lambda: (d := m1()) is not None and d.alive, "NBIRTH then DBIRTH m1")
        assert host.kinds[:2] == ["NBIRTH", "DBIRTH"] and host.nbirths == [0]
        assert m1().values["State/Execution"] == "active"  # type: ignore[union-attr]

        # 300 changes: DDATA by alias, seq wraps after 255 without a gap
        for i in range(300):
            sp.seal("telemetry", telemetry(i))
        await feed.until(lambda: m1().values.get("Signals/spindle_speed") == 299.0,  # type: ignore[union-attr]
                         "the last value")
        assert host.wrapped and host.kinds.count("DDATA") >= 299

        # the device goes away and comes back: DDEATH, then a DBIRTH with its values
        sp.seal("state", [state(False)])
        await feed.until(lambda: m1().deaths == 1, "DDEATH")  # type: ignore[union-attr]
        sp.seal("state", [state(True)])
        await feed.until(lambda: m1().births == 3, "DBIRTH after return")  # type: ignore[union-attr]

        # Rebirth command: a new NBIRTH (same bdSeq, seq 0) and the DBIRTHs
        cmd = decoder().Payload(timestamp=1)
        cmd.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
        commander = mqtt_collector(broker.host, broker.port, "unused/#")
        commander.client.publish("spBv1.0/plant-a/NCMD/gw-1", cmd.SerializeToString(), qos=1)
        await feed.until(lambda: len(host.nbirths) == 2 and m1().alive, "rebirth")  # type: ignore[union-attr]
        assert host.nbirths == [0, 0]

        # cable pulled: the broker publishes the will, NDEATH with the session's bdSeq;
        # back: a new session with the next bdSeq
        proxy.stop()
        await feed.until(lambda: host.ndeaths == [0], "NDEATH from the will")
        for i in range(3):  # sealed while the link is down: replayed, flagged historical
            sp.seal("telemetry", telemetry(500 + i))
        proxy.start()
        await feed.until(lambda: host.nbirths[-1] == 1 and m1().alive, "birth after reconnect")  # type: ignore[union-attr]
        await feed.until(lambda: m1().historical >= 3, "the backlog, is_historical")  # type: ignore[union-attr]
        sp.seal("telemetry", telemetry(1000))
        await feed.until(lambda: m1().values.get("Signals/spindle_speed") == 1000.0,  # type: ignore[union-attr]
                         "data in the new session")

        async def all_deleted() -> bool:
            """A row is deleted after its PUBACK, which this loop may read after the
            subscriber had the message; deletes queued after the writes are committed."""
            if sp.writer is not None:
                await sp.writer.drain()
            return sp.outbox.pending("sp")[0] == 0

        await until(all_deleted, 10, "every row acknowledged and deleted from the outbox")


async def test_primary_host_state_gates_the_session(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
) -> None:
    """Sparkplug 3.0 STATE: no NBIRTH before the primary host is online; when it goes
    offline, NDEATH and a new connection (next bdSeq) that waits for it; then the data held
    meanwhile follows the new births as historical."""
    col = mqtt_collector(mosquitto.host, mosquitto.port, "spBv1.0/#")
    sp = Session(tmp_path, mosquitto.url, primary_host_id="scada")
    host = SparkplugHost("plant-a", "gw-1")
    feed = Feeder(col, host)
    state_topic = "spBv1.0/STATE/scada"

    def publish_state(online: bool, ts: int) -> None:
        col.client.publish(state_topic, json.dumps({"online": online, "timestamp": ts}),
                           qos=1, retain=True)

    sp.seal("state", [state(True)])
    async with sp:
        await feed.until(lambda: sp.transport.connected, "connected")
        publish_state(True, 1000)
        await feed.until(lambda: host.devices.get("m1") is not None, "births after STATE online")
        topics = [m.topic for m in col.snapshot()]
        assert topics.index(state_topic) < topics.index("spBv1.0/plant-a/NBIRTH/gw-1")

        publish_state(False, 2000)
        await feed.until(lambda: host.ndeaths == [0], "NDEATH when the host went offline")
        for i in range(2):
            sp.seal("telemetry", telemetry(i))
        publish_state(True, 500)  # older than the last STATE seen: stale, ignored
        publish_state(True, 3000)
        m1 = host.devices["m1"]
        await feed.until(lambda: len(host.nbirths) == 2 and m1.historical >= 1
                         and m1.values.get("Signals/spindle_speed") == 1.0,
                         "a new session, then the held data as historical")
        assert host.nbirths[1] > host.nbirths[0], "a new connection takes a new bdSeq"
        names = [m.topic.split("/")[2] for m in col.snapshot() if m.topic != state_topic]
        assert names.index("NDEATH") < len(names) - 1 - names[::-1].index("NBIRTH")
