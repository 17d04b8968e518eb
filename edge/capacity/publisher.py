"""Capacity offers: what a platform shows a buyer, built per machine from the shift
calendar, bookings, the running program, closed OEE shifts and data freshness, and
published retained on the `capacity` stream on change and every `refresh_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.capacity.bookings import BookingsFiles
from edge.config.loader import LoadedPlant
from edge.devices.fleet import FleetView
from edge.egress.stack import RecordSink
from edge.kpi.service import KpiService
from models.capacity import (
    Interval,
    aggregate_windows,
    capacity_record,
    expected_program_end,
    free_slots,
    ideal_cycle_time_for,
    performance_windows,
)
from models.plant import ShiftCalendar, machine_topic
from models.sample import utc_now
from models.shift_calendar import planned_intervals


def capacity_digest(record: dict[str, Any]) -> str:
    """What counts as a change of an offer: capabilities, performance, whether data flows,
    and free slots at 15-minute resolution (the first slot starts `now`, which moves)."""

    def q(ts: str) -> str:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return t.replace(minute=t.minute // 15 * 15, second=0, microsecond=0).isoformat()

    return json.dumps(
        {
            "capabilities": record.get("capabilities"),
            "performance": record.get("performance"),
            "fresh": record["freshness"]["last_sample"] is not None,
            "slots": [(q(s["start"]), q(s["end"])) for s in record.get("free_slots", [])],
        },
        sort_keys=True,
        default=str,
    )


Held = Callable[[str, datetime], list[Interval]]
"""asset, now -> time taken besides the YAML's and the files' bookings (platform bookings
accepted in the bookings store, maintenance, blackouts)."""
ProgramEnergyView = Callable[[str, int], dict[str, dict[str, Any]] | None]
"""(machine, days) -> per program: good parts, kWh and CO2e per good part; None when the
machine has no meter (edge/parts/energy.py `EnergyWindows.by_program`)."""


class CapacityRecords:
    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        fleet: FleetView,
        kpi: KpiService,
        bookings: BookingsFiles,
        *,
        held: Held | None = None,
        energy: ProgramEnergyView | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`clock`: the time an offer is computed at (injectable: the conformance vectors'
        `capacity` reply is the same every run)."""
        self.clock = clock
        self.config = config
        self.fleet = fleet
        self.kpi = kpi
        self.bookings = bookings
        self.held = held
        self.energy = energy
        self._planned: tuple[ShiftCalendar, datetime, datetime, list[Interval]] | None = None

    def planned(self, calendar: ShiftCalendar, now: datetime, horizon: timedelta
                ) -> list[Interval]:
        """The calendar's planned time over a span covering [now, now + horizon): one
        computation serves every machine of a round (and the rounds of `PLANNED_REUSE`);
        a reload brings a new calendar object, hence a new computation."""
        kept = self._planned
        if kept is None or kept[0] is not calendar or now < kept[1] or now + horizon > kept[2]:
            end = now + horizon + PLANNED_REUSE
            kept = self._planned = (calendar, now, end, planned_intervals(calendar, now, end))
        return kept[3]

    def busy_until(self, asset: str, now: datetime) -> datetime | None:
        """When the running job is expected to end (None: nothing running, or unknown)."""
        d = self.fleet.device(asset)
        state = d.twin.state
        return expected_program_end(state, now, ideal_cycle_time_for(d.machine, state.program))

    def record(self, asset: str) -> dict[str, Any]:
        d = self.fleet.device(asset)
        plant = self.config().plant
        m, settings, now = d.machine, plant.gateway.capacity, self.clock()
        busy_until = self.busy_until(asset, now)
        held = self.held(asset, now) if self.held is not None else []
        slots = free_slots(
            plant.shifts,
            [*m.bookings, *self.bookings.bookings(m), *held],
            now,
            settings.horizon,
            busy_until=busy_until,
            min_slot=settings.min_slot,
            planned=self.planned(plant.shifts, now, settings.horizon),
        )
        # from the closed shift windows in the store: cheap for 30 days, and the same figures
        # a platform received on the `oee` stream
        performance: dict[str, dict[str, Any] | None] = {
            name: aggregate_windows(self.kpi.closed_shifts(asset, start, end))
            for name, (start, end) in performance_windows(now).items()
        }
        record = capacity_record(
            asset,
            m.capabilities,
            slots,
            performance,
            last_sample=d.twin.stats.last_sample,
            now=now,
            horizon=settings.horizon,
        )
        if self.energy is not None and (week := self.energy(asset, 7)) is not None:
            # so a buyer can choose the greener offer: measured, per good part, per program
            record["energy_per_part"] = {"7d": week, "30d": self.energy(asset, 30)}
        return record


PLANNED_REUSE = timedelta(minutes=10)
"""How long one computation of the plant's planned time serves the capacity rounds."""
MACHINES_PER_STEP = 8
"""Offers computed per event-loop step of a round (~0.5 ms each at 500 machines)."""


class CapacityPublisher:
    def __init__(
        self,
        records: CapacityRecords,
        fleet: FleetView,
        sink: RecordSink,
        config: Callable[[], LoadedPlant],
        log: FilteringBoundLogger,
    ) -> None:
        self.records = records
        self.fleet = fleet
        self.sink = sink
        self.config = config
        self.log = log
        self._wake = asyncio.Event()
        self._forced: set[str] = set()

    def refresh_now(self, asset: str) -> None:
        """Republish `asset`'s offer at once, changed or not (a booking took or freed a
        slot: the platform must not see the old offer for up to `refresh_seconds`)."""
        self._forced.add(asset)
        self._wake.set()

    async def run(self) -> None:
        """Every machine every min(5 s, refresh_seconds), published when changed or due;
        in between, only the machines `refresh_now` names (a burst of bookings must not
        recompute the whole plant's offers per booking)."""
        last: dict[str, tuple[str, float]] = {}
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            every = self.config().plant.gateway.capacity.refresh_seconds
            forced, self._forced = self._forced, set()
            self._wake.clear()
            full = loop.time() >= next_round
            if full:
                next_round = loop.time() + min(5.0, every)
            for n, asset in enumerate(
                self.fleet.assets() if full else [a for a in self.fleet.assets() if a in forced]
            ):
                if n % MACHINES_PER_STEP == MACHINES_PER_STEP - 1:
                    # a round is O(machines): ~0.3 s in one step at 500 machines held every
                    # device's poll and seal that long, every 5 s (issue 17)
                    await asyncio.sleep(0)
                try:
                    machine = self.fleet.device(asset).machine
                except KeyError:  # stopped by a reload while the round let others run
                    continue
                if machine.meter_for is not None:
                    continue  # an energy meter makes no parts: nothing to offer or book
                try:
                    record = self.records.record(asset)
                except Exception:  # a bug must not end the loop for every machine
                    self.log.exception("capacity_failed", asset=asset)
                    continue
                digest = capacity_digest(record)
                prev = last.get(asset)
                stale = prev is None or prev[0] != digest or loop.time() - prev[1] >= every
                if stale or asset in forced:
                    last[asset] = (digest, loop.time())
                    topic = machine_topic(self.config().plant, machine, "capacity")
                    self.sink.emit(topic, asset, "capacity", [record])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))
