"""Egress: batch records per topic, seal each batch once, fan out to every destination.

    records --> Batcher (per topic: max records / max delay) --> Sealer (seq, body, bytes)
            --> one DestinationSender per broker (its own queue, connection, policy)

The `Sealer` is the one place a body becomes bytes on the wire; it numbers envelopes per
topic. Signing and the persistent `prev` chain (a later issue) replace `JsonSealer`
without touching batching or sending. Until the SQLite outbox lands, each destination
buffers in a bounded in-memory queue: when it is full the oldest envelope is dropped and
counted (`dropped`), so a dead platform costs bounded memory, never the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.envelope import RETAINED_STREAMS, Stream, envelope_body
from models.sample import utc_now


@dataclass(frozen=True)
class Envelope:
    topic: str
    stream: Stream
    asset: str | None
    payload: bytes
    retain: bool


class Sealer(Protocol):
    def seal(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> Envelope: ...


class JsonSealer:
    """Unsigned v1 bodies with a per-topic sequence (in memory: restarts begin at 1)."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.seq: dict[str, int] = {}

    def seal(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> Envelope:
        seq = self.seq.get(topic, 0) + 1
        self.seq[topic] = seq
        body = envelope_body(
            gateway=self.gateway,
            topic=topic,
            asset=asset,
            stream=stream,
            seq=seq,
            prev=None,
            created=utc_now(),
            records=records,
        )
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return Envelope(topic, stream, asset, payload, retain=stream in RETAINED_STREAMS)


class Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None: ...


@dataclass
class SenderStats:
    queued: int = 0
    sent: int = 0
    dropped: int = 0


class DestinationSender:
    """Drains one destination's queue in order, with a bounded number of unacknowledged
    publishes in flight so throughput does not collapse to one round trip per message."""

    def __init__(
        self,
        name: str,
        transport: Publisher,
        streams: set[str],
        logger: Any,
        *,
        max_queue: int = 10_000,
        max_inflight: int = 64,
    ) -> None:
        self.name = name
        self.transport = transport
        self.streams = streams
        self.log = logger.bind(destination=name)
        self.queue: deque[Envelope] = deque()
        self.max_queue = max_queue
        self.stats = SenderStats()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set whenever a publish completes
        self._inflight = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropping = False

    def offer(self, env: Envelope) -> None:
        if env.stream not in self.streams:
            return
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.stats.dropped += 1
            if not self._dropping:
                self.log.warning("egress_queue_full_dropping_oldest", max_queue=self.max_queue)
                self._dropping = True
        self.queue.append(env)
        self.stats.queued += 1
        self._wake.set()

    async def run(self) -> None:
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            self._dropping = False
            env = self.queue.popleft()
            await self._inflight.acquire()
            task = asyncio.create_task(self._send(env))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, env: Envelope) -> None:
        try:
            await self.transport.publish(env.topic, env.payload, qos=1, retain=env.retain)
            self.stats.sent += 1
        finally:
            self._inflight.release()
            self._idle.set()

    async def drain(self) -> None:
        """Wait until everything queued is acknowledged (callers bound it with a timeout)."""
        while self.queue or self._tasks:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


@dataclass
class _Batch:
    asset: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    opened: float = 0.0


class Egress:
    """Batches telemetry per topic and seals + fans out every envelope exactly once."""

    def __init__(
        self,
        sealer: Sealer,
        senders: list[DestinationSender],
        *,
        max_records: int = 500,
        max_bytes: int = 128_000,
        max_delay: float = 0.25,
    ) -> None:
        self.sealer = sealer
        self.senders = senders
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_delay = max_delay
        self._batches: dict[str, _Batch] = {}
        self.envelopes = 0
        self.records = 0

    def emit(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> None:
        env = self.sealer.seal(topic, asset, stream, records)
        self.envelopes += 1
        self.records += len(records)
        for s in self.senders:
            s.offer(env)

    def add(self, topic: str, asset: str, records: list[dict[str, Any]]) -> None:
        """Queue telemetry records; flushed by size here or by age in `run`."""
        batch = self._batches.get(topic)
        if batch is None:
            batch = self._batches[topic] = _Batch(asset, opened=asyncio.get_running_loop().time())
        for r in records:
            batch.records.append(r)
            batch.size += 64 + len(str(r["value"]))  # cheap estimate; exactness is not needed
            if len(batch.records) >= self.max_records or batch.size >= self.max_bytes:
                self._flush(topic)
                batch = self._batches[topic] = _Batch(
                    asset, opened=asyncio.get_running_loop().time()
                )
        if not batch.records:
            del self._batches[topic]

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
