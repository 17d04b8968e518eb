"""Egress: batch records per topic, sign each batch once, store it, send it per destination.

    records --> batcher (per topic: max records / bytes / delay)
            --> sealer: seq + prev from the per-topic chain, v1 body, JWS (Ed25519)
            --> outbox (SQLite WAL): one row per destination whose policy takes the stream,
                in the same transaction as the chain update
            --> one DestinationSender per broker: publish in id order, delete after PUBACK

Records are signed before they are buffered, and leave the outbox only after the broker
acknowledged them, so a gateway restart or a broker outage loses nothing the outbox cap
did not deliberately drop (and that is counted). A stream no destination takes is never
signed or stored: denied data does not leave the process.

`historical` in the signed body is true when every destination of the envelope was
disconnected at sealing time (it is known then that the envelope will arrive late). Rows
written by an earlier process, or sealed while this destination's link was down, are
replayed at `backlog_rate` envelopes/s with the MQTT 5 user property `historical=true`,
an unsigned hint; the signed `created` is the authority on lateness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.outbox import Outbox, OutboxRow
from edge.signing import ChainState, Signer, signing_input_hash
from models.envelope import RETAINED_STREAMS, Stream, envelope_body
from models.errors import EdgeError
from models.plant import Destination, PatternFilter
from models.sample import utc_now


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> None: ...


class Sealer:
    """The one place a body becomes signed bytes; owns the seq/prev chains.

    Egress policy (data sovereignty) is applied here, before signing: a destination gets a
    topic only if it takes the stream and the machine, and only the signals its `signals`
    filter allows (telemetry records by signal name, state fields by field name). What a
    destination may not see is never signed for it, stored for it or sent to it.
    Destinations without a signal filter share one envelope and the topic's chain; a
    destination with a filter gets its own envelope and its own chain on that topic
    (chain key `dest:<id>:<topic>`), so each subscriber still sees one unbroken chain.
    """

    def __init__(
        self,
        gateway: str,
        signer: Signer,
        outbox: Outbox,
        destinations: list[Destination],
        is_connected: Callable[[str], bool],
    ) -> None:
        self.gateway = gateway
        self.signer = signer
        self.outbox = outbox
        self.destinations = destinations
        self.is_connected = is_connected
        self.chain: ChainState = outbox.load_chain()

    def seal(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> list[str]:
        """Sign and store; returns the destinations that accepted an envelope."""
        shared: list[str] = []
        own: list[tuple[str, list[dict[str, Any]]]] = []
        for d in self.destinations:
            if stream not in d.streams or (asset is not None and not d.machines.allows(asset)):
                continue
            if d.signals.everything or stream not in ("telemetry", "state"):
                shared.append(d.id)
                continue
            mine = _filter_signals(records, stream, d.signals)
            if mine:
                own.append((d.id, mine))
        accepted = (
            self._seal(topic, topic, asset=asset, stream=stream, records=records, dests=shared)
            if shared
            else []
        )
        for dest, mine in own:
            accepted += self._seal(
                f"dest:{dest}:{topic}",
                topic,
                asset=asset,
                stream=stream,
                records=mine,
                dests=[dest],
            )
        return accepted

    def _seal(
        self,
        chain_key: str,
        topic: str,
        *,
        asset: str | None,
        stream: Stream,
        records: list[dict[str, Any]],
        dests: list[str],
    ) -> list[str]:
        seq, prev = self.chain.next(chain_key)
        body = envelope_body(
            gateway=self.gateway,
            topic=topic,
            asset=asset,
            stream=stream,
            seq=seq,
            prev=prev,
            created=utc_now(),
            records=records,
            historical=not any(self.is_connected(d) for d in dests),
        )
        envelope = self.signer.sign_body(body)
        link = signing_input_hash(envelope)
        payload = json.dumps(envelope, separators=(",", ":")).encode()
        accepted = self.outbox.append(
            topic,
            seq,
            link,
            payload,
            retain=stream in RETAINED_STREAMS,
            dests=dests,
            chain_key=chain_key,
        )
        self.chain.commit(chain_key, seq, link)
        return [d for d, ok in accepted.items() if ok]


_ALWAYS_KEPT = frozenset({"ts", "availability"})  # what a state record means without the rest


def _filter_signals(
    records: list[dict[str, Any]], stream: str, allowed: PatternFilter
) -> list[dict[str, Any]]:
    if stream == "telemetry":
        return [r for r in records if allowed.allows(str(r.get("signal")))]
    return [{k: v for k, v in r.items() if k in _ALWAYS_KEPT or allowed.allows(k)} for r in records]


@dataclass
class SenderStats:
    sent: int = 0
    replayed: int = 0


class DestinationSender:
    """Drains one destination's outbox rows in id order, with a bounded number of
    unacknowledged publishes in flight so throughput is not one round trip per message."""

    def __init__(
        self,
        name: str,
        transport: Publisher,
        outbox: Outbox,
        logger: Any,
        *,
        backlog_rate: float = 200.0,
        max_inflight: int = 64,
        batch: int = 256,
    ) -> None:
        self.name = name
        self.transport = transport
        self.outbox = outbox
        self.log = logger.bind(destination=name)
        self.backlog_rate = backlog_rate
        self.batch = batch
        self.stats = SenderStats()
        self._wake = asyncio.Event()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.poll = 0.5  # seconds between checks of the link while waiting
        self._replay_until = outbox.last_id_at_open
        self._link_up_at = 0.0
        self._was_connected = False

    def wake(self) -> None:
        self._wake.set()

    def _historical(self, row: OutboxRow) -> bool:
        connected = self.transport.connected
        if connected and not self._was_connected:
            self._link_up_at = time.time()
        self._was_connected = connected
        return row.id <= self._replay_until or row.created < self._link_up_at or not connected

    async def run(self) -> None:
        """While the link is down nothing is handed to the transport: rows wait in the outbox
        only, so a full outbox evicts rows that were truly never delivered, and its drop
        counters are exact. Publishes in flight when the link drops are withdrawn and the
        cursor rewinds to the oldest unacknowledged row."""
        loop = asyncio.get_running_loop()
        cursor: int | None = None
        next_slot = loop.time()
        while True:
            if not self.transport.connected:
                await self._withdraw()
                cursor = None
                await self.transport.wait_connected()
                continue
            self._wake.clear()
            rows = self.outbox.peek(self.name, after_id=cursor, limit=self.batch)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
                continue
            for row in rows:
                historical = self._historical(row)
                if historical:  # pace the backlog so live data and the broker keep up
                    now = loop.time()
                    if next_slot > now:
                        await asyncio.sleep(next_slot - now)
                    next_slot = max(next_slot, now) + 1.0 / self.backlog_rate
                while not await self._acquire():
                    if not self.transport.connected:
                        break
                if not self.transport.connected:
                    break
                task = asyncio.create_task(self._send(row, historical))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                cursor = row.id

    async def _acquire(self) -> bool:
        """asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        that races with completion, which would leave this loop running after shutdown."""
        try:
            async with asyncio.timeout(self.poll):
                await self._inflight.acquire()
        except TimeoutError:
            return False
        return True

    async def _withdraw(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, row: OutboxRow, historical: bool) -> None:
        props = {"user_property": [("historical", "true")]} if historical else None
        inflight = self.outbox.inflight.setdefault(self.name, set())
        inflight.add(row.id)
        try:
            await self.transport.publish(
                row.topic, row.payload, qos=1, retain=row.retain, properties=props
            )
            self.outbox.ack(self.name, [row.id])
            self.stats.sent += 1
            self.stats.replayed += historical
        except EdgeError as exc:  # stopping: the row stays in the outbox for the next start
            self.log.debug("egress_send_abandoned", id=row.id, error=str(exc))
        except asyncio.CancelledError:  # withdrawn (link lost): the row stays in the outbox
            pass
        finally:
            inflight.discard(row.id)
            self._inflight.release()

    async def settle(self) -> None:
        """Wait until nothing is in flight (callers bound it with a timeout)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


