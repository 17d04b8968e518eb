"""Planned busy time: breaks, holidays, midnight-crossing shifts, DST nights (Europe/Berlin)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.plant import Break, Shift, ShiftCalendar
from models.shift_calendar import (
    next_shift_boundary,
    planned_busy_seconds,
    planned_intervals,
    shift_at,
    shift_instances,
)

BER = ZoneInfo("Europe/Berlin")
H = 3600.0


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BER)


DAY = Shift(
    name="day",
    start=time(6),
    end=time(14),
    breaks=[Break(start=time(9), end=time(9, 15)), Break(start=time(12), end=time(12, 30))],
)
NIGHT = Shift(
    name="night",
    start=time(22),
    end=time(6),
    days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    breaks=[Break(start=time(2), end=time(2, 30))],
)
CAL = ShiftCalendar(timezone="Europe/Berlin", shifts=[DAY])
NIGHTS = ShiftCalendar(timezone="Europe/Berlin", shifts=[NIGHT])


def test_day_shift_minus_breaks() -> None:
    mon = planned_intervals(CAL, local(2024, 6, 3), local(2024, 6, 4))
    assert mon == [
        (local(2024, 6, 3, 6), local(2024, 6, 3, 9)),
        (local(2024, 6, 3, 9, 15), local(2024, 6, 3, 12)),
        (local(2024, 6, 3, 12, 30), local(2024, 6, 3, 14)),
    ]
    assert all(a.tzinfo is UTC for iv in mon for a in iv)
    assert planned_busy_seconds(CAL, local(2024, 6, 3), local(2024, 6, 4)) == 8 * H - 45 * 60


def test_window_clips_and_weekend_is_off() -> None:
    assert planned_busy_seconds(CAL, local(2024, 6, 3, 8), local(2024, 6, 3, 10)) == 1.75 * H
    assert planned_intervals(CAL, local(2024, 6, 8), local(2024, 6, 10)) == []  # sat, sun
    # a whole Mon-Sun week: five shifts
    assert planned_busy_seconds(CAL, local(2024, 6, 3), local(2024, 6, 10)) == 5 * 7.25 * H
    assert planned_intervals(CAL, local(2024, 6, 4), local(2024, 6, 3)) == []


def test_holiday_removes_the_shift_of_that_day() -> None:
    cal = CAL.model_copy(update={"holidays": [date(2024, 6, 3)]})
    assert planned_busy_seconds(cal, local(2024, 6, 3), local(2024, 6, 5)) == 7.25 * H


def test_midnight_crossing_shift_belongs_to_its_start_day() -> None:
    fri_night = planned_intervals(NIGHTS, local(2024, 6, 7, 12), local(2024, 6, 8, 12))
    assert fri_night == [
        (local(2024, 6, 7, 22), local(2024, 6, 8, 2)),
        (local(2024, 6, 8, 2, 30), local(2024, 6, 8, 6)),
    ]
    # Holiday on Friday: the Friday night shift is off, Saturday's still runs.
    fri_off = NIGHTS.model_copy(update={"holidays": [date(2024, 6, 7)]})
    assert planned_busy_seconds(fri_off, local(2024, 6, 7, 12), local(2024, 6, 9, 12)) == 7.5 * H
    # Holiday on Saturday: Friday's night shift runs into Saturday morning in full.
    sat_off = NIGHTS.model_copy(update={"holidays": [date(2024, 6, 8)]})
    assert planned_busy_seconds(sat_off, local(2024, 6, 7, 12), local(2024, 6, 9, 12)) == 7.5 * H
    # Only the part after midnight falls inside a window that starts at midnight.
    assert planned_busy_seconds(NIGHTS, local(2024, 6, 8), local(2024, 6, 8, 12)) == 5.5 * H


@pytest.mark.parametrize(
    ("night_of", "hours"),
    [(date(2024, 3, 30), 7.0), (date(2024, 10, 26), 9.0), (date(2024, 6, 8), 8.0)],
    ids=["spring-forward", "fall-back", "ordinary"],
)
def test_dst_nights(night_of: date, hours: float) -> None:
    no_breaks = ShiftCalendar(
        timezone="Europe/Berlin", shifts=[NIGHT.model_copy(update={"breaks": []})]
    )
    start = datetime.combine(night_of, time(12), tzinfo=BER)
    (inst,) = shift_instances(no_breaks, start, start + timedelta(hours=12))
    assert (inst.end - inst.start).total_seconds() == hours * H
    assert planned_busy_seconds(no_breaks, start, start + timedelta(days=1)) == hours * H
    # The 02:00-02:30 break still takes 30 real minutes: on the spring-forward night 02:00
    # does not exist and is read with the offset before the change (fold=0).
    assert planned_busy_seconds(NIGHTS, start, start + timedelta(days=1)) == (hours - 0.5) * H


def test_no_shifts_means_24_7_except_holidays() -> None:
    cal = ShiftCalendar(timezone="Europe/Berlin", holidays=[date(2024, 12, 25)])
    assert planned_intervals(cal, local(2024, 6, 3, 5), local(2024, 6, 5, 7)) == [
        (local(2024, 6, 3, 5), local(2024, 6, 5, 7))
    ]
    assert planned_busy_seconds(cal, local(2024, 3, 31), local(2024, 4, 1)) == 23 * H
    assert planned_busy_seconds(cal, local(2024, 12, 24), local(2024, 12, 27)) == 48 * H
    inst = shift_at(cal, local(2024, 6, 3, 15))
    assert inst is not None
    assert (inst.name, inst.start, inst.end) == ("always", local(2024, 6, 3), local(2024, 6, 4))
    assert shift_at(cal, local(2024, 12, 25, 10)) is None
    assert next_shift_boundary(cal, local(2024, 6, 3, 15)) == local(2024, 6, 4)


def test_shift_at() -> None:
    inst = shift_at(CAL, local(2024, 6, 3, 9, 5))  # in a break: still the shift
    assert inst is not None
    assert (inst.name, inst.day, inst.start, inst.end) == (
        "day",
        date(2024, 6, 3),
        local(2024, 6, 3, 6),
        local(2024, 6, 3, 14),
    )
    assert inst.breaks[0] == (local(2024, 6, 3, 9), local(2024, 6, 3, 9, 15))
    assert shift_at(CAL, local(2024, 6, 3, 14)) is None  # end is exclusive
    assert shift_at(CAL, local(2024, 6, 8, 10)) is None  # saturday
    night = shift_at(NIGHTS, local(2024, 6, 8, 3))
    assert night is not None
    assert night.day == date(2024, 6, 7)
    # Overlap: the shift that started last owns the handover.
    both = ShiftCalendar(
        shifts=[
            Shift(name="early", start=time(6), end=time(15)),
            Shift(name="late", start=time(14), end=time(22)),
        ]
    )
    t = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
    assert (s := shift_at(both, t)) is not None
    assert s.name == "late"
    # ...and planned time is not counted twice.
    assert planned_busy_seconds(both, t.replace(hour=0), t.replace(hour=23)) == 16 * H


def test_next_shift_boundary() -> None:
    assert next_shift_boundary(CAL, local(2024, 6, 3, 10)) == local(2024, 6, 3, 14)
    assert next_shift_boundary(CAL, local(2024, 6, 3, 6)) == local(2024, 6, 3, 14)
    assert next_shift_boundary(CAL, local(2024, 6, 3, 5)) == local(2024, 6, 3, 6)
    assert next_shift_boundary(CAL, local(2024, 6, 7, 15)) == local(2024, 6, 10, 6)  # fri->mon
    assert next_shift_boundary(NIGHTS, local(2024, 6, 8, 3)) == local(2024, 6, 8, 6)
    assert next_shift_boundary(NIGHTS, local(2024, 3, 30, 23)) == local(2024, 3, 31, 6)
    never = ShiftCalendar(shifts=[Shift(name="x", start=time(6), end=time(14), days=[])])
    assert next_shift_boundary(never, local(2024, 6, 3)) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        planned_intervals(CAL, datetime(2024, 6, 3), local(2024, 6, 4))
    with pytest.raises(ValueError, match="timezone-aware"):
        shift_at(CAL, datetime(2024, 6, 3))


MIXED = ShiftCalendar(timezone="Europe/Berlin", shifts=[DAY, NIGHT], holidays=[date(2024, 3, 29)])
BASE = local(2024, 3, 27)
offsets = st.integers(min_value=0, max_value=6 * 24 * 3600)


@given(offsets, offsets, offsets)
def test_planned_time_is_additive_and_well_formed(a: int, b: int, c: int) -> None:
    t0, t1, t2 = (BASE + timedelta(seconds=x) for x in sorted((a, b, c)))
    whole = planned_intervals(MIXED, t0, t2)
    assert all(t0 <= x < y <= t2 for x, y in whole)
    assert all(y < x2 for (_, y), (x2, _) in pairwise(whole))
    assert planned_busy_seconds(MIXED, t0, t1) + planned_busy_seconds(MIXED, t1, t2) == (
        planned_busy_seconds(MIXED, t0, t2)
    )


@pytest.mark.parametrize(
    ("start", "end", "brk", "ok"),
    [
        (time(6), time(14), (time(9), time(9, 15)), True),
        (time(6), time(14), (time(13, 30), time(14)), True),  # ends with the shift
        (time(22), time(6), (time(2), time(2, 30)), True),  # after midnight
        (time(22), time(6), (time(23, 45), time(0, 15)), True),  # across midnight
        (time(6), time(6), (time(23), time(6)), True),  # round the clock
        (time(6), time(14), (time(15), time(15, 30)), False),  # after the shift
        (time(6), time(14), (time(13, 45), time(14, 15)), False),  # past its end
        (time(22), time(6), (time(21, 30), time(22, 30)), False),  # before its start
        (time(6), time(14), (time(13), time(7)), False),  # wraps round
    ],
)
def test_a_break_must_lie_within_its_shift(
    start: time, end: time, brk: tuple[time, time], ok: bool
) -> None:
    """A break outside its shift used to be accepted and ignored (no planned downtime
    where the engineer set one); now the plant file is refused, naming both."""
    def make() -> Shift:
        return Shift(name="s", start=start, end=end, breaks=[Break(start=brk[0], end=brk[1])])

    if ok:
        make()
    else:
        with pytest.raises(ValueError, match=r"break \d\d:\d\d-\d\d:\d\d is not within the shift"):
            make()
