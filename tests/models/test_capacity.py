"""Capacity offers: free slots (calendar minus bookings minus the running job), the record."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.capacity import (
    Booking,
    Capabilities,
    CapacitySettings,
    capacity_record,
    expected_program_end,
    free_slots,
    ideal_cycle_time_for,
    parse_bookings,
    performance_windows,
)
from models.machine_state import Availability, Execution, MachineState
from models.plant import Break, Machine, ProgramSettings, Shift, ShiftCalendar, Weekday
from models.shift_calendar import planned_intervals

BER = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
M = timedelta(minutes=1)
ZERO = timedelta(0)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BER)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


DAY = Shift(
    name="day",
    start=time(6),
    end=time(14),
    breaks=[Break(start=time(9), end=time(9, 15)), Break(start=time(12), end=time(12, 30))],
)
NIGHT = Shift(name="night", start=time(22), end=time(6), days=["fri", "sat", "sun"])
CAL = ShiftCalendar(timezone="Europe/Berlin", shifts=[DAY])
MON = local(2026, 11, 23)  # a Monday, CET (UTC+1)


def book(a: datetime, b: datetime, ref: str | None = None) -> Booking:
    return Booking(start=a, end=b, reference=ref)


# --- free_slots: calendar --------------------------------------------------------------------


def test_breaks_are_not_offered() -> None:
    slots = free_slots(CAL, [], MON, timedelta(days=1), min_slot=ZERO)
    assert slots == [
        (utc(2026, 11, 23, 5), utc(2026, 11, 23, 8)),
        (utc(2026, 11, 23, 8, 15), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 13)),
    ]
    assert all(a.tzinfo is UTC and b.tzinfo is UTC for a, b in slots)


def test_holidays_and_weekends_are_not_offered() -> None:
    cal = ShiftCalendar(timezone="Europe/Berlin", shifts=[DAY], holidays=[date(2026, 11, 24)])
    slots = free_slots(cal, [], MON, timedelta(days=7), min_slot=ZERO)
    days = sorted({a.astimezone(BER).date() for a, _ in slots})
    assert days == [date(2026, 11, 23), date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
    assert sum(((b - a) for a, b in slots), ZERO) == 4 * timedelta(hours=7, minutes=15)


def test_horizon_starts_now_and_cuts_the_last_slot() -> None:
    now = local(2026, 11, 23, 10)
    slots = free_slots(CAL, [], now, timedelta(hours=2, minutes=45), min_slot=ZERO)
    assert slots == [
        (utc(2026, 11, 23, 9), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 11, 45)),
    ]


def test_calendar_without_shifts_offers_the_whole_horizon() -> None:
    slots = free_slots(ShiftCalendar(), [], utc(2026, 1, 1, 3), timedelta(days=3), min_slot=H)
    assert slots == [(utc(2026, 1, 1, 3), utc(2026, 1, 4, 3))]


# --- free_slots: bookings and the running job -------------------------------------------------


def test_booking_inside_a_slot_splits_it() -> None:
    b = book(local(2026, 11, 23, 10), local(2026, 11, 23, 11), "PO-1")
    slots = free_slots(CAL, [b], MON, timedelta(days=1), min_slot=ZERO)
    assert slots == [
        (utc(2026, 11, 23, 5), utc(2026, 11, 23, 8)),
        (utc(2026, 11, 23, 8, 15), utc(2026, 11, 23, 9)),
        (utc(2026, 11, 23, 10), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 13)),
    ]


def test_partially_overlapping_and_mutually_overlapping_bookings() -> None:
    bookings = [
        book(local(2026, 11, 23, 4), local(2026, 11, 23, 7)),  # starts before the shift
        book(local(2026, 11, 23, 8), local(2026, 11, 23, 10)),  # spans a break
        book(local(2026, 11, 23, 9, 30), local(2026, 11, 23, 10, 30)),  # overlaps the previous
        book(local(2026, 11, 23, 13), local(2026, 11, 23, 18)),  # runs past the shift end
    ]
    slots = free_slots(CAL, bookings, MON, timedelta(days=1), min_slot=ZERO)
    assert slots == [
        (utc(2026, 11, 23, 6), utc(2026, 11, 23, 7)),
        (utc(2026, 11, 23, 9, 30), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 12)),
    ]


def test_bookings_outside_the_horizon_change_nothing() -> None:
    bookings = [
        book(local(2026, 11, 20, 6), local(2026, 11, 20, 14)),  # last week
        book(local(2026, 11, 24, 6), local(2026, 11, 24, 14)),  # after the horizon
    ]
    assert free_slots(CAL, bookings, MON, timedelta(days=1), min_slot=ZERO) == free_slots(
        CAL, [], MON, timedelta(days=1), min_slot=ZERO
    )


def test_booking_covering_the_whole_horizon_leaves_nothing() -> None:
    b = book(local(2026, 11, 1), local(2026, 12, 31))
    assert free_slots(CAL, [b], MON, timedelta(days=14), min_slot=ZERO) == []


def test_plain_intervals_are_accepted_as_bookings() -> None:
    b = (local(2026, 11, 23, 6), local(2026, 11, 23, 9))
    slots = free_slots(CAL, [b], MON, timedelta(days=1), min_slot=ZERO)
    assert slots[0] == (utc(2026, 11, 23, 8, 15), utc(2026, 11, 23, 11))


def test_busy_until_blocks_from_now() -> None:
    now = local(2026, 11, 23, 7)
    slots = free_slots(
        CAL, [], now, timedelta(hours=12), busy_until=local(2026, 11, 23, 9, 45), min_slot=ZERO
    )
    assert slots == [
        (utc(2026, 11, 23, 8, 45), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 13)),
    ]
    # A past expected end blocks nothing.
    past = free_slots(
        CAL, [], now, timedelta(hours=12), busy_until=local(2026, 11, 23, 6), min_slot=ZERO
    )
    assert past == free_slots(CAL, [], now, timedelta(hours=12), min_slot=ZERO)
    assert past[0] == (utc(2026, 11, 23, 6), utc(2026, 11, 23, 8))


def test_min_slot_drops_short_gaps_and_keeps_exact_ones() -> None:
    bookings = [
        book(local(2026, 11, 23, 6, 20), local(2026, 11, 23, 8, 30)),  # leaves 06:00-06:20
        book(local(2026, 11, 23, 9, 15), local(2026, 11, 23, 11, 30)),  # leaves 08:30-09:00
    ]  # and 11:30-12:00
    got = free_slots(CAL, bookings, MON, timedelta(days=1), min_slot=30 * M)
    assert got == [
        (utc(2026, 11, 23, 7, 30), utc(2026, 11, 23, 8)),
        (utc(2026, 11, 23, 10, 30), utc(2026, 11, 23, 11)),
        (utc(2026, 11, 23, 11, 30), utc(2026, 11, 23, 13)),
    ]
    assert len(free_slots(CAL, bookings, MON, timedelta(days=1), min_slot=31 * M)) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"now": datetime(2026, 11, 23)}, "timezone-aware"),
        ({"horizon": ZERO}, "horizon"),
        ({"min_slot": -M}, "min_slot"),
        ({"busy_until": datetime(2026, 11, 23, 8)}, "timezone-aware"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"now": MON, "horizon": H, "min_slot": ZERO, "busy_until": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        free_slots(CAL, [], **args)  # type: ignore[arg-type]


# --- DST -------------------------------------------------------------------------------------


def test_dst_week_day_shift_moves_in_utc_not_in_length() -> None:
    cal = ShiftCalendar(
        timezone="Europe/Berlin", shifts=[Shift(name="day", start=time(6), end=time(14))]
    )
    now = local(2026, 3, 25)  # Wednesday; clocks go forward Sunday 2026-03-29 02:00
    slots = free_slots(cal, [], now, timedelta(days=7), min_slot=ZERO)
    assert slots == [
        (utc(2026, 3, 25, 5), utc(2026, 3, 25, 13)),
        (utc(2026, 3, 26, 5), utc(2026, 3, 26, 13)),
        (utc(2026, 3, 27, 5), utc(2026, 3, 27, 13)),
        (utc(2026, 3, 30, 4), utc(2026, 3, 30, 12)),
        (utc(2026, 3, 31, 4), utc(2026, 3, 31, 12)),
    ]


@pytest.mark.parametrize(("saturday", "hours"), [(date(2026, 3, 28), 7), (date(2026, 10, 24), 9)])
def test_dst_night_shift_slot_is_real_time(saturday: date, hours: int) -> None:
    cal = ShiftCalendar(timezone="Europe/Berlin", shifts=[NIGHT])
    now = local(saturday.year, saturday.month, saturday.day, 12)
    slots = free_slots(cal, [], now, timedelta(hours=20), min_slot=ZERO)
    assert len(slots) == 1
    a, b = slots[0]
    assert b - a == timedelta(hours=hours)
    assert a.astimezone(BER).time() == time(22) and b.astimezone(BER).time() == time(6)


def test_dst_booking_in_local_time_is_subtracted_in_real_time() -> None:
    cal = ShiftCalendar(timezone="Europe/Berlin", shifts=[NIGHT])
    # 01:00 CET to 04:00 CEST on the spring-forward night is 2 real hours.
    b = book(local(2026, 3, 29, 1), local(2026, 3, 29, 4))
    slots = free_slots(cal, [b], local(2026, 3, 28, 12), timedelta(hours=20), min_slot=ZERO)
    assert sum(((y - x) for x, y in slots), ZERO) == timedelta(hours=5)


# --- property --------------------------------------------------------------------------------

_TZS = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
_quarter = st.builds(lambda q: time(q // 4, (q % 4) * 15), st.integers(0, 95))


def _q(n: int) -> time:
    return time(n % 96 // 4, n % 4 * 15)


def _shift_of(i: int, s: int, e: int, days: list[Weekday], brk: list[tuple[int, int]]) -> Shift:
    """A shift of quarter hours `s`..`e` with breaks inside it (a break outside its shift
    is refused by the plant schema)."""
    length = (e - s) % 96 or 96
    breaks = []
    for a, b in brk:
        begin = a % length
        end = begin + 1 + b % (length - begin)
        breaks.append(Break(start=_q(s + begin), end=_q(s + end)))
    return Shift(name=f"s{i}", start=_q(s), end=_q(e), days=days, breaks=breaks)


_shift = st.builds(
    _shift_of,
    st.integers(0, 999),
    st.integers(0, 95),
    st.integers(0, 95),
    st.lists(
        st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, unique=True
    ),
    st.lists(st.tuples(st.integers(0, 95), st.integers(0, 95)), max_size=2),
)
_calendar = st.builds(
    lambda tz, shifts, hol: ShiftCalendar(timezone=tz, shifts=shifts, holidays=hol),
    st.sampled_from(_TZS),
    st.lists(_shift, max_size=3, unique_by=lambda s: s.name),
    st.lists(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=3),
)
_minutes = st.integers(0, 60 * 24 * 12)
_BASE = utc(2026, 1, 1)


@settings(max_examples=150, deadline=None)
@given(
    cal=_calendar,
    start_min=st.integers(0, 60 * 24 * 360),
    horizon_min=st.integers(1, 60 * 24 * 10),
    raw_bookings=st.lists(
        st.tuples(st.integers(-60 * 24, 60 * 24 * 12), st.integers(1, 6000)), max_size=8
    ),
    busy_min=st.one_of(st.none(), st.integers(-600, 6000)),
    min_slot_min=st.integers(0, 240),
    probes=st.lists(st.floats(0, 1), max_size=20),
)
def test_slots_are_free_planned_disjoint_and_long_enough(
    cal: ShiftCalendar,
    start_min: int,
    horizon_min: int,
    raw_bookings: list[tuple[int, int]],
    busy_min: int | None,
    min_slot_min: int,
    probes: list[float],
) -> None:
    now = _BASE + start_min * M
    horizon = horizon_min * M
    end = now + horizon
    bookings = [book(now + a * M, now + (a + d) * M) for a, d in raw_bookings]
    busy_until = None if busy_min is None else now + busy_min * M
    min_slot = min_slot_min * M
    slots = free_slots(cal, bookings, now, horizon, busy_until=busy_until, min_slot=min_slot)

    planned = planned_intervals(cal, now, end)
    holes = [(b.start, b.end) for b in bookings]
    if busy_until is not None:
        holes.append((now, busy_until))

    for a, b in slots:
        assert a.tzinfo is UTC and b.tzinfo is UTC
        assert now <= a < b <= end
        assert b - a >= min_slot
        assert any(pa <= a and b <= pb for pa, pb in planned), "slot outside planned time"
        assert all(b <= ha or a >= hb for ha, hb in holes), "slot overlaps a booking"
    for (_, b1), (a2, _) in pairwise(slots):
        assert b1 < a2, "slots overlap, touch or are unsorted"

    # Completeness: with no minimum, every free planned instant is in some slot.
    if min_slot == ZERO:
        for p in probes:
            t = now + horizon * p
            if t >= end:
                continue
            free = any(pa <= t < pb for pa, pb in planned) and not any(
                ha <= t < hb for ha, hb in holes
            )
            assert free == any(a <= t < b for a, b in slots)


# --- the running job -------------------------------------------------------------------------

NOW = utc(2026, 11, 23, 10)


def state(execution: Execution | None, available: bool = True) -> MachineState:
    avail = Availability.AVAILABLE if available else Availability.UNAVAILABLE
    return MachineState(asset="m1", availability=avail, execution=execution)


def test_expected_end_active_is_one_cycle() -> None:
    assert expected_program_end(state(Execution.ACTIVE), NOW, 90.0, None) == NOW + 90 * M / 60


def test_expected_end_with_remaining_parts() -> None:
    assert expected_program_end(state(Execution.ACTIVE), NOW, 30.0, 120) == NOW + H
    assert expected_program_end(state(Execution.FEED_HOLD), NOW, 30.0, 2) == NOW + M
    assert expected_program_end(state(Execution.ACTIVE), NOW, 30.0, 0) is None


@pytest.mark.parametrize(
    ("st_", "ict"),
    [
        (state(Execution.READY), 30.0),
        (state(Execution.PROGRAM_COMPLETED), 30.0),
        (state(Execution.STOPPED), 30.0),
        (state(None), 30.0),
        (state(Execution.ACTIVE, available=False), 30.0),
        (state(Execution.ACTIVE), None),
    ],
)
def test_expected_end_unknown_is_none(st_: MachineState, ict: float | None) -> None:
    assert expected_program_end(st_, NOW, ict, 5) is None


def test_expected_end_rejects_negative_parts_and_naive_now() -> None:
    with pytest.raises(ValueError, match="remaining_parts"):
        expected_program_end(state(Execution.ACTIVE), NOW, 30.0, -1)
    with pytest.raises(ValueError, match="timezone-aware"):
        expected_program_end(state(Execution.ACTIVE), datetime(2026, 1, 1), 30.0, 1)


def test_ideal_cycle_time_prefers_the_program() -> None:
    m = Machine(
        id="m1",
        area="a",
        line="l",
        adapter="modbus",
        connection={},
        ideal_cycle_time=60.0,
        programs={"O100": ProgramSettings(ideal_cycle_time=12.5)},
    )
    assert ideal_cycle_time_for(m, "O100") == 12.5
    assert ideal_cycle_time_for(m, "O200") == 60.0
    assert ideal_cycle_time_for(m, None) == 60.0


def test_expected_end_feeds_free_slots() -> None:
    now = local(2026, 11, 23, 7)
    busy = expected_program_end(state(Execution.ACTIVE), now, 60.0, 30)
    slots = free_slots(CAL, [], now, timedelta(days=1), busy_until=busy, min_slot=ZERO)
    assert slots[0] == (utc(2026, 11, 23, 6, 30), utc(2026, 11, 23, 8))


# --- models ----------------------------------------------------------------------------------


def test_booking_validation() -> None:
    b = Booking.model_validate(
        {"start": "2026-11-23T06:00:00+01:00", "end": "2026-11-23T08:00:00Z", "reference": "PO-7"}
    )
    assert b.interval() == (utc(2026, 11, 23, 5), utc(2026, 11, 23, 8))
    with pytest.raises(ValidationError, match="after its start"):
        Booking(start=NOW, end=NOW)
    with pytest.raises(ValidationError, match="timezone"):
        Booking.model_validate({"start": "2026-11-23T06:00:00", "end": "2026-11-23T08:00:00Z"})
    with pytest.raises(ValidationError, match="extra"):
        Booking.model_validate({"start": NOW, "end": NOW + H, "customer": "x"})
    with pytest.raises(ValidationError):
        b.reference = "changed"  # type: ignore[misc]


def test_parse_bookings_reports_the_bad_entry() -> None:
    ok = {"start": "2026-11-23T06:00:00Z", "end": "2026-11-23T08:00:00Z"}
    assert parse_bookings([ok]) == [Booking(start=utc(2026, 11, 23, 6), end=utc(2026, 11, 23, 8))]
    with pytest.raises(ValidationError) as exc:
        parse_bookings([ok, {"start": ok["end"], "end": ok["start"]}])
    assert exc.value.errors()[0]["loc"][0] == 1


def test_capabilities_model() -> None:
    c = Capabilities.model_validate(
        {
            "processes": ["Milling", " 5-axis "],
            "materials": ["Ti-6Al-4V"],
            "work_envelope_mm": {"x": 600, "y": 500, "z": 450},
            "tolerance_mm": 0.005,
            "certifications": ["ISO 9001"],
        }
    )
    assert c.processes == ["milling", "5-axis"]
    assert c.materials == ["Ti-6Al-4V"]
    assert Capabilities() == Capabilities(processes=[], materials=[], certifications=[])
    for bad in (
        {"processes": [""]},
        {"tolerance_mm": 0},
        {"work_envelope_mm": {"x": 1, "y": 1}},
        {"colour": "red"},
    ):
        with pytest.raises(ValidationError):
            Capabilities.model_validate(bad)


def test_capacity_settings() -> None:
    s = CapacitySettings()
    assert (s.horizon_days, s.min_slot_minutes, s.refresh_seconds) == (14, 30, 300.0)
    assert s.horizon == timedelta(days=14) and s.min_slot == 30 * M
    for bad in (
        {"horizon_days": 0},
        {"horizon_days": 91},
        {"refresh_seconds": 301},
        {"min_slot_minutes": -1},
        {"extra": 1},
    ):
        with pytest.raises(ValidationError):
            CapacitySettings.model_validate(bad)


# --- the record ------------------------------------------------------------------------------


def kpi(a: float | None, q: float | None, oee: float | None) -> dict[str, object]:
    """The parts of a KpiService.window record that capacity reads, plus some it ignores."""
    return {
        "window": {"kind": "range"},
        "availability": a,
        "effectiveness": 0.9,
        "quality": q,
        "oee": oee,
        "time": {"pbt": 1.0},
        "counts": {},
    }


def test_record_shape() -> None:
    now = utc(2026, 11, 23, 6, 0)
    caps = Capabilities(processes=["milling"], materials=["steel"])
    slots = free_slots(CAL, [], now, 20 * H, min_slot=30 * M)
    rec = capacity_record(
        "m1",
        caps,
        slots,
        {"7d": kpi(0.8, 0.99, 0.7), "30d": None},
        last_sample=now - timedelta(seconds=2.5),
        now=now,
        horizon=20 * H,
    )
    assert json.loads(json.dumps(rec)) == rec  # JSON-ready
    assert set(rec) == {
        "machine",
        "capabilities",
        "free_slots",
        "free_hours",
        "horizon",
        "performance",
        "freshness",
        "ts",
    }
    assert rec["machine"] == "m1"
    assert rec["capabilities"]["processes"] == ["milling"]
    assert rec["capabilities"]["work_envelope_mm"] is None
    assert rec["free_slots"] == [
        {"start": "2026-11-23T06:00:00.000Z", "end": "2026-11-23T08:00:00.000Z", "hours": 2.0},
        {"start": "2026-11-23T08:15:00.000Z", "end": "2026-11-23T11:00:00.000Z", "hours": 2.75},
        {"start": "2026-11-23T11:30:00.000Z", "end": "2026-11-23T13:00:00.000Z", "hours": 1.5},
    ]
    assert rec["free_hours"] == pytest.approx(6.25)
    assert rec["horizon"] == {
        "start": "2026-11-23T06:00:00.000Z",
        "end": "2026-11-24T02:00:00.000Z",
    }
    assert rec["performance"] == {
        "7d": {"availability": 0.8, "effectiveness": 0.9, "quality": 0.99, "oee": 0.7},
        "30d": None,
    }
    assert rec["freshness"] == {"last_sample": "2026-11-23T05:59:57.500Z", "age_s": 2.5}
    assert rec["ts"] == "2026-11-23T06:00:00.000Z"


def test_record_without_data() -> None:
    now = local(2026, 11, 23, 7)  # a non-UTC now still yields Z timestamps
    rec = capacity_record(
        "m2", None, [], {"7d": {"oee": None}}, last_sample=None, now=now, horizon=timedelta(days=14)
    )
    assert rec["capabilities"] is None
    assert rec["free_slots"] == [] and rec["free_hours"] == 0
    assert rec["performance"] == {
        "7d": {"availability": None, "effectiveness": None, "quality": None, "oee": None},
        "30d": None,
    }
    assert rec["freshness"] == {"last_sample": None, "age_s": None}
    assert rec["ts"] == "2026-11-23T06:00:00.000Z"
    assert rec["horizon"]["end"] == "2026-12-07T06:00:00.000Z"


def test_record_clamps_a_sample_from_the_future() -> None:
    rec = capacity_record(
        "m1", None, [], {}, last_sample=NOW + timedelta(seconds=3), now=NOW, horizon=H
    )
    assert rec["freshness"]["age_s"] == 0.0


def test_performance_windows() -> None:
    w = performance_windows(local(2026, 11, 23, 11))
    assert w == {
        "7d": (utc(2026, 11, 16, 10), utc(2026, 11, 23, 10)),
        "30d": (utc(2026, 10, 24, 10), utc(2026, 11, 23, 10)),
    }


def test_aggregate_windows_sums_time_elements_before_dividing() -> None:
    from models.capacity import aggregate_windows

    short = {"time": {"pbt": 100.0, "apt": 80.0, "effective": 60.0}, "counts": {"pq": 60, "gq": 57}}
    long = {
        "time": {"pbt": 300.0, "apt": 150.0, "effective": 150.0},
        "counts": {"pq": 150, "gq": 150},
    }
    agg = aggregate_windows([short, long])
    assert agg is not None
    assert agg["availability"] == pytest.approx(230 / 400, rel=1e-12)
    assert agg["effectiveness"] == pytest.approx(210 / 230, rel=1e-12)
    assert agg["quality"] == pytest.approx(207 / 210, rel=1e-12)
    assert agg["oee"] == pytest.approx(230 / 400 * 210 / 230 * 207 / 210, rel=1e-12)
    # not the mean of the two shifts' ratios
    assert agg["availability"] != pytest.approx((0.8 + 0.5) / 2)
    assert aggregate_windows([]) is None
    unrated = {"time": {"pbt": 10.0, "apt": 5.0, "effective": None}, "counts": {"pq": 3, "gq": 3}}
    assert aggregate_windows([unrated])["effectiveness"] is None  # type: ignore[index]


@settings(max_examples=150, deadline=None)
@given(
    cal=_calendar,
    start_min=st.integers(0, 60 * 24 * 360),
    horizon_min=st.integers(1, 60 * 24 * 10),
    before_min=st.integers(0, 60 * 24),
    after_min=st.integers(0, 60 * 24),
    raw_bookings=st.lists(
        st.tuples(st.integers(-60 * 24, 60 * 24 * 12), st.integers(1, 6000)), max_size=4
    ),
    min_slot_min=st.integers(0, 240),
)
def test_planned_time_computed_once_over_a_wider_span_gives_the_same_slots(
    cal: ShiftCalendar,
    start_min: int,
    horizon_min: int,
    before_min: int,
    after_min: int,
    raw_bookings: list[tuple[int, int]],
    min_slot_min: int,
) -> None:
    """A capacity round computes the plant's planned time once for every machine (issue
    17), over a span that starts earlier and ends later than each machine's horizon."""
    now, horizon, min_slot = _BASE + start_min * M, horizon_min * M, min_slot_min * M
    bookings = [book(now + a * M, now + (a + d) * M) for a, d in raw_bookings]
    shared = planned_intervals(cal, now - before_min * M, now + horizon + after_min * M)
    assert free_slots(cal, bookings, now, horizon, min_slot=min_slot, planned=shared) == (
        free_slots(cal, bookings, now, horizon, min_slot=min_slot))
