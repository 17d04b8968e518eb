"""Egress: batch records per topic, sign each batch once, store it, send it per destination.

    records --> batcher (per topic: max records / bytes / delay)
            --> sealer: seq + prev from the per-topic chain, v1 body, JWS (Ed25519)
            --> outbox (SQLite WAL): one row per destination whose policy takes the stream,
                in the same transaction as the chain update
            --> one DestinationSender per broker: publish in id order, delete after PUBACK

Records are signed before they are buffered, and leave the outbox only after the broker
acknowledged them, so a gateway restart or a broker outage loses nothing the outbox cap
did not deliberately drop (and that is counted). Records the outbox cannot store at all
(disk full) are counted in the `LossLedger` and reported to platforms in a signed `gap`
envelope once storage works again (edge/egress/loss.py). A stream no destination takes is
never signed or stored: denied data does not leave the process.

`historical` in the signed body is true when none of the destinations the envelope is
sealed for was connected at sealing time (it is known then that the envelope will arrive
late; edge/egress/sealer.py). Rows written by an earlier process, or sealed before a
destination's sender last saw its link come up, are replayed at `backlog_rate`
envelopes/s with the MQTT 5 user property `historical=true`, an unsigned hint
(edge/egress/sender.py); the signed `created` is the authority on lateness. The contract:
docs/protocol.md, "Store-and-forward and `historical`".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from edge.egress.loss import Gap, LossLedger
from edge.egress.sealer import Sealer, Stored
from models.envelope import Stream
from models.logger import Logger
from models.sample import utc_now


@dataclass
class _Batch:
    asset: str | None
    opened: float
    records: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    polls: int = 0  # complete polls in this batch


class Wakeable(Protocol):
    """A destination's sender as the batcher sees it: told when new rows are stored."""

    name: str

    def wake(self) -> None: ...


class Egress:
    """Batches telemetry per topic and seals + routes every envelope exactly once."""

    def __init__(
        self,
        sealer: Sealer,
        senders: Sequence[Wakeable],
        logger: Logger,
        *,
        max_records: int = 500,
        max_bytes: int = 128_000,
        max_delay: float = 0.05,
        losses: LossLedger | None = None,
        polls_per_envelope: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (seconds, monotonic) dates batches for `max_delay`; tests pass their own."""
        self.sealer = sealer
        self.clock = clock
        self.senders = {s.name: s for s in senders}
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_delay = max_delay
        self.polls_per_envelope = polls_per_envelope
        self._batches: dict[str, _Batch] = {}
        self._open = asyncio.Event()
        """Set when `add` leaves a batch open: `run` ticks only while one is."""
        self.log = logger
        self.losses = losses or LossLedger()
        self.envelopes = 0
        self.records = 0
        self.lost_records = 0
        self._store_failing = False

    def emit(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> None:
        self.sealer.seal(topic, asset, stream, records, self._stored)

    def _stored(self, result: Stored) -> None:
        """An envelope is in the outbox (wake its senders) or could not be stored (count
        the loss, keep collecting); runs once the outbox committed or failed."""
        if result.error is not None:
            self.lost_records += result.records
            self.losses.lost(
                topic=result.topic,
                asset=result.asset,
                stream=result.stream,
                records=result.records,
                destinations=result.dests,
                at=utc_now(),
                reason="disk_full" if "full" in str(result.error) else "storage_error",
            )
            if not self._store_failing:
                self.log.error("egress_store_failed", error=str(result.error),
                               topic=result.topic)
                self._store_failing = True
            return
        self.losses.stored()
        if self._store_failing:
            self.log.info("egress_store_recovered", lost_records=self.lost_records)
            self._store_failing = False
        self._wake(result.accepted)
        self.envelopes += 1
        self.records += result.records
        if self.losses.unreported():
            self._report_gaps()

    def _report_gaps(self) -> None:
        """Storage works again: tell each affected machine's subscribers, signed, what was
        lost (a `gap` envelope); a gap whose record cannot be stored either stays open.
        A gap on its way to the outbox is detached from the ledger (`reporting`), so losses
        meanwhile open a new one instead of going unreported."""
        for gap in self.losses.unreported():
            self.losses.reporting(gap)
            self.sealer.seal_gap(gap, partial(self._gap_stored, gap))

    def _gap_stored(self, gap: Gap, result: Stored) -> None:
        if result.error is not None:
            self.losses.not_reported(gap)
            return
        self.losses.reported(gap)
        self.log.warning("egress_gap_reported", topic=gap.topic, **gap.as_record())
        self._wake(result.accepted)

    def _wake(self, destinations: list[str]) -> None:
        for dest in destinations:
            self.senders[dest].wake()

    def add(
        self, topic: str, asset: str, records: list[dict[str, Any]], *, complete: bool = False
    ) -> None:
        """Queue telemetry records; flushed by size here, by age in `run`, or when
        `complete` (a polling adapter's whole poll: waiting would only add latency, since
        nothing more arrives for this topic before the next poll) once `polls_per_envelope`
        polls are in the batch (more polls per signature: less CPU, more latency)."""
        now = self.clock()
        batch = self._batches.get(topic)
        if batch is None:
            batch = self._batches[topic] = _Batch(asset, now)
        # every record of the gateway passes here: locals, and the size written back once
        max_records, max_bytes = self.max_records, self.max_bytes
        kept, size = batch.records, batch.size
        for r in records:
            kept.append(r)
            # an estimate, exactness is not needed: a number's text is at most 24
            # characters (writing each one out was ~1 % of the gateway's CPU)
            value = r["value"]
            size += 64 + (len(value) if type(value) is str else 24)
            if len(kept) >= max_records or size >= max_bytes:
                batch.size = size
                self._flush(topic)
                batch = self._batches[topic] = _Batch(asset, now)
                kept, size = batch.records, 0
        batch.size = size
        if not batch.records:
            del self._batches[topic]
            return
        if complete:
            batch.polls += 1
            if batch.polls >= self.polls_per_envelope:
                self._flush(topic)
                return
        self._open.set()

    def _flush(self, topic: str) -> None:
        batch = self._batches.pop(topic, None)
        if batch and batch.records:
            self.emit(topic, batch.asset, "telemetry", batch.records)

    def flush_all(self) -> None:
        for topic in list(self._batches):
            self._flush(topic)

    def flush_due(self) -> None:
        """Seal every batch that has waited `max_delay` or longer."""
        now = self.clock()
        for topic in [t for t, b in self._batches.items() if now - b.opened >= self.max_delay]:
            self._flush(topic)

    async def run(self) -> None:
        """Seal by age every `max_delay` / 2 while a batch is open, and sleep otherwise: a
        polling machine's batch is sealed complete in `add`, so ticking 40 times a second
        for nothing was most of this loop's life (issue 17)."""
        while True:
            if not self._batches:
                self._open.clear()
                await self._open.wait()
            await asyncio.sleep(self.max_delay / 2)
            self.flush_due()
