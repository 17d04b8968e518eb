"""PartRecorder: the stage that turns each machine's reads into `part` records.

    DeviceFleet (batch, new state; link down) --> PartRecorder --> PartTracker (models/parts.py)
        closed parts --> PartStore (tracker state + records, one commit)
                     --> RecordSink (`part` stream: signed, chained, outbox, MQTT)
    Sealer (signed `part` envelope) --> PartStore.attach_envelope (for the `parts` query)

The tracker is pure; this stage gives it the gateway's read times, routes an energy meter's
readings to the machine it is `meter_for` (or a machine's own `energy` points to itself),
and keeps the tracker state durable: saved on every state change and closed part, and on
each tick (a heartbeat, so a crash loses at most one tick of process-signal statistics and
the restart gap starts at the last save).

Bookings (issue 18): a part whose end lies in a platform's accepted booking of the machine
carries that booking (`booking_of`, edge/bookings), and `settled` tells the bookings
publisher when every part of a booked window has been recorded, so its `completed` record
can name them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.config.loader import LoadedPlant
from edge.egress.stack import RecordSink
from edge.parts.store import AttachEnvelope, PartStore, Prune, SavedTracker, SaveTracker
from models.capacity import ideal_cycle_time_for
from models.carbon import CarbonFactor
from models.errors import EdgeError
from models.machine_state import MachineState
from models.parts import ALARM_DETAILS, PartSettings, PartTracker
from models.plant import EnergyRoles, Machine, machine_topic
from models.sample import Quality, Sample, utc_now

BookingOf = Callable[[str, datetime], dict[str, Any] | None]
"""machine, a part's end -> the `booking` of its record (edge.bookings.desk.part_links)."""
SETTLE_LIMIT = 30.0
"""Seconds past a part's meter wait after which a booked window is settled anyway (a
machine whose reads stopped without the link being declared lost)."""


def _number(batch: Sequence[Sample], signal: str | None) -> float | None:
    """The batch's good numeric value of `signal`, if it has one."""
    for s in batch:
        if s.signal == signal and s.quality is not Quality.BAD and isinstance(
                s.value, int | float) and not isinstance(s.value, bool):
            return float(s.value)
    return None