@dataclass
class _Batch:
    asset: str | None
    opened: float
    records: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0


class Egress:
    """Batches telemetry per topic and seals + routes every envelope exactly once."""

    def __init__(
        self,
        sealer: Sealer,
        senders: list[DestinationSender],
        logger: Any,
        *,
        max_records: int = 500,
        max_bytes: int = 128_000,
        max_delay: float = 0.05,
    ) -> None:
        self.sealer = sealer
        self.senders = {s.name: s for s in senders}
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_delay = max_delay
        self._batches: dict[str, _Batch] = {}
        self.log = logger
        self.envelopes = 0
        self.records = 0
        self.lost_records = 0
        self._store_failing = False

    def emit(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> None:
        try:
            accepted = self.sealer.seal(topic, asset, stream, records)
        except EdgeError as exc:  # the outbox cannot store: count the loss, keep collecting
            self.lost_records += len(records)
            if not self._store_failing:
                self.log.error("egress_store_failed", error=str(exc), topic=topic)
                self._store_failing = True
            return
        if self._store_failing:
            self.log.info("egress_store_recovered", lost_records=self.lost_records)
            self._store_failing = False
        for dest in accepted:
            self.senders[dest].wake()
        self.envelopes += 1
        self.records += len(records)

    def add(
        self, topic: str, asset: str, records: list[dict[str, Any]], *, complete: bool = False
    ) -> None:
        """Queue telemetry records; flushed by size here, by age in `run`, or at once when
        `complete` (a polling adapter's whole poll: waiting would only add latency, since
        nothing more arrives for this topic before the next poll)."""
        now = asyncio.get_running_loop().time()
        batch = self._batches.get(topic)
        if batch is None:
            batch = self._batches[topic] = _Batch(asset, now)
        for r in records:
            batch.records.append(r)
            batch.size += 64 + len(str(r["value"]))  # an estimate; exactness is not needed
            if len(batch.records) >= self.max_records or batch.size >= self.max_bytes:
                self._flush(topic)
                batch = self._batches[topic] = _Batch(asset, now)
        if not batch.records:
            del self._batches[topic]
        elif complete:
            self._flush(topic)

    def _flush(self, topic: str) -> None:
        batch = self._batches.pop(topic, None)
        if batch and batch.records:
            self.emit(topic, batch.asset, "telemetry", batch.records)

    def flush_all(self) -> None:
        for topic in list(self._batches):
            self._flush(topic)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.max_delay / 2)
            now = loop.time()
            for topic in [t for t, b in self._batches.items() if now - b.opened >= self.max_delay]:
                self._flush(topic)
