"""Planned busy time from the plant's shift calendar (ISO 22400-2 PBT).

PBT is the denominator of availability, so it has to be right on every night of the year:

* A shift belongs to the local day it starts on, so a 22:00-06:00 shift that starts on a
  holiday is off entirely, and one that starts the evening before a holiday runs.
* Wall-clock times are turned into instants with `zoneinfo` and all arithmetic is done in
  UTC: a 22:00-06:00 shift on the spring-forward night in Europe/Berlin is 7 real hours and
  on the fall-back night 9. A wall time that does not exist (02:30 on the spring-forward
  night) or happens twice (02:30 on the fall-back night) is resolved with `fold=0`, the
  PEP 495 default: the UTC offset in force before the transition.
* `end == start` means a 24-hour shift (local midnight to midnight is 23 or 25 h on DST days).
* Breaks are planned downtime: they are cut out of the shift they overlap, wherever they
  fall (a 02:00 break belongs to the 22:00-06:00 shift of the previous evening).
* Overlapping shifts are merged, so planned time is never counted twice.
* A calendar without shifts means the plant runs 24/7: every local day is one 24-hour shift
  named `always`, except holidays, which still stop the plant.

Every datetime argument must be timezone-aware; every returned datetime is in UTC (so that
subtracting two of them gives real elapsed time, which same-zone aware arithmetic in Python
does not). Pure: no I/O, the caller passes the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.plant import ALL_DAYS, Shift, ShiftCalendar

Interval = tuple[datetime, datetime]

ALWAYS = Shift(name="always", start=time(0), end=time(0), days=list(ALL_DAYS))
"""The implicit shift of a calendar that lists none: the whole day, every day."""

_HORIZON_DAYS = 400  # how far `next_shift_boundary` looks ahead (a year of holidays and more)


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One occurrence of a shift: `day` is the local date it starts on; times are UTC."""

    name: str
    day: date
    start: datetime
    end: datetime
    breaks: tuple[Interval, ...] = ()

    def planned(self) -> list[Interval]:
        """The shift minus its breaks, sorted."""
        return subtract_intervals([(self.start, self.end)], list(self.breaks))


def _aware(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


def _instant(d: date, t: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, t.replace(tzinfo=None), tzinfo=tz).astimezone(UTC)


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort and join overlapping or touching intervals; drop empty ones."""
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract_intervals(base: list[Interval], holes: list[Interval]) -> list[Interval]:
    """`base` minus `holes`; both are merged first, the result is sorted and disjoint."""
    out: list[Interval] = []
    holes = merge_intervals(holes)
    for start, b in merge_intervals(base):
        a = start
        for ha, hb in holes:
            if hb <= a or ha >= b:
                continue
            if ha > a:
                out.append((a, ha))
            a = hb
        if b > a:
            out.append((a, b))
    return out


def _instance(shift: Shift, day: date, tz: ZoneInfo) -> ShiftInstance | None:
    start = _instant(day, shift.start, tz)
    end = _instant(day if shift.end > shift.start else day + timedelta(days=1), shift.end, tz)
    if end <= start:  # e.g. 02:00-03:00 on the spring-forward night: never happens
        return None
    breaks: list[Interval] = []
    for b in shift.breaks:
        if b.end == b.start:  # an empty break (a 24 h one would cancel the shift)
            continue
        # Try the break on the day before, of and after the shift start; keep what overlaps.
        for offset in (-1, 0, 1):
            bday = day + timedelta(days=offset)
            bend_day = bday if b.end > b.start else bday + timedelta(days=1)
            bs, be = _instant(bday, b.start, tz), _instant(bend_day, b.end, tz)
            bs, be = max(bs, start), min(be, end)
            if be > bs:
                breaks.append((bs, be))
    return ShiftInstance(shift.name, day, start, end, tuple(merge_intervals(breaks)))


def _instances(cal: ShiftCalendar, first: date, last: date) -> Iterator[ShiftInstance]:
    """Shift occurrences starting on local days first..last (inclusive), holidays skipped."""
    tz = ZoneInfo(cal.timezone)
    shifts = cal.shifts or [ALWAYS]
    holidays = set(cal.holidays)
    day = first
    while day <= last:
        if day not in holidays:
            weekday = ALL_DAYS[day.weekday()]
            for shift in shifts:
                if weekday in shift.days:
                    inst = _instance(shift, day, tz)
                    if inst is not None:
                        yield inst
        day += timedelta(days=1)


def _local_day(cal: ShiftCalendar, t: datetime) -> date:
    return t.astimezone(ZoneInfo(cal.timezone)).date()


def shift_instances(cal: ShiftCalendar, start: datetime, end: datetime) -> list[ShiftInstance]:
    """Shift occurrences overlapping [start, end), sorted by start (unclipped)."""
    start, end = _aware(start, "start"), _aware(end, "end")
    if end <= start:
        return []
    # A shift lasts at most 25 h, so one started the local day before may still run.
    first = _local_day(cal, start) - timedelta(days=1)
    found = [
        i for i in _instances(cal, first, _local_day(cal, end)) if i.end > start and i.start < end
    ]
    return sorted(found, key=lambda i: (i.start, i.name))


def planned_intervals(cal: ShiftCalendar, start: datetime, end: datetime) -> list[Interval]:
    """Planned busy time in [start, end): shifts minus breaks, holidays off.

    Sorted, disjoint, non-touching intervals in UTC.
    """
    start, end = _aware(start, "start"), _aware(end, "end")
    busy: list[Interval] = []
    for inst in shift_instances(cal, start, end):
        busy.extend((max(a, start), min(b, end)) for a, b in inst.planned())
    return merge_intervals(busy)


def planned_busy_seconds(cal: ShiftCalendar, start: datetime, end: datetime) -> float:
    """PBT of [start, end) in seconds."""
    return sum((b - a).total_seconds() for a, b in planned_intervals(cal, start, end))


def shift_at(cal: ShiftCalendar, t: datetime) -> ShiftInstance | None:
    """The shift running at `t` (breaks included), or None between shifts and on holidays.

    If shifts overlap, the one that started last wins: the incoming crew owns the handover.
    """
    t = _aware(t, "t")
    day = _local_day(cal, t)
    running = [i for i in _instances(cal, day - timedelta(days=1), day) if i.start <= t < i.end]
    return max(running, key=lambda i: (i.start, i.name), default=None)


def next_shift_boundary(cal: ShiftCalendar, t: datetime) -> datetime | None:
    """The first shift start or end strictly after `t` (UTC), or None within ~400 days.

    Used to schedule the end-of-shift OEE record; breaks are not boundaries.
    """
    t = _aware(t, "t")
    tz = ZoneInfo(cal.timezone)
    day = _local_day(cal, t) - timedelta(days=1)
    best: datetime | None = None
    for _ in range(_HORIZON_DAYS):
        # Shifts of `day` and later start no earlier than its local midnight.
        if best is not None and best <= _instant(day, time(0), tz):
            break
        for inst in _instances(cal, day, day):
            for b in (inst.start, inst.end):
                if b > t and (best is None or b < best):
                    best = b
        day += timedelta(days=1)
    return best
