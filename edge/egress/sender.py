"""One sender per destination: drain its outbox rows in id order, delete after PUBACK.

Rows written by an earlier process, or stored before this destination's current MQTT
session began (sealed during an outage, or in flight when the link dropped), are replayed
at `backlog_rate` envelopes/s with the MQTT 5 user property `historical=true`, an unsigned
hint (3.1.1 connections carry no properties); the signed `created` is the authority on
lateness. Both cases are judged per row from facts that do not depend on when this task
happened to look at the link: the row id against `Outbox.last_id_at_open` (restart) and the
row's `created` (when the sealer judged the links, not when the writer thread stored it)
against the transport's `connected_since` (reconnect), so a reconnect is treated exactly
like a restart. The signed `historical` of the body is the sealer's
(edge/egress/sealer.py), see docs/protocol.md, "Store-and-forward and `historical`".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.egress.formats import EnvelopeEncoder, PayloadEncoder
from edge.egress.inflight import BacklogPace, InFlight
from edge.egress.outbox import OutboxRow
from models.errors import EdgeError
from models.logger import Logger


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def connected_since(self) -> float: ...

    @property
    def protocol_in_use(self) -> str: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *,
        payload_mqtt311: bytes | None = None,
        this_link_only: bool = False,
    ) -> None: ...


class RowSource(Protocol):
    """What a sender uses of the outbox: an `Outbox` (tests, tools) or, in the gateway, the
    `OutboxWriter` (edge/egress/writer.py), whose `ack` queues the delete for its writer
    thread; either way a row stays claimed, never evicted, until its delete commits."""

    @property
    def last_id_at_open(self) -> int: ...

    def peek(self, dest: str, after_id: int | None = None, limit: int = 100
             ) -> list[OutboxRow]: ...

    def claim(self, dest: str, row_id: int) -> bool: ...

    def release(self, dest: str, row_id: int) -> None: ...

    def ack(self, dest: str, ids: Iterable[int]) -> object: ...


@dataclass
class SenderStats:
    """Envelopes of this destination's outbox since the egress side started: `published`
    handed to the broker (a re-send after a lost link counts again), `sent` acknowledged
    (PUBACK; Sparkplug's QoS 0: written), `replayed` the acknowledged ones flagged
    historical. The transport's own PUBACK count also holds status, keys and query replies,
    which are no envelopes of the outbox."""

    published: int = 0
    sent: int = 0
    replayed: int = 0


class DestinationSender:
    """Drains one destination's outbox rows in id order, with a bounded number of
    unacknowledged publishes in flight so throughput is not one round trip per message."""

    def __init__(
        self,
        name: str,
        transport: Publisher,
        outbox: RowSource,
        logger: Logger,
        *,
        backlog_rate: float = 200.0,
        max_inflight: int = 64,
        batch: int = 256,
        encoder: PayloadEncoder | None = None,
    ) -> None:
        self.name = name
        self.encoder: PayloadEncoder = encoder or EnvelopeEncoder()
        self._fallback_logged = False
        self.transport = transport
        self.outbox = outbox
        self.log = logger.bind(destination=name)
        self.batch = batch
        self.stats = SenderStats()
        self._wake = asyncio.Event()
        self.inflight = InFlight(max_inflight)
        self._pace = BacklogPace(backlog_rate)
        self._replay_until = outbox.last_id_at_open

    def wake(self) -> None:
        self._wake.set()

    def _historical(self, row: OutboxRow) -> bool:
        """A replay: written by an earlier process, or stored before the current session.

        The session start comes from the transport (its CONNACK time), not from this loop
        noticing the link change: a sender asleep in `wait_connected` during the outage
        never saw the link down, and used to send the whole backlog as live, unpaced."""
        return (
            row.id <= self._replay_until
            or not self.transport.connected
            or row.created <= self.transport.connected_since
        )

    async def run(self) -> None:
        """While the link is down nothing is handed to the transport: rows wait in the outbox
        only, so a full outbox evicts rows that were truly never delivered, and its drop
        counters are exact. Publishes in flight when the link drops are withdrawn and the
        cursor rewinds to the oldest unacknowledged row."""
        cursor: int | None = None
        while True:
            if not self.transport.connected:
                await self.inflight.withdraw()
                cursor = None
                await self.transport.wait_connected()
                continue
            self._wake.clear()
            rows = self.outbox.peek(self.name, after_id=cursor, limit=self.batch)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.inflight.poll):
                        await self._wake.wait()
                continue
            for row in rows:
                historical = self._historical(row)
                if historical:  # pace the backlog so live data and the broker keep up
                    await self._pace.wait()
                while not await self.inflight.acquire():
                    if not self.transport.connected:
                        break
                if not self.transport.connected:
                    break
                # claimed now, not when the task first runs: an append in between could
                # evict the row, and `dropped` would count an envelope that was delivered
                if not self.outbox.claim(self.name, row.id):  # evicted since the peek
                    self.inflight.release()
                    cursor = row.id
                    continue
                self.inflight.track(self._send(row, historical))
                cursor = row.id

    async def _send(self, row: OutboxRow, historical: bool) -> None:
        """Publish a claimed row in this destination's format; after PUBACK `ack` deletes
        it (and ends the claim). A row withdrawn because the link dropped may already be on
        the wire, so its claim stays until it is sent again and acknowledged: evicting it
        would count as dropped an envelope the platform may have."""
        msg = self.encoder.encode(row.payload)
        user = [*msg.user_properties, *([("historical", "true")] if historical else [])]
        props = {"user_property": user} if user else None
        may_be_on_the_wire = False
        self.stats.published += 1
        try:
            await self.transport.publish(
                row.topic,
                msg.payload,
                qos=1,
                retain=row.retain,
                properties=props,
                payload_mqtt311=msg.payload_mqtt311,
            )
            if msg.payload_mqtt311 is not None and not self._fallback_logged:
                self._log_fallback()
            if msg.companions:  # unsigned companions, after the signed message, pipelined
                await asyncio.gather(*(
                    self.transport.publish(extra.topic, extra.payload, 1, extra.retain)
                    for extra in msg.companions
                ))
            self.outbox.ack(self.name, [row.id])
            self.stats.sent += 1
            self.stats.replayed += historical
        except EdgeError as exc:  # stopping: the row stays in the outbox for the next start
            self.log.debug("egress_send_abandoned", id=row.id, error=str(exc))
        except asyncio.CancelledError:  # withdrawn (link lost): the row stays in the outbox
            may_be_on_the_wire = True
        finally:
            if not may_be_on_the_wire:
                self.outbox.release(self.name, row.id)
            self.inflight.release()

    def _log_fallback(self) -> None:
        """Once per sender: a format that needs MQTT 5 went out in its 3.1.1 form."""
        if self.transport.protocol_in_use != "3.1.1":
            return
        self._fallback_logged = True
        self.log.warning(
            "egress_format_fallback",
            format=self.encoder.name,
            protocol="3.1.1",
            sent_as=self.encoder.mqtt311_form,
        )

    async def settle(self) -> None:
        """Wait until nothing is in flight (callers bound it with a timeout)."""
        await self.inflight.settle()

    async def close(self) -> None:
        await self.inflight.withdraw()
