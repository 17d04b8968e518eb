"""Format `sparkplug_b`: one Sparkplug 3.0 edge node session per destination broker.

Why a sender of its own rather than a per-row encoder: Sparkplug is a session protocol. Each
MQTT connection registers an NDEATH will with a new `bdSeq` (the transport asks `will()` at
every attempt), must publish NBIRTH and the DBIRTHs before any data, numbers every message
0-255 in one sequence, answers a `Node Control/Rebirth` command, and (with a primary host
configured) waits for that host's `STATE` before it is born. `SparkplugNode` holds those
rules without I/O; this class feeds it the destination's outbox rows and publishes what it
returns, so store-and-forward works as for the other formats: rows are deleted only after
their messages were written, and rows sealed while the link was down are replayed with the
metrics flagged `is_historical`.

Births and data go out at QoS 0, not retained, as the specification requires; they are
bound to their connection (`this_link_only`): after a reconnect nothing of the old session
is re-sent ahead of the new NBIRTH, the unwritten rows are replayed after it instead.
Sparkplug B has no signature: a `sparkplug_b` destination is unsigned (docs/sparkplug.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from edge.egress.formats.sparkplug_node import NAMESPACE, REBIRTH, Message, SparkplugNode
from edge.egress.formats.sparkplug_proto import sparkplug_b_pb2 as pb
from edge.egress.inflight import BacklogPace, InFlight
from edge.egress.outbox import OutboxRow
from edge.egress.sender import Publisher, RowSource, SenderStats
from edge.signing.jws import b64url_decode
from edge.transport.mqtt import IncomingMessage
from models.errors import EdgeError
from models.logger import Logger
from models.plant import Destination, Gateway

__all__ = ["SparkplugLink", "SparkplugSender", "sparkplug_node_for"]


def sparkplug_node_for(destination: Destination, gateway: Gateway) -> SparkplugNode:
    """The edge node of a `sparkplug_b` destination: group = site and node = gateway id
    unless `destinations[].sparkplug` names them. Its `will` goes to the transport."""
    settings = destination.sparkplug
    return SparkplugNode(settings.group_id or gateway.site, settings.edge_node_id or gateway.id)


class SparkplugLink(Publisher, Protocol):
    """What the session needs of `edge.transport.mqtt.MqttTransport`: a publisher that also
    subscribes (commands, STATE) and hands over what arrives."""

    async def subscribe(self, topic: str, qos: int = 1) -> None: ...

    def messages(self) -> AsyncIterator[IncomingMessage]: ...

    def reconnect(self, reason: str) -> None: ...


class SparkplugSender:
    """Drains one destination's outbox as a Sparkplug edge node (same surface as
    `DestinationSender`: `name`, `stats`, `wake`, `run`, `settle`, `close`)."""

    def __init__(
        self,
        name: str,
        transport: SparkplugLink,
        outbox: RowSource,
        node: SparkplugNode,
        logger: Logger,
        *,
        primary_host_id: str | None = None,
        backlog_rate: float = 200.0,
        max_inflight: int = 64,
        batch: int = 256,
    ) -> None:
        self.name = name
        self.transport = transport
        self.outbox = outbox
        self.node = node
        self.log = logger.bind(destination=name)
        self.primary_host_id = primary_host_id
        self.batch = batch
        self.stats = SenderStats()
        self._wake = asyncio.Event()
        self.inflight = InFlight(max_inflight)
        self._pace = BacklogPace(backlog_rate)
        self._host_online = primary_host_id is None
        self._host_ts = -1
        self._rebirth = False
        self._born_bdseq: int | None = None
        self._born_at = 0.0
        self._replay_until = outbox.last_id_at_open
        self._ignored_commands = False

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        node = self.node
        await self.transport.subscribe(f"{NAMESPACE}/{node.group}/NCMD/{node.node}", 1)
        await self.transport.subscribe(f"{NAMESPACE}/{node.group}/DCMD/{node.node}/+", 1)
        if self.primary_host_id is not None:
            await self.transport.subscribe(f"{NAMESPACE}/STATE/{self.primary_host_id}", 1)
        listener = asyncio.create_task(self._listen(), name=f"sparkplug-cmd-{self.name}")
        try:
            await self._drain()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _drain(self) -> None:
        cursor: int | None = None
        while True:
            if not self.transport.connected:
                await self.inflight.withdraw()
                cursor, self._born_bdseq = None, None
                await self.transport.wait_connected()
                continue
            if not self._host_online:  # primary host offline: hold data in the outbox
                if self._born_bdseq is not None:
                    await self._die()
                    cursor = None
                await self._idle()
                continue
            if self._born_bdseq != self.node.bdseq:  # a new connection: a new session
                await self.inflight.withdraw()
                cursor = None
                self._birth("connect")
            elif self._rebirth:
                self._birth("rebirth")
            self._wake.clear()
            rows = self.outbox.peek(self.name, after_id=cursor, limit=self.batch)
            if not rows:
                await self._idle()
                continue
            for row in rows:
                if self._interrupted():
                    break
                historical = (
                    row.id <= self._replay_until or row.created < self._born_at
                )
                if historical:  # pace the backlog, as for the other formats
                    await self._pace.wait()
                while not await self.inflight.acquire():
                    if self._interrupted():
                        break
                if self._interrupted():
                    break
                # claimed now, with no await before the publish is scheduled: an append in
                # between could evict the row, and `dropped` would count what was delivered
                if not self.outbox.claim(self.name, row.id):  # evicted since the peek
                    self.inflight.release()
                    cursor = row.id
                    continue
                messages = self.node.feed(_body(row), historical=historical)
                self.inflight.track(self._send(row, messages, historical, self.node.bdseq))
                cursor = row.id

    def _interrupted(self) -> bool:
        return (
            not self.transport.connected
            or not self._host_online
            or self._rebirth
            or self._born_bdseq != self.node.bdseq
        )

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.inflight.poll):
                await self._wake.wait()
        self._wake.clear()

    def _birth(self, why: str) -> None:
        self._rebirth = False
        messages = self.node.birth()
        self._born_bdseq = self.node.bdseq
        self._born_at = time.time()
        for msg in messages:
            self.inflight.track(self._publish(msg, self.node.bdseq))
        self.log.info("sparkplug_birth", why=why, bdseq=self.node.bdseq,
                      devices=len(messages) - 1)

    async def _die(self) -> None:
        """The primary host went offline: as Sparkplug 3.0 has it, publish the NDEATH of the
        session (its bdSeq), end the connection, and connect again (a new bdSeq) to wait for
        the host's STATE; everything meanwhile stays in the outbox and replays as historical."""
        await self.inflight.withdraw()
        self._born_bdseq = None
        with contextlib.suppress(EdgeError):
            await self.transport.publish(self.node.topic("NDEATH"), self.node.death_payload(),
                                         qos=1, this_link_only=True)
        self.log.warning("sparkplug_primary_host_offline", host=self.primary_host_id)
        self.transport.reconnect("primary host offline")

    # ------------------------------------------------------------------ publishing

    async def _publish(self, msg: Message, session: int) -> None:
        with contextlib.suppress(EdgeError, asyncio.CancelledError):
            await self._write(msg, session)

    async def _write(self, msg: Message, session: int) -> None:
        """Publish on the connection of `session` (its bdSeq) or not at all: a task that runs
        after a reconnect must not put the old session's seq ahead of the new NBIRTH."""
        if self.node.bdseq != session:
            raise EdgeError("the Sparkplug session ended")
        await self.transport.publish(msg.topic, msg.payload, qos=0, this_link_only=True)

    async def _send(
        self, row: OutboxRow, messages: list[Message], historical: bool, session: int
    ) -> None:
        """Write the row's messages (in the order their seq was given), then delete the row
        (queued for the outbox's writer thread in the gateway; the row stays claimed until
        the delete commits, so `release` below leaves an acknowledged row alone)."""
        self.stats.published += 1
        try:
            for msg in messages:
                await self._write(msg, session)
            self.outbox.ack(self.name, [row.id])
            self.stats.sent += 1
            self.stats.replayed += historical
        except EdgeError as exc:  # link lost or stopping: replayed after the next birth
            self.log.debug("sparkplug_send_abandoned", id=row.id, error=str(exc))
        except asyncio.CancelledError:
            pass
        finally:  # QoS 0: nothing of an unfinished row is acknowledged, so it may go
            self.outbox.release(self.name, row.id)
            self.inflight.release()

    # ------------------------------------------------------------------ commands and STATE

    async def _listen(self) -> None:
        async for msg in self.transport.messages():
            parts = msg.topic.split("/")
            if len(parts) == 3 and parts[1] == "STATE":
                self._on_state(msg.payload)
            elif len(parts) >= 4 and parts[2] == "NCMD":
                self._on_ncmd(msg.payload)
            elif len(parts) >= 4 and parts[2] == "DCMD" and not self._ignored_commands:
                self._ignored_commands = True  # once: the gateway is read-only toward devices
                self.log.warning("sparkplug_dcmd_ignored", topic=msg.topic)

    def _on_ncmd(self, payload: bytes) -> None:
        try:
            command = pb.Payload.FromString(payload)
        except Exception:  # protobuf's DecodeError: a garbled command is ignored, logged
            self.log.warning("sparkplug_ncmd_unreadable")
            return
        for metric in command.metrics:
            if metric.name == REBIRTH and metric.boolean_value:
                self.log.info("sparkplug_rebirth_requested")
                self._rebirth = True
                self.wake()

    def _on_state(self, payload: bytes) -> None:
        """Sparkplug 3.0 STATE: `{"online": bool, "timestamp": ms}`; an older timestamp
        than one already seen is a stale retained message and is ignored."""
        try:
            state = json.loads(payload)
            online, ts = bool(state["online"]), int(state["timestamp"])
        except (ValueError, KeyError, TypeError):
            self.log.warning("sparkplug_state_unreadable", host=self.primary_host_id)
            return
        if ts < self._host_ts:
            return
        self._host_ts = ts
        if online != self._host_online:
            self._host_online = online
            self.log.info("sparkplug_primary_host", host=self.primary_host_id, online=online)
            self.wake()

    # ------------------------------------------------------------------ shutdown

    async def settle(self) -> None:
        await self.inflight.settle()

    async def close(self) -> None:
        """A clean stop ends the session explicitly: the broker drops the will on a clean
        DISCONNECT, so the NDEATH (with the session's bdSeq) is published here."""
        await self.inflight.withdraw()
        if self.transport.connected and self._born_bdseq is not None:
            with contextlib.suppress(EdgeError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.transport.publish(
                        self.node.topic("NDEATH"), self.node.death_payload(), qos=1
                    )
            self._born_bdseq = None


def _body(row: OutboxRow) -> dict[str, Any]:
    """The body of a stored envelope (signed by us, so it is not verified again here)."""
    envelope = json.loads(row.payload)
    body: dict[str, Any] = json.loads(b64url_decode(envelope["payload"]))
    return body
