"""Capacity offers: what a machine can do, when it is free, and how well it has run.

This is the record a capacity-sharing platform shows a buyer (stream `capacity`, retained,
and the `capacity` query method). It answers three questions, each from data the gateway
already holds, so no platform has to guess:

* **What can it make?** `Capabilities`, declared by the plant in the YAML (processes, work
  envelope, materials, tolerances, certifications). The gateway cannot measure these; it
  only publishes them, signed, so they cannot be altered on the way.
* **When is it free?** `free_slots`: planned time from the shift calendar (shifts minus
  breaks, holidays off, via `models.shift_calendar.planned_intervals`) minus bookings minus
  the time the current program is still expected to run. Time outside shifts is never
  offered: selling it would mean selling a night crew the plant does not have.
* **Can it be trusted?** Standardized performance (ISO 22400-2 availability, effectiveness,
  quality, OEE over the last 7 and 30 days, computed by the KPI service) and data freshness
  (age of the last sample), so a buyer can tell a live machine from a stale offer.

Pure: no I/O, no clock; the caller passes `now`. Every returned datetime is UTC, so that
subtracting two of them gives real elapsed time (DST nights included).

Record shape (`capacity_record`; timestamps RFC 3339 UTC via `models.sample.format_ts`)::

    {"machine": "m1",
     "capabilities": {...} | None,                # Capabilities as JSON; None: not declared
     "free_slots": [{"start": ts, "end": ts, "hours": h}, ...],
     "free_hours": h,                             # sum of the slots' hours
     "horizon": {"start": ts, "end": ts},         # [now, now + horizon)
     "performance": {"7d":  {"availability": A, "effectiveness": E,
                             "quality": Q, "oee": OEE} | None,    # floats or None each
                     "30d": {...} | None},        # None: no KPI record for that window
     "freshness": {"last_sample": ts | None, "age_s": s | None},
     "ts": ts}                                    # when computed (= now)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from models.machine_state import Availability, Execution, MachineState
from models.plant import (
    Booking,
    Capabilities,
    CapacitySettings,
    Machine,
    ShiftCalendar,
    WorkEnvelope,
)
from models.sample import format_ts
from models.shift_calendar import planned_intervals, subtract_intervals

__all__ = [
    "PERFORMANCE_METRICS",
    "PERFORMANCE_WINDOWS",
    "Booking",
    "Capabilities",
    "CapacitySettings",
    "Interval",
    "WorkEnvelope",
    "capacity_record",
    "expected_program_end",
    "free_slots",
    "ideal_cycle_time_for",
    "parse_bookings",
    "performance_windows",
]

Interval = tuple[datetime, datetime]


PERFORMANCE_WINDOWS: dict[str, timedelta] = {"7d": timedelta(days=7), "30d": timedelta(days=30)}
"""The trailing windows a buyer sees; keys are the record's `performance` keys."""

PERFORMANCE_METRICS: tuple[str, ...] = ("availability", "effectiveness", "quality", "oee")
"""The ISO 22400-2 ratios copied from a KPI record into `performance`."""

# Executions in which a program is loaded and not finished: the machine is not free even
# if it is paused (feed hold, M00/M01, waiting for material), because the job resumes.
_PROGRAM_IN_PROGRESS = frozenset(
    {
        Execution.ACTIVE,
        Execution.INTERRUPTED,
        Execution.FEED_HOLD,
        Execution.PROGRAM_STOPPED,
        Execution.OPTIONAL_STOP,
        Execution.WAIT,
    }
)


_BOOKINGS = TypeAdapter(list[Booking])


def parse_bookings(data: object) -> list[Booking]:
    """Validate a booking list already loaded from YAML or JSON (the caller reads the file).

    Raises pydantic.ValidationError with the index and field of every bad entry.
    """
    return _BOOKINGS.validate_python(data)


