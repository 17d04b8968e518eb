"""The `bookings` stream: every state change of a booking, signed and chained per machine on
`{prefix}/{site}/{area}/{line}/{machine}/bookings`, and the machine's capacity offer
republished at once with the slot taken or freed.

Records come from the store's `events` table (edge/bookings/store.py), whoever committed
them: the desk answering a platform (flushed before the reply), `edge-gateway bookings
accept|decline` in another process (noticed within `booking.poll_seconds` through
`PRAGMA data_version`), and this loop's own closings (waiting requests that expire,
accepted bookings whose window ended: `completed`, with that window's OEE). A row is marked
published only after the egress took it (the outbox commits it signed), so a crash between
the two republishes it after the restart rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.bookings.store import BookingStore, OeeFor
from edge.config.loader import LoadedPlant
from edge.egress.stack import RecordSink
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
        oee: OeeFor,
        log: FilteringBoundLogger,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.sink = sink
        self.config = config
        self.refresh = refresh
        self.oee = oee
        self.log = log
        self.clock = clock
        self.published = 0
        self._failing = False

    def flush(self) -> int:
        """Hand every unpublished record to the egress, in commit order, the records of one
        machine in one envelope (a decision's `requested` and `accepted` share a signature);
        returns how many records."""
        plant = self.config().plant
        done = 0
        while batch := self.store.unpublished():
            by_asset: dict[str, list[dict[str, Any]]] = {}
            for _seq, asset, record in batch:  # one envelope per machine and flush
                by_asset.setdefault(asset, []).append(record)
            for asset, records in by_asset.items():
                self.sink.emit(self._topic(plant, asset), asset, "bookings", records)
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

    def close_due(self) -> int:
        """Expire waiting requests and complete ended bookings; returns how many changed."""
        rules = self.config().plant.booking
        changed = self.store.close_due(
            self.clock(), expire_after=rules.pending_expire_minutes * 60.0, oee=self.oee
        )
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
                if self.close_due() or version != seen:
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


def window_oee(
    window: Callable[..., dict[str, Any] | None],
) -> OeeFor:
    """The KPI service's `window(asset, "range", start, end)` as the store's OEE source;
    an unknown machine (removed, never ran) has no figures."""

    def oee(asset: str, start: datetime, end: datetime) -> Mapping[str, Any] | None:
        try:
            return window(asset, "range", start=start, end=end)
        except (KeyError, ValueError):
            return None

    return oee
