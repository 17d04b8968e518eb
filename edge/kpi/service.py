"""KPI service: an OEE engine per machine that makes parts, persisted; the `oee` records.

The engine (edge/kpi/oee.py) is pure; this is the part with a clock and a disk. The gateway:

* feeds it every state change: `on_state(asset, twin.state, at)`, and `on_unavailable`
  when the device link drops;
* calls `tick_in_steps()` every few seconds (or at `next_due()`; `tick()` is the same in
  one step) and emits what it returns on the retained `oee` stream; the tick saves every
  engine (so a SIGKILL loses at most one tick of *time*, see edge/kpi/store.py), closes
  the shifts that ended since the previous tick, and every `publish_every` seconds adds
  each machine's current-shift record; `on_state` also
  saves that machine's engine whenever its part counter changed, so no part already seen
  is lost;
* answers queries with `window(asset, kind, ...)`;
* calls `close()` on clean shutdown (saves; the store stays open, its owner closes it).

At start each engine is restored from the store and `on_gap(last_alive, now)` is applied:
the time the gateway was down is `unavailable`, never production and never dropped; the
parts the machine's counters made meanwhile are booked in `losses.gap_parts`.

Record shape (one per envelope `records` entry of the `oee` stream; seconds as floats,
timestamps as RFC 3339 UTC via `models.sample.format_ts`)::

    {"window": {"kind": "shift" | "last_hour" | "today" | "range",
                "name": "early" | None,           # the shift's name
                "day": "2024-06-05" | None,       # local day of a shift / of "today"
                "start": ts, "end": ts,           # an open window ends at the tick's time
                "closed": bool},                  # True: final, will not change again
     "availability": A, "effectiveness": E, "quality": Q, "oee": OEE,   # float | None
     "time": {"pbt": s, "apt": s, "effective": s | None,  # effective = sum(PRU x PQ)
              "unplanned_apt": s,                 # running outside planned time
              "downtime": {"alarm": s, "feed_hold": s, "setup": s, "waiting": s,
                           "unavailable": s, "no_data": s}},   # sums to pbt - apt
     "counts": {"pq": n, "gq": n, "scrap": n, "unplanned_pq": n, "unrated_pq": n},
     "losses": {"gap": s,                         # part of downtime.unavailable: gateway down
                "speed_loss": s | None, "scrap_time": s | None,
                "gap_parts": [{"from": ts, "to": ts,   # parts made while the gateway was down
                               "parts": n, "scrap": n, # (not in counts; see docs/oee.md)
                               "counter": [before, after], "bad_counter": [before, after]}]},
     "ts": ts}                                    # when computed

Closed shift windows are recorded in the store when they close and served from there. Open
windows ("last_hour", "today", a range, the running shift) are computed from the engine,
which keeps `raw_retention_days` of records: a range reaching further back is `no_data`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import structlog

from edge.kpi.oee import OeeEngine, OeeResult
from edge.kpi.store import (
    ClosedWindow,
    EngineDelta,
    OeeOp,
    OeeStore,
    OeeStoreResult,
    PruneOp,
    SaveOp,
)
from models.errors import EdgeError
from models.logger import Logger
from models.machine_state import Availability, MachineState
from models.plant import Machine, Plant
from models.sample import format_ts, utc_now
from models.shift_calendar import (
    ShiftInstance,
    next_shift_boundary,
    shift_at,
    shift_instances,
)

__all__ = ["MACHINES_PER_STEP", "KpiService", "WindowKind", "oee_record"]

WindowKind = Literal["shift", "last_hour", "today", "range"]
_PRUNE_EVERY = timedelta(hours=1)
MACHINES_PER_STEP = 8
"""Machines a tick works on per event-loop step (`KpiService.tick_in_steps`)."""


def oee_record(r: OeeResult, kind: WindowKind, *, closed: bool, at: datetime,
               name: str | None = None, day: date | None = None) -> dict[str, Any]:
    """The `oee` stream record of one window (shape in the module docstring)."""
    return {
        "window": {"kind": kind, "name": name, "day": day.isoformat() if day else None,
                   "start": format_ts(r.start), "end": format_ts(r.end), "closed": closed},
        "availability": r.availability,
        "effectiveness": r.effectiveness,
        "quality": r.quality,
        "oee": r.oee,
        "time": {"pbt": r.pbt, "apt": r.apt, "effective": r.effective_time,
                 "unplanned_apt": r.unplanned_apt, "downtime": dict(r.losses.downtime)},
        "counts": {"pq": r.pq, "gq": r.gq, "scrap": r.scrap, "unplanned_pq": r.unplanned_pq,
                   "unrated_pq": r.unrated_pq},
        "losses": {"gap": r.losses.gap, "speed_loss": r.losses.speed_loss,
                   "scrap_time": r.losses.scrap_time,
                   "gap_parts": [g.as_record() for g in r.losses.gap_parts]},
        "ts": format_ts(at),
    }


def producing(plant: Plant) -> list[Machine]:
    """The enabled machines that make parts, so have an OEE. An energy meter (`meter_for`)
    measures another machine's supply: with no execution state nor part counter, an engine
    would rate it 0 % available all shift (`no_data` downtime), a figure that means nothing
    and would drag line and plant averages down; its energy counts for the machine it
    meters (edge/parts/)."""
    return [m for m in plant.machines if m.enabled and m.meter_for is None]


class OeeWrites(Protocol):
    """Where the service's saves and prunes go: the `OeeStore` itself (applied at once) or
    a `StoreWriter` (edge/storage/writer.py), which answers on the event loop once the
    transaction holding them committed. The gateway's writer is on the thread that also
    commits the outbox, in queue order, so a part count's save (queued by `on_state`
    before the state envelope showing it is sealed) commits before that envelope's
    append."""

    def submit(self, op: OeeOp, done: Callable[[OeeStoreResult | Exception], None]
               ) -> None: ...


class KpiService:
    """OEE of every enabled machine of `plant` that makes parts (not an energy meter:
    `producing`), persisted in `store`; see the module doc.

    `clock` is read only at start (to apply the downtime gap) and when `tick`, `window`
    or `close` are not given a time, so tests run on an injected clock without sleeping.
    `writes` takes the saves and prunes (default: `store`, at once); with the gateway's
    writer thread a save's outcome arrives later, so an engine's export cursor advances
    only once its save committed, and shifts a tick closed are returned by a later tick
    (`next_due` says when: at once).
    """

    def __init__(self, plant: Plant, store: OeeStore,
                 clock: Callable[[], datetime] = utc_now, *, publish_every: float = 60.0,
                 logger: Logger | None = None, writes: OeeWrites | None = None) -> None:
        if publish_every <= 0:
            raise ValueError("publish_every must be positive")
        self.plant = plant
        self.store = store
        self.writes: OeeWrites = writes or store
        self._closed_ready: list[ClosedWindow] = []  # closed by a save, still to publish
        self._closing_saves = 0  # saves holding closed windows, not answered yet
        self.publish_every = timedelta(seconds=publish_every)
        self._clock = clock
        self._log: Logger = logger or structlog.get_logger().bind(component="kpi")
        self._engines: dict[str, OeeEngine] = {}
        self._cursors: dict[str, int | None] = {}
        self._refused: set[str] = set()
        self._store_failing = False
        self._saved_counts: dict[str, tuple[int, int]] = {}
        now = clock()
        # Shifts that ended while the gateway was down are closed by the first tick.
        self._last_tick = store.last_tick() or now
        self._next_publish: datetime | None = None  # None: the first tick publishes
        self._next_prune = now
        self._forget_meters(plant)
        for m in producing(plant):
            self._restore(m, now)

    # -- engines --------------------------------------------------------------------------

    def _forget_meters(self, plant: Plant) -> None:
        """Drop what gateways before `producing` left out meters stored for them (an engine
        rating them 0 % available, closed shift windows): nothing may serve a meter's OEE,
        and a row that stays is one a later change could serve again. Logged once, with
        the count: the next start finds none."""
        meters = [m.id for m in plant.machines if m.meter_for is not None]
        try:
            gone = self.store.forget(meters)
        except EdgeError as exc:
            self._log.error("oee_meter_rows_drop_failed", machines=meters, error=str(exc))
            return
        if any(gone.values()):
            self._log.info("oee_meter_rows_dropped", machines=meters, rows=sum(gone.values()),
                           **gone)

    def _restore(self, m: Machine, now: datetime) -> None:
        """The machine's engine from the store, with the time since its last save as a gap."""
        # wall-clock seconds (`Machine.cycle_times`): what the engine's APT is measured in
        cal, ct = self.plant.shifts, m.cycle_times
        ict, prog = ct.machine, dict(ct.programs)
        try:
            saved = self.store.load(m.id)
            engine = None if saved is None else OeeEngine.from_state_dict(saved.state, cal, ict,
                                                                          prog)
        except (EdgeError, ValueError, KeyError, TypeError, IndexError) as exc:
            self._log.error("oee_state_unreadable_starting_fresh", asset=m.id, error=str(exc))
            saved = engine = None
        if saved is None or engine is None:
            self._engines[m.id], self._cursors[m.id] = OeeEngine(m.id, cal, ict, prog), None
            return
        if now > saved.alive:
            engine.on_gap(saved.alive, now)
            self._log.info("oee_restored_with_gap", asset=m.id, last_alive=format_ts(saved.alive),
                           gap_s=(now - saved.alive).total_seconds())
        self._engines[m.id], self._cursors[m.id] = engine, saved.cursor

    def reconfigure(self, plant: Plant) -> None:
        """After a YAML reload: new calendar and cycle times (they also re-rate stored
        history), publish interval and retention, machines added (restored) or removed
        (saved, then dropped)."""
        self.close()
        self.plant = plant
        oee = plant.gateway.oee  # `gateway.oee` applies without a restart
        self.publish_every = timedelta(seconds=oee.publish_every)
        self.store.raw_retention = timedelta(days=oee.raw_retention_days)
        self.store.window_retention = timedelta(days=oee.window_retention_days)
        wanted = {m.id: m for m in producing(plant)}
        for asset in [a for a in self._engines if a not in wanted]:
            del self._engines[asset], self._cursors[asset]
        for asset, m in wanted.items():
            eng = self._engines.get(asset)
            if eng is None:
                self._restore(m, self._clock())
            else:
                ct = m.cycle_times
                eng.calendar, eng.ideal_cycle_time = plant.shifts, ct.machine
                eng.program_cycle_times = dict(ct.programs)

    @property
    def assets(self) -> list[str]:
        return list(self._engines)

    # -- inputs ---------------------------------------------------------------------------

    def on_state(self, asset: str, state: MachineState, at: datetime) -> None:
        """A machine state from `at` on (call on every change of the twin's state)."""
        eng = self._engines.get(asset)
        if eng is None:
            return  # not (or no longer) configured: a reload race, nothing to account
        try:
            eng.on_state(at, state.execution, state.availability is Availability.AVAILABLE,
                         state.program, bool(state.alarms) or state.emergency_stop,
                         state.controller_mode)
            if state.part_count is not None:
                counts = (state.part_count, state.bad_part_count or 0)
                eng.on_counts(at, *counts)
                if self._saved_counts.get(asset) != counts:
                    # Saved at once, not at the next tick: a SIGKILL must not lose a part
                    # already seen. Parts are seconds apart at the fastest, one small
                    # transaction each (edge/kpi/store.py saves only what is new), and of
                    # this machine only: saving every engine on any machine's part was
                    # a fifth of the gateway's CPU at 50 machines (bench, issue 17).
                    self._saved_counts[asset] = counts
                    self._save(at, [(asset, eng)], None)
        except ValueError as exc:  # naive timestamp, negative counter: refuse, keep running
            if asset not in self._refused:
                self._refused.add(asset)
                self._log.warning("oee_event_refused", asset=asset, error=str(exc))

    def on_unavailable(self, asset: str, at: datetime) -> None:
        """The device link is lost: unavailable from `at` until the next state."""
        eng = self._engines.get(asset)
        if eng is not None:
            eng.on_state(at, None, False, None)

    # -- the periodic work ----------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Save, close ended shifts, publish when due; returns (asset, record) to emit.

        Closed shift records come first, then (every `publish_every`) the running shift's,
        so the retained message is the live one. A shift closed here was stored in the
        same transaction as the tick's time, so it is returned exactly once, also across a
        restart. If the store fails, records are still returned (and the tick's time kept
        in memory); after a restart in that state a shift may be published twice.

        All in one step (one save of every engine): for tests and benches; the gateway
        uses `tick_in_steps`.
        """
        out: list[tuple[str, dict[str, Any]]] = []
        for _ in self._tick(now or self._clock(), out, per_step=None):
            pass
        return out

    async def tick_in_steps(self, now: datetime | None = None
                            ) -> list[tuple[str, dict[str, Any]]]:
        """`tick`, letting other tasks run every `MACHINES_PER_STEP` machines: at 500
        machines the tick in one step held every device's poll 60-130 ms (issue 17).

        What it keeps: every machine's closed shifts are those between the same two tick
        times (computed once, before the first step); each step's engines are exported and
        their save queued in that same step, so a part-count save `on_state` queues in
        between is ordered with them in the writer's FIFO (the later export always queued
        later); the closed windows and the tick's time are stored by the last step's save,
        in one transaction; a machine a reload removed meanwhile is skipped. One tick at a
        time (the `oee` publisher's loop)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for _ in self._tick(now or self._clock(), out, per_step=MACHINES_PER_STEP):
            await asyncio.sleep(0)
        return out

    def _tick(self, now: datetime, out: list[tuple[str, dict[str, Any]]],
              per_step: int | None) -> Iterator[None]:
        """The tick's work, pausing (a `yield`) between groups of `per_step` machines
        (None: never); fills `out`."""
        ended = self._ended(now)
        windows: list[ClosedWindow] = []
        groups = self._groups(per_step)
        for n, group in enumerate(groups):
            engines = self._still(group)
            for _, eng in engines:
                eng.advance(now)
            windows += self._closing(engines, ended, now)
            if n < len(groups) - 1:
                self._save(now, engines, None)
                yield
            else:  # the closed windows and the tick's time with the last engines
                self._save(now, engines, windows)
        ready, self._closed_ready = self._closed_ready, []
        out += [(w.asset, w.record) for w in ready]
        self._last_tick = max(self._last_tick, now)
        due = self._next_publish
        if due is None or now >= due or due - now > self.publish_every:  # (clock set back)
            # A fixed cadence (no drift); restarted after a pause or a clock set back.
            every = self.publish_every
            nxt = (now if due is None or due - now > every else due) + every
            self._next_publish = nxt if nxt > now else now + every
            for n, group in enumerate(self._groups(per_step)):
                if n:
                    yield
                for asset, _ in self._still(group):
                    rec = self.window(asset, "shift", now=now)
                    if rec is not None:
                        out.append((asset, rec))
        if now >= self._next_prune:
            self._next_prune = now + _PRUNE_EVERY
            for group in self._groups(per_step):
                yield
                for _, eng in self._still(group):
                    eng.prune(now - self.store.raw_retention)
            self.writes.submit(PruneOp(now), self._pruned)

    def _groups(self, per_step: int | None) -> list[list[str]]:
        """The machines now, in groups of `per_step` (at least one group, maybe empty)."""
        assets = list(self._engines)
        step = per_step or max(len(assets), 1)
        return [assets[i:i + step] for i in range(0, len(assets), step)] or [[]]

    def _still(self, assets: list[str]) -> list[tuple[str, OeeEngine]]:
        """Those of `assets` still configured (a reload between two steps removes some)."""
        return [(a, self._engines[a]) for a in assets if a in self._engines]

    def next_due(self, now: datetime | None = None) -> datetime:
        """When `tick` next has something to publish (periodic record or a shift end), so
        the gateway can sleep `min(tick interval, next_due - now)`."""
        now = now or self._clock()
        if self._closed_ready or self._closing_saves:  # closed shifts to hand out
            return now
        due = self._next_publish or now
        boundary = next_shift_boundary(self.plant.shifts, self._last_tick)
        return due if boundary is None else min(due, boundary)

    def _ended(self, now: datetime) -> list[ShiftInstance]:
        """The shifts that ended in (last tick, now]: closed for every machine."""
        since = max(self._last_tick, now - self.store.window_retention)
        if now <= since:
            return []
        return [i for i in shift_instances(self.plant.shifts, since, now) if since < i.end <= now]

    @staticmethod
    def _closing(engines: list[tuple[str, OeeEngine]], ended: list[ShiftInstance],
                 now: datetime) -> list[ClosedWindow]:
        """The records of the `ended` shifts of these machines."""
        return [
            ClosedWindow(asset, f"shift:{inst.name}", inst.start, inst.end,
                         oee_record(eng.window(inst.start, inst.end, now=now), "shift",
                                    closed=True, at=now, name=inst.name, day=inst.day))
            for inst in ended
            for asset, eng in engines
        ]

    def _save(self, now: datetime, engines: list[tuple[str, OeeEngine]],
              closed: list[ClosedWindow] | None) -> None:
        """Save these engines (and, from `tick`, the closed windows and the tick's time).

        The windows to publish (the new ones, or all of them if the store failed) join
        `_closed_ready` once the save is answered. Each delta is exported from the cursor
        of the last committed save, so saves queued back to back overlap harmlessly."""
        deltas, cursors = [], {}
        for asset, eng in engines:
            state, cursor = eng.export_since(self._cursors[asset])
            deltas.append(EngineDelta(asset, self._cursors[asset], cursor, state, now))
            cursors[asset] = cursor
        windows = tuple(closed or ())
        if windows:
            self._closing_saves += 1
        op = SaveOp(tuple(deltas), windows, None if closed is None else now)
        self.writes.submit(op, partial(self._saved, op, cursors))

    def _saved(self, op: SaveOp, cursors: dict[str, int | None],
               result: OeeStoreResult | Exception) -> None:
        if op.windows:
            self._closing_saves -= 1
        if isinstance(result, Exception):
            if not self._store_failing:
                self._store_failing = True
                self._log.error("oee_store_save_failed", error=str(result),
                                consequence="retried each tick; a crash now loses OEE state "
                                "back to the last successful save")
            self._closed_ready += op.windows
            return
        if self._store_failing:
            self._store_failing = False
            self._log.info("oee_store_save_recovered")
        for asset, cursor in cursors.items():  # answers come in queue order: never back
            if asset in self._cursors:
                self._cursors[asset] = cursor
        if isinstance(result, list):
            self._closed_ready += result

    def _pruned(self, result: OeeStoreResult | Exception) -> None:
        if isinstance(result, Exception):
            self._log.error("oee_store_prune_failed", error=str(result))

    def close(self, now: datetime | None = None) -> None:
        """Save every engine as of `now` (clean shutdown); the store stays open.

        The tick's time is not advanced, so a shift that ended since the last tick is
        still closed (and published) by the first tick after the restart.
        """
        now = now or self._clock()
        for eng in self._engines.values():
            eng.advance(now)
        self._save(now, list(self._engines.items()), None)

    # -- queries --------------------------------------------------------------------------

    def window(self, asset: str, kind: WindowKind, start: datetime | None = None,
               end: datetime | None = None, hours: float | None = None, *,
               now: datetime | None = None) -> dict[str, Any] | None:
        """One window's record; None when `kind="shift"` finds no shift.

        * "shift": the shift running at `start` (default now); a shift that has ended is
          served from the store as it was published, else computed (closed if over).
        * "last_hour": the last `hours` (default 1) up to now.
        * "today": local midnight (the calendar's time zone) up to now.
        * "range": [start, end); `closed` once `end` is past.

        Raises KeyError for an unknown asset, ValueError for a bad kind or range.
        """
        eng = self._engines[asset]
        now = now or self._clock()
        if kind == "shift":
            inst = shift_at(self.plant.shifts, start or now)
            if inst is None:
                return None
            if inst.end <= now:
                try:
                    stored = self.store.closed_window(asset, f"shift:{inst.name}", inst.start)
                except EdgeError as exc:
                    self._log.warning("oee_store_read_failed", error=str(exc))
                    stored = None
                if stored is not None:
                    return stored
            closed = inst.end <= now
            r = eng.window(inst.start, inst.end if closed else now, now=now)
            return oee_record(r, "shift", closed=closed, at=now, name=inst.name, day=inst.day)
        if kind == "last_hour":
            h = 1.0 if hours is None else hours
            if h <= 0:
                raise ValueError("hours must be positive")
            return oee_record(eng.last(now, timedelta(hours=h)), kind, closed=False, at=now)
        if kind == "today":
            day = now.astimezone(ZoneInfo(self.plant.shifts.timezone)).date()
            return oee_record(eng.today(now), kind, closed=False, at=now, day=day)
        if kind == "range":
            if start is None or end is None:
                raise ValueError("a range needs start and end")
            return oee_record(eng.window(start, end, now=now), kind, closed=end <= now, at=now)
        raise ValueError(f"unknown window kind {kind!r}")

    def current_shift_result(self, asset: str, now: datetime | None = None) -> OeeResult | None:
        """The running shift's figures as an OeeResult (what the AAS KPI submodel shows)."""
        now = now or self._clock()
        inst = shift_at(self.plant.shifts, now)
        eng = self._engines.get(asset)
        if inst is None or eng is None:
            return None
        return eng.window(inst.start, now, now=now)

    def current_shift_segments(
        self, asset: str, now: datetime | None = None
    ) -> list[tuple[datetime, datetime, str]]:
        """The running shift's state timeline so far: (start, end, loss class) stretches."""
        now = now or self._clock()
        inst = shift_at(self.plant.shifts, now)
        eng = self._engines.get(asset)
        if inst is None or eng is None:
            return []
        return eng.segments(inst.start, now)

    def closed_shifts(self, asset: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Published records of the asset's shifts starting in [start, end), from the store."""
        return self.store.closed_windows(asset, start, end)