def _utc(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


def free_slots(
    calendar: ShiftCalendar,
    bookings: Iterable[Booking | Interval],
    now: datetime,
    horizon: timedelta,
    *,
    busy_until: datetime | None = None,
    min_slot: timedelta,
    planned: Sequence[Interval] | None = None,
) -> list[Interval]:
    """Free planned time in [now, now + horizon), as sorted, disjoint UTC intervals.

    Planned time (shifts minus breaks, holidays off, from the calendar) minus every
    booking minus [now, busy_until) (the running program's expected end, see
    `expected_program_end`). Bookings may overlap each other or reach outside the horizon;
    they are clipped. Slots shorter than `min_slot` are dropped, because nobody can sell a
    12-minute gap between two jobs; a slot of exactly `min_slot` is kept. A slot cut by the
    horizon end is offered only up to it, and is measured against `min_slot` as cut.

    `planned`: `planned_intervals(calendar, a, b)` for some [a, b) covering the horizon,
    when the caller offers many machines of one calendar (computed per machine, it was half
    of a 500-machine capacity round; issue 17).

    Raises ValueError for a naive `now`/`busy_until`/booking tuple, a non-positive
    horizon or a negative `min_slot`.
    """
    now = _utc(now, "now")
    if horizon <= timedelta(0):
        raise ValueError("horizon must be positive")
    if min_slot < timedelta(0):
        raise ValueError("min_slot must not be negative")
    end = now + horizon
    holes: list[Interval] = []
    for b in bookings:
        if isinstance(b, Booking):
            holes.append(b.interval())
        else:
            holes.append((_utc(b[0], "booking start"), _utc(b[1], "booking end")))
    if busy_until is not None:
        holes.append((now, _utc(busy_until, "busy_until")))
    if planned is None:
        planned = planned_intervals(calendar, now, end)
    else:  # the calendar's, over a span that covers this one: the same intervals, clipped
        planned = [(max(a, now), min(b, end)) for a, b in planned if b > now and a < end]
    free = subtract_intervals(list(planned), holes)
    return [(a, b) for a, b in free if b - a >= min_slot]


def ideal_cycle_time_for(machine: Machine, program: str | None) -> float | None:
    """Wall-clock seconds per part: the program's own ideal cycle time when the YAML has one,
    else the machine's (the same rule the OEE engine uses for PRU), else None; scaled to wall
    time for a simulated machine (`Machine.cycle_times`)."""
    return machine.cycle_times.of(program)


def expected_program_end(
    state: MachineState,
    now: datetime,
    ideal_cycle_time: float | None,
    remaining_parts: int | None = None,
) -> datetime | None:
    """When the running job is expected to release the machine, or None if unknown.

    Deliberately simple, and an estimate: no controller reports a program's remaining time,
    so the only figure the gateway has is the ideal cycle time from the YAML.

    * No program in progress (execution ready, stopped, completed, unknown) or the machine
      unavailable: None, nothing to block.
    * A program in progress (active, or paused: feed hold, interrupted, M00/M01, wait) and
      an ideal cycle time known: `now + remaining_parts x ideal_cycle_time` when the caller
      knows how many parts are left (the one being cut included; 0 means done: None), else
      `now + one cycle` (the current part, at most one cycle at ideal rate).
    * No ideal cycle time: None. Guessing would offer or hide time on no evidence.

    Because it assumes the ideal rate and ignores how long a pause lasts, the estimate is
    optimistic: the platform should treat the first free slot as tentative.
    """
    now = _utc(now, "now")
    if remaining_parts is not None and remaining_parts < 0:
        raise ValueError("remaining_parts must not be negative")
    if ideal_cycle_time is None or ideal_cycle_time <= 0:
        return None
    if state.availability is not Availability.AVAILABLE:
        return None
    if state.execution not in _PROGRAM_IN_PROGRESS:
        return None
    parts = 1 if remaining_parts is None else remaining_parts
    if parts == 0:
        return None
    return now + timedelta(seconds=parts * ideal_cycle_time)


def performance_windows(now: datetime) -> dict[str, Interval]:
    """The [start, end) ranges to ask the KPI service for, by `performance` key."""
    now = _utc(now, "now")
    return {key: (now - span, now) for key, span in PERFORMANCE_WINDOWS.items()}


def _metrics(record: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    if record is None:
        return None
    out: dict[str, float | None] = {}
    for k in PERFORMANCE_METRICS:
        v = record.get(k)
        out[k] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
    return out


def aggregate_windows(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """ISO 22400 ratios over several windows (e.g. the closed shifts of 30 days): time
    elements and counts are summed first, then divided, never averaged ratio by ratio, so a
    short shift weighs what it lasted. None when no window had planned time."""
    pbt = apt = effective = 0.0
    pq = gq = 0
    rated = True
    for r in records:
        t, c = r.get("time", {}), r.get("counts", {})
        pbt += float(t.get("pbt") or 0)
        apt += float(t.get("apt") or 0)
        if t.get("effective") is None and (c.get("pq") or 0):
            rated = False
        effective += float(t.get("effective") or 0)
        pq += int(c.get("pq") or 0)
        gq += int(c.get("gq") or 0)
    if pbt <= 0:
        return None
    availability = apt / pbt
    effectiveness = effective / apt if apt > 0 and rated else None
    quality = gq / pq if pq > 0 else None
    oee = (
        availability * effectiveness * quality
        if effectiveness is not None and quality is not None
        else None
    )
    return {
        "availability": availability,
        "effectiveness": effectiveness,
        "quality": quality,
        "oee": oee,
        "pbt": pbt,
        "apt": apt,
        "pq": pq,
        "gq": gq,
    }


def _hours(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 3600.0


def capacity_record(
    machine_id: str,
    capabilities: Capabilities | None,
    slots: Iterable[Interval],
    performance: Mapping[str, Mapping[str, Any] | None],
    *,
    last_sample: datetime | None,
    now: datetime,
    horizon: timedelta,
) -> dict[str, Any]:
    """The `capacity` stream record of one machine (shape in the module docstring).

    `slots` come from `free_slots` with the same `now` and `horizon`; `performance` maps
    "7d"/"30d" to a KPI record (`KpiService.window(asset, "range", ...)`) or None; only the
    ratios are copied, and a missing key is None. `last_sample` should be the gateway
    timestamp of the newest sample (device clocks drift); a sample stamped after `now`
    counts as age 0, not a negative age.
    """
    now = _utc(now, "now")
    slot_list = [(_utc(a, "slot start"), _utc(b, "slot end")) for a, b in slots]
    last = None if last_sample is None else _utc(last_sample, "last_sample")
    return {
        "machine": machine_id,
        "capabilities": None if capabilities is None else capabilities.model_dump(mode="json"),
        "free_slots": [
            {"start": format_ts(a), "end": format_ts(b), "hours": _hours(a, b)}
            for a, b in slot_list
        ],
        "free_hours": sum(_hours(a, b) for a, b in slot_list),
        "horizon": {"start": format_ts(now), "end": format_ts(now + horizon)},
        "performance": {key: _metrics(performance.get(key)) for key in PERFORMANCE_WINDOWS},
        "freshness": {
            "last_sample": None if last is None else format_ts(last),
            "age_s": None if last is None else max(0.0, (now - last).total_seconds()),
        },
        "ts": format_ts(now),
    }
