"""The `bookings` stream: every state change of a booking, signed and chained per machine on
`{prefix}/{site}/{area}/{line}/{machine}/bookings`, and the machine's capacity offer
republished at once with the slot taken or freed.

Records come from the store's `events` table (edge/bookings/store.py), whoever committed
them: the desk answering a platform (flushed before the reply), `edge-gateway bookings
accept|decline` in another process (noticed within `booking.poll_seconds` through
`PRAGMA data_version`), and this loop's own closings (waiting requests whose hold ended:
`expired`; accepted bookings whose window ended: `completed`, with that window's OEE and
the range of part records made in it, see `WindowEvidence`). A row is marked
published only after the egress took it (the outbox commits it signed), so a crash between
the two republishes it after the restart rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from edge.bookings.store import BookingStore, CloseDue, Evidence, EvidenceFor
from edge.config.loader import LoadedPlant
from edge.egress.stack import RecordSink
from models.booking import part_range
from models.errors import EdgeError
from models.plant import Plant, machine_topic
from models.sample import utc_now

Refresh = Callable[[str], None]
"""asset -> republish its capacity offer now (CapacityPublisher.refresh_now)."""


class BookingPublisher:
    def __init__(
        self,
        store: BookingStore,
        sink: RecordSink,
        config: Callable[[], LoadedPlant],
        *,
        refresh: Refresh,
        evidence: EvidenceFor,
        log: FilteringBoundLogger,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.sink = sink
        self.config = config
        self.refresh = refresh
        self.evidence = evidence
        self.log = log
        self.clock = clock
        self.published = 0
        self._failing = False
        self._handed = 0  # the last seq handed to the egress by this process

    def flush(self) -> int:
        """Hand every unpublished record to the egress, in commit order, the records of one
        machine in one envelope (a decision's `requested` and `accepted` share a signature);
        returns how many records."""
        plant = self.config().plant
        done = 0
        # `after`: the mark is queued on the store writer thread behind the records' outbox
        # appends and commits after them; until then this process skips what it handed over
        # (a restart before the mark commits sends those records once more, never loses one)
        while batch := self.store.unpublished(after=self._handed):
            by_asset: dict[str, list[dict[str, Any]]] = {}
            for _seq, asset, record in batch:  # one envelope per machine and flush
                by_asset.setdefault(asset, []).append(record)
            for asset, records in by_asset.items():
                self.sink.emit(self._topic(plant, asset), asset, "bookings", records)
            self._handed = batch[-1][0]
            self.store.mark_published(seq for seq, _, _ in batch)
            for asset in sorted(by_asset):
                self.refresh(asset)
            done += len(batch)
        self.published += done
        return done

    @staticmethod
    def _topic(plant: Plant, asset: str) -> str:
        try:
            return machine_topic(plant, plant.machine(asset), "bookings")
        except KeyError:  # removed from the YAML since: its records still leave, signed
            g = plant.gateway
            return f"{g.topic_prefix}/{g.site}/_removed/_removed/{asset}/bookings"

    async def close_due(self) -> int:
        """Expire waiting requests and complete ended bookings; returns how many changed.
        The evidence of each ended booking is gathered here, on the loop (the KPI service
        and the part recorder live there); the store's writer thread commits the changes."""
        now = self.clock()
        found: dict[str, Evidence | None] = {}
        for row in self.store.ended(now):
            assert row.start is not None and row.end is not None
            found[row.id] = self.evidence(row.machine, row.start, row.end, now)
        changed = await self.store.settle_due(CloseDue(now, found))
        for row in changed:
            self.log.info("booking_closed", booking=row.id, asset=row.machine, state=row.state)
        return len(changed)

    async def run(self) -> None:
        """Every `poll_seconds`: close what is due, publish what anyone committed. A failing
        store is logged once when it starts failing and once when it recovers."""
        self.flush()  # records committed before a crash or while stopped
        seen = self.store.changed()
        while True:
            await asyncio.sleep(self.config().plant.booking.poll_seconds)
            try:
                version = self.store.changed()
                if await self.close_due() or version != seen:
                    self.flush()
                seen = version
            except EdgeError as exc:
                if not self._failing:
                    self.log.error("bookings_store_failed", error=str(exc))
                    self._failing = True
                continue
            if self._failing:
                self.log.info("bookings_store_recovered")
                self._failing = False


class PartSource(Protocol):
    """What the part recorder (edge/parts/recorder.py) tells about a machine's parts."""

    def keeps_parts(self, asset: str) -> bool: ...

    def settled(self, asset: str, t: datetime, now: datetime) -> bool: ...


class WindowEvidence:
    """The evidence of a booked window for its `completed` record.

    The OEE is the KPI service's `window(asset, "range", start, end)`, the very record an
    `oee` query with `window: range` and the same bounds answers. The parts are the part
    records whose `end` lies in [start, end) (the ones that carry the booking), summed by
    `models.booking.part_range`; a machine without `part_record` has none (null). A part
    waits for its meter reading before it is recorded, so the evidence waits until the
    recorder has seen the machine past the window's end with no part of the window still
    waiting (`PartSource.settled`)."""

    def __init__(
        self,
        window: Callable[..., dict[str, Any] | None],
        parts: Callable[[str, datetime, datetime], list[dict[str, Any]]],
        source: PartSource,
    ) -> None:
        self.window = window
        self.parts = parts
        self.source = source

    def __call__(self, asset: str, start: datetime, end: datetime, now: datetime
                 ) -> Evidence | None:
        keeps = self.source.keeps_parts(asset)
        if keeps and not self.source.settled(asset, end, now):
            return None
        try:  # an unknown machine (removed, never ran) has no figures
            oee = self.window(asset, "range", start=start, end=end, now=now)
        except (KeyError, ValueError):
            oee = None
        return Evidence(oee, part_range(self.parts(asset, start, end)) if keeps else None)