class PartRecorder:
    """One `PartTracker` per machine with a `part_record` block."""

    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        store: PartStore,
        sink: RecordSink,
        log: FilteringBoundLogger,
        *,
        save_every: float = 5.0,
        booking_of: BookingOf | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.log = log
        self.save_every = save_every
        self.booking_of = booking_of
        self.trackers: dict[str, PartTracker] = {}
        self._seen: dict[str, datetime] = {}  # gateway time of each machine's last batch
        self._link_failing = False
        self._failing = False
        self._involved_for: LoadedPlant | None = None
        self._involved_ids: set[str] = set()
        self._saves = store.last_save()  # numbers this process's saves (edge/parts/store.py)
        self._unsaved: dict[str, list[SaveTracker]] = {}  # queued, not committed yet

    # ---- wiring --------------------------------------------------------------------------
    def _machine(self, asset: str) -> Machine | None:
        try:
            return self.config().plant.machine(asset)
        except KeyError:
            return None

    def _settings(self, asset: str) -> PartSettings | None:
        """The tracker settings of `asset` from the current YAML; None without `part_record`."""
        machine = self._machine(asset)
        if machine is None or machine.part_record is None:
            return None
        plant = self.config().plant
        metered = machine.energy is not None or any(
            m.meter_for == asset for m in plant.machines if m.enabled)
        return PartSettings(
            signals=tuple(machine.part_record.signals),
            metered=metered,
            energy_wait=machine.part_record.energy_wait,
            ideal_cycle_time=lambda program: ideal_cycle_time_for(machine, program),
            carbon_factor=CarbonFactor(plant.gateway.carbon, plant.shifts.timezone),
        )

    def reconfigure(self) -> None:
        """After a reload: trackers take the new settings (signals, programs, carbon); a
        machine that lost `part_record` is saved and dropped (its state stays stored)."""
        now = utc_now()
        for asset in list(self.trackers):
            self._publish(asset, now, force_save=True)
            settings = self._settings(asset)
            if settings is None:
                del self.trackers[asset]
            else:
                self.trackers[asset].settings = settings

    def _tracker(self, asset: str) -> PartTracker | None:
        tracker = self.trackers.get(asset)
        if tracker is not None:
            return tracker
        settings = self._settings(asset)
        if settings is None:
            return None
        tracker = self.trackers[asset] = PartTracker(asset, settings)
        queued = self._unsaved.get(asset)
        # a save still queued is newer than the stored one (the machine came back in a
        # reload before it committed): its sequence number must not go back
        saved = (SavedTracker(queued[-1].state, queued[-1].alive) if queued
                 else self.store.load(asset))
        if saved is not None:
            tracker.restore(saved.state, saved.alive)
            self.log.info("part_tracker_restored", asset=asset, next_seq=tracker.next_seq,
                          open_cycle=tracker.open is not None, alive=saved.alive.isoformat())
        return tracker

    def _energy_target(self, asset: str) -> tuple[str, EnergyRoles] | None:
        """(machine whose energy this is, the roles of the points), if `asset` meters."""
        machine = self._machine(asset)
        if machine is None or machine.energy is None:
            return None
        return machine.meter_for or asset, machine.energy

    # ---- fleet callbacks (BatchObserver) -------------------------------------------------
    def _involved(self, asset: str) -> bool:
        """Whether `asset` has a part record or meters one (cached per loaded YAML: every
        batch of every machine comes through here)."""
        loaded = self.config()
        if self._involved_for is not loaded:
            self._involved_for = loaded
            self._involved_ids = {m.id for m in loaded.plant.machines
                                  if m.part_record is not None or m.energy is not None}
        return asset in self._involved_ids

    def on_batch(self, asset: str, batch: Sequence[Sample], state: MachineState | None) -> None:
        if not batch or not self._involved(asset):
            return
        at = max(s.gateway_ts for s in batch)
        self._seen[asset] = max(at, self._seen.get(asset, at))
        touched: dict[str, bool] = {}
        tracker = self._tracker(asset)
        if tracker is not None:
            good = [s for s in batch if s.quality is not Quality.BAD]
            # alarm details before the state (a new alarm's record names it); process
            # signals after it (the read that opens a cycle belongs to it, the read that
            # closes it to what follows)
            for s in good:
                if s.signal in ALARM_DETAILS:
                    tracker.observe_signal(s.signal, s.value, s.gateway_ts)
            if state is not None:
                tracker.observe(state, at)
            for s in good:
                if s.signal not in ALARM_DETAILS:
                    tracker.observe_signal(s.signal, s.value, s.gateway_ts)
            touched[asset] = state is not None
        target = self._energy_target(asset)
        if target is not None:
            meter_of, roles = target
            energy_tracker = self._tracker(meter_of)
            if energy_tracker is not None:
                kwh = _number(batch, roles.energy_kwh)
                watts = _number(batch, roles.power_w)
                if kwh is not None or watts is not None:
                    energy_tracker.observe_meter(at, kwh=kwh, watts=watts)
                touched.setdefault(meter_of, False)
        for name, changed in touched.items():
            self._publish(name, at, force_save=changed)

    def on_unavailable(self, asset: str, at: datetime) -> None:
        tracker = self._tracker(asset)
        if tracker is not None:
            tracker.link_lost(at)
            self._publish(asset, at, force_save=True)

    # ---- the sealer's callback -----------------------------------------------------------
    def on_sealed(self, asset: str | None, records: list[dict[str, Any]],
                  envelope: dict[str, Any]) -> None:
        if asset is None:
            return
        for r in records:
            self.store.submit(AttachEnvelope(asset, int(r["part_seq"]), envelope),
                              partial(self._attached, asset))

    def _attached(self, asset: str, result: int | Exception) -> None:
        if isinstance(result, Exception):
            self.log.error("part_envelope_not_stored", asset=asset, error=str(result))

    # ---- bookings ------------------------------------------------------------------------
    def keeps_parts(self, asset: str) -> bool:
        """Whether `asset` has part records (a `part_record` block)."""
        return self._settings(asset) is not None

    def settled(self, asset: str, t: datetime, now: datetime) -> bool:
        """Whether every part of `asset` that ended before `t` has been recorded: the
        machine was read at or after `t` (or its link is lost: nothing more can close
        before `t`) and no such part still waits for its meter reading. True anyway
        `energy_wait + SETTLE_LIMIT` seconds after `t`."""
        tracker = self.trackers.get(asset)
        if tracker is None:
            return True  # never seen since the start: nothing of it waits
        limit = tracker.settings.energy_wait + SETTLE_LIMIT
        if (now - t).total_seconds() >= limit:
            return True
        if any(p.end is not None and p.end < t for p in tracker.closing):
            return False
        seen = self._seen.get(asset)
        return (seen is not None and seen >= t) or tracker.link_lost_at is not None

    def _link(self, asset: str, records: list[dict[str, Any]]) -> None:
        """Set each record's `booking` (None outside a booked window). A failing bookings
        store leaves it None and is logged once until it recovers."""
        if self.booking_of is None:
            return
        try:
            for r in records:
                r["booking"] = self.booking_of(asset, datetime.fromisoformat(r["end"]))
        except EdgeError as exc:
            if not self._link_failing:
                self.log.error("part_booking_link_failed", asset=asset, error=str(exc))
                self._link_failing = True
            return
        if self._link_failing:
            self.log.info("part_booking_link_recovered")
            self._link_failing = False

    # ---- publishing ----------------------------------------------------------------------
    def _publish(self, asset: str, now: datetime, *, force_save: bool) -> None:
        tracker = self.trackers[asset]
        records = tracker.due(now)
        if not records and not force_save:
            return
        self._link(asset, records)
        self._saves += 1
        save = SaveTracker(asset, tracker.to_dict(), now, tuple(records),
                           tracker.drain_energy(), self._saves)
        self._unsaved.setdefault(asset, []).append(save)
        # queued before the records go to the egress: it commits before their envelope
        self.store.submit(save, partial(self._saved, save))
        machine = self._machine(asset)
        if machine is None:
            return
        topic = machine_topic(self.config().plant, machine, "part")
        for record in records:
            self.sink.emit(topic, asset, "part", [record])

    def _saved(self, save: SaveTracker, result: int | Exception) -> None:
        """A save committed or failed (on the loop). A failed one's energy goes back to
        the tracker for the next save; a failure is logged when it starts and ends."""
        queued = self._unsaved.get(save.asset, [])
        if save in queued:
            queued.remove(save)
        if not queued:
            self._unsaved.pop(save.asset, None)
        if isinstance(result, Exception):
            tracker = self.trackers.get(save.asset)
            if tracker is not None:
                for key, kwh in (save.energy or {}).items():  # kept for the next save
                    tracker.energy[key] = tracker.energy.get(key, 0.0) + kwh
            if not self._failing:
                self.log.error("part_store_save_failed", asset=save.asset, error=str(result))
                self._failing = True
        elif self._failing:
            self.log.info("part_store_save_recovered")
            self._failing = False

    def unsaved(self, asset: str, after: int) -> list[SaveTracker]:
        """Saves of `asset` queued and not seen by a read that includes save number
        `after` (`PartStore.window`): what a window's figures add to what they read."""
        return [s for s in self._unsaved.get(asset, ()) if s.number > after]

    def records(self, asset: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Part records of `asset` that ended in [start, end), oldest first: the committed
        ones and those whose save is still queued (a booking's evidence)."""
        saved = self.store.last_save()
        stored = self.store.records(asset, start, end)
        seen = {int(r["part_seq"]) for r in stored}
        queued = [r for s in self.unsaved(asset, saved) for r in s.records
                  if start <= datetime.fromisoformat(r["end"]) < end
                  and int(r["part_seq"]) not in seen]
        return sorted([*stored, *queued], key=lambda r: int(r["part_seq"]))

    def flush(self, asset: str, now: datetime) -> None:
        """Save one machine's tracker now (before reading its energy from the store)."""
        if asset in self.trackers:
            self._publish(asset, now, force_save=True)

    def tick(self, now: datetime) -> None:
        """Release parts whose meter wait is over; save every tracker (the heartbeat)."""
        for asset in list(self.trackers):
            self._publish(asset, now, force_save=True)

    def prune(self, now: datetime) -> None:
        days = self.config().plant.gateway.oee.window_retention_days
        self.store.submit(Prune(now - timedelta(days=days)), partial(self._pruned))

    def _pruned(self, result: int | Exception) -> None:
        if isinstance(result, Exception):
            self.log.error("part_store_prune_failed", error=str(result))

    async def run(self) -> None:
        """The heartbeat loop (supervised); prunes once an hour."""
        last_prune: datetime | None = None
        while True:
            await asyncio.sleep(self.save_every)
            now = utc_now()
            self.tick(now)
            if last_prune is None or now - last_prune > timedelta(hours=1):
                self.prune(now)
                last_prune = now

    def close(self) -> None:
        """Save every tracker now (a clean stop: the restart gap starts here)."""
        self.tick(utc_now())
