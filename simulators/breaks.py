"""The plant calendar's breaks, as a simulated machine keeps them: it idles through them.

Why: the gateway rates a machine's OEE against the shift calendar, and a part made in a
planned break counts as made in unplanned time (edge/kpi/oee.py `unplanned_pq`: in no
availability, effectiveness or quality). A demo whose simulated machines cut through the
lunch break would show, every day at 12:00, parts the OEE leaves out. So a simulated
machine stops its clock for the calendar's breaks (wall-clock time, as the calendar is
written): its simulated time stands still, it shows itself idle (`ready`, spindle off) and
picks up where it was when the break ends.

A break is planned downtime inside a shift: the shifts' spans minus the planned busy time
(models/shift_calendar.py), so a break that another, overlapping shift covers is no break.
Time outside every shift is not paused (the demo calendar runs round the clock; a plant
whose machines rest at night would say so with its own simulator scripts).
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timedelta

from models.plant import ShiftCalendar
from models.shift_calendar import (
    Interval,
    merge_intervals,
    planned_intervals,
    shift_instances,
    subtract_intervals,
)

__all__ = ["CalendarBreaks", "breaks_between"]

_CHUNK = timedelta(days=1)


def breaks_between(calendar: ShiftCalendar, start: datetime, end: datetime) -> list[Interval]:
    """The planned breaks in [start, end): sorted, disjoint, UTC."""
    spans = [(max(i.start, start), min(i.end, end)) for i in shift_instances(calendar, start, end)]
    return subtract_intervals(merge_intervals(spans), planned_intervals(calendar, start, end))


class CalendarBreaks:
    """`MachineModel`'s pauses (simulators/machine.py `Pauses`) from a shift calendar.

    The breaks from `origin` on are worked out a day at a time, as time reaches them, with
    a running sum, so a snapshot costs a bisect whatever the demo's uptime.
    """

    def __init__(self, calendar: ShiftCalendar, origin: datetime) -> None:
        self.calendar = calendar
        self.origin = origin
        self._horizon = origin
        self._starts: list[datetime] = []
        self._breaks: list[Interval] = []
        self._before: list[float] = []
        """Break seconds from `origin` up to the start of each break."""

    def _reach(self, t: datetime) -> None:
        while self._horizon <= t:
            end = self._horizon + _CHUNK
            for a, b in breaks_between(self.calendar, self._horizon, end):
                total = self._before[-1] + self._seconds(-1) if self._breaks else 0.0
                self._breaks.append((a, b))
                self._starts.append(a)
                self._before.append(total)
            self._horizon = end

    def _seconds(self, i: int) -> float:
        a, b = self._breaks[i]
        return (b - a).total_seconds()

    def paused(self, now: datetime) -> bool:
        """Whether `now` falls in a break."""
        if now < self.origin:
            return False
        self._reach(now)
        i = bisect_right(self._starts, now) - 1
        return i >= 0 and now < self._breaks[i][1]

    def paused_seconds(self, now: datetime) -> float:
        """Wall-clock seconds of breaks in [origin, now)."""
        if now <= self.origin:
            return 0.0
        self._reach(now)
        i = bisect_right(self._starts, now) - 1
        if i < 0:
            return 0.0
        a, b = self._breaks[i]
        return self._before[i] + (min(now, b) - a).total_seconds()
