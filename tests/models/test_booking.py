"""The booking rules: what fits, what is accepted at once, what waits, what is declined and
why. A fixed calendar (Mon-Fri 06:00-14:00 UTC, break 10:00-10:30) and a fixed `now`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from models.booking import (
    Candidate,
    Usage,
    booking_record,
    decide,
    first_fit,
    parse_reserve,
    part_range,
    plant_holds,
    recheck,
)
from models.plant import BookingRules, Break, Shift, ShiftCalendar, TimeWindow

CAL = ShiftCalendar(
    shifts=[
        Shift(
            name="day",
            start=time(6),
            end=time(14),
            breaks=[Break(start=time(10), end=time(10, 30))],
        )
    ],
    holidays=[date(2026, 12, 9)],
)
NO_USAGE = Usage()
NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)  # a Monday, before the shift


def at(day: int, hour: int, minute: int = 0) -> str:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC).isoformat()


def run(
    params: dict[str, Any],
    busy: tuple[Any, ...] = (),
    rules: BookingRules | None = None,
    usage: Usage = NO_USAGE,
    machines: tuple[str, ...] = ("m1",),
) -> Any:
    req = parse_reserve({"reference": "po-1", "asset": machines[0], **params})
    return decide(
        req,
        [Candidate(m, busy) for m in machines],
        platform="p1",
        calendar=CAL,
        rules=rules or BookingRules(),
        usage=usage,
        now=NOW,
    )


def test_a_free_window_in_shift_time_is_accepted_at_once() -> None:
    d = run({"start": at(7, 6), "end": at(7, 10)})
    assert (d.state, d.machine, d.reason) == ("accepted", "m1", None)
    assert d.start == datetime(2026, 12, 7, 6, tzinfo=UTC)


def test_a_window_over_a_break_is_declined_naming_the_break() -> None:
    d = run({"start": at(7, 9), "end": at(7, 11)})
    assert d.state == "declined"
    assert "outside planned shift time from 2026-12-07T10:00:00.000Z" in (d.reason or "")


def test_a_holiday_is_never_booked() -> None:
    d = run({"start": at(9, 6), "end": at(9, 8)})
    assert d.state == "declined" and "holiday" in (d.reason or "")


def test_overlap_with_an_accepted_booking_is_declined_with_its_id() -> None:
    taken = (
        (datetime(2026, 12, 7, 7, tzinfo=UTC), datetime(2026, 12, 7, 9, tzinfo=UTC)),
        "accepted booking b-1",
    )
    d = run({"start": at(7, 8), "end": at(7, 10)}, busy=(taken,))
    assert d.state == "declined"
    assert d.reason == (
        "m1: overlaps accepted booking b-1 (2026-12-07T07:00:00.000Z to 2026-12-07T09:00:00.000Z)"
    )


def test_a_duration_takes_the_first_fit_after_what_is_taken() -> None:
    taken = (
        (datetime(2026, 12, 7, 6, tzinfo=UTC), datetime(2026, 12, 7, 9, tzinfo=UTC)),
        "the running job",
    )
    d = run({"duration_minutes": 120}, busy=(taken,))
    # 09:00-10:00 is too short before the break; 10:30-12:30 fits
    assert d.state == "accepted"
    assert (d.start, d.end) == (
        datetime(2026, 12, 7, 10, 30, tzinfo=UTC),
        datetime(2026, 12, 7, 12, 30, tzinfo=UTC),
    )


def test_quantity_times_cycle_gives_the_duration() -> None:
    d = run({"quantity": 60, "ideal_cycle_s": 60, "earliest_start": at(8, 6)})
    assert d.state == "accepted" and d.end is not None and d.start is not None
    assert d.end - d.start == timedelta(hours=1)


def test_rules_make_a_request_wait_and_say_why() -> None:
    rules = BookingRules(max_duration_minutes=60, min_notice_minutes=24 * 60, programs=["O1*"])
    d = run({"start": at(7, 6), "end": at(7, 8), "program": "X9"}, rules=rules)
    assert d.state == "requested"
    assert d.waits_for == (
        "longer than max_duration_minutes 60",
        "starts sooner than min_notice_minutes 1440",
        "program X9 is not booked automatically",
    )


def test_a_flexible_request_prefers_a_start_the_rules_accept() -> None:
    rules = BookingRules(min_notice_minutes=24 * 60)
    d = run({"duration_minutes": 60}, rules=rules)
    assert d.state == "accepted"
    assert d.start == datetime(2026, 12, 8, 6, tzinfo=UTC)


def test_a_flexible_request_for_a_person_starts_after_the_hold() -> None:
    """A slot that waits for a person holds until its start at the latest: starting at the
    first free minute it would expire the moment it was asked for."""
    rules = BookingRules(max_duration_minutes=60, hold_minutes=90)
    d = run({"duration_minutes": 120, "earliest_start": at(7, 6)}, rules=rules)
    assert d.state == "requested"
    assert d.waits_for == ("longer than max_duration_minutes 60",)
    # NOW is 05:00, the hold ends 06:30: the first free 2 h from then is 06:30-08:30
    assert (d.start, d.end) == (datetime(2026, 12, 7, 6, 30, tzinfo=UTC),
                                datetime(2026, 12, 7, 8, 30, tzinfo=UTC))
    # no room after the hold: the earliest slot still waits, its hold ending at its start
    d = run({"duration_minutes": 120, "earliest_start": at(7, 6), "latest_start": at(7, 6)},
            rules=rules)
    assert d.state == "requested" and d.start == datetime(2026, 12, 7, 6, tzinfo=UTC)
    # a fixed window is never moved
    d = run({"start": at(7, 6), "end": at(7, 8)}, rules=rules)
    assert d.state == "requested" and d.start == datetime(2026, 12, 7, 6, tzinfo=UTC)


def test_quota_per_platform() -> None:
    rules = BookingRules.model_validate({"quotas": {"p1": {"max_hours": 3}}})
    d = run({"start": at(7, 6), "end": at(7, 8)}, rules=rules, usage=Usage(hours=2, bookings=1))
    assert d.state == "requested" and d.waits_for == ("platform quota of 3 h would be exceeded",)


def test_maintenance_and_blackouts_are_hard_limits() -> None:
    rules = BookingRules(
        maintenance=[TimeWindow(start=at(7, 6), end=at(7, 8), machines=["m1"], reason="spindle")],
        blackouts=[TimeWindow(start=at(8, 0), end=at(9, 0))],
    )
    holds = tuple(plant_holds(rules, "m1"))
    assert run({"start": at(7, 7), "end": at(7, 9)}, busy=holds).reason.startswith(
        "m1: overlaps maintenance: spindle"
    )
    assert "blackout" in run({"start": at(8, 7), "end": at(8, 9)}, busy=holds).reason
    assert plant_holds(rules, "m2")[0][1] == "blackout"


def test_the_past_and_the_far_future_are_declined() -> None:
    assert run({"start": at(6, 6), "end": at(6, 8)}).reason == "starts in the past"
    far = datetime(2027, 6, 1, 6, tzinfo=UTC)
    d = run({"start": far.isoformat(), "end": (far + timedelta(hours=1)).isoformat()})
    assert d.reason == "starts later than max_horizon_days 90"


def test_the_second_candidate_takes_what_the_first_cannot() -> None:
    taken = ((datetime(2026, 12, 7, 6, tzinfo=UTC), datetime(2026, 12, 7, 14, tzinfo=UTC)), "x")
    req = parse_reserve(
        {"reference": "r", "process": "milling", "start": at(7, 6), "end": at(7, 8)}
    )
    d = decide(
        req,
        [Candidate("m1", (taken,)), Candidate("m2")],
        platform="p",
        calendar=CAL,
        rules=BookingRules(),
        usage=Usage(),
        now=NOW,
    )
    assert (d.state, d.machine) == ("accepted", "m2")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": at(7, 6)}, "a window needs both start and end"),
        ({"asset": "m1", "process": "x", "duration_minutes": 5}, "exactly one of asset or process"),
        ({"duration_minutes": -1}, "duration_minutes"),
        ({"start": at(7, 8), "end": at(7, 6)}, "end must be after start"),
        ({"start": "2026-12-07T06:00:00", "end": at(7, 8)}, "start"),
        ({"duration_minutes": 5, "color": "red"}, "color"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reserve(
            {"reference": "r", "asset": "m1", **params}
            if "process" not in params
            else {"reference": "r", **params}
        )


def test_recheck_and_first_fit() -> None:
    a, b = datetime(2026, 12, 7, 6, tzinfo=UTC), datetime(2026, 12, 7, 8, tzinfo=UTC)
    assert recheck("m1", a, b, [], calendar=CAL, now=NOW) is None
    assert recheck("m1", a, b, [((a, b), "accepted booking b-2")], calendar=CAL, now=NOW) == (
        "m1: overlaps accepted booking b-2 (2026-12-07T06:00:00.000Z to 2026-12-07T08:00:00.000Z)"
    )
    assert first_fit([(a, b)], timedelta(hours=3), a, b) is None


def test_record_shape() -> None:
    rec = booking_record(
        booking="b-1",
        state="completed",
        owner={"platform": None, "reference": None, "commitment": "c"},
        machine="m1",
        start=datetime(2026, 12, 7, 6, tzinfo=UTC),
        end=datetime(2026, 12, 7, 8, tzinfo=UTC),
        at=NOW,
        by="gateway",
        request={"program": "O1", "quantity": 3},
        oee={"oee": 0.5},
        parts=part_range([]),
    )
    assert rec["start"] == "2026-12-07T06:00:00.000Z" and rec["oee"] == {"oee": 0.5}
    assert rec["program"] == "O1" and rec["process"] is None and rec["waits_for"] == []
    assert (rec["platform"], rec["reference"], rec["commitment"]) == (None, None, "c")
    assert rec["hold_until"] is None and rec["parts"]["records"] == 0


def test_part_range_spans_the_gateway_part_numbers_by_verdict() -> None:
    records = [
        {"part_seq": 7, "parts": 1, "verdict": "good"},
        {"part_seq": 5, "parts": 2, "verdict": "scrap"},  # out of order: 5 and 6
        {"part_seq": 8, "parts": 3, "verdict": "unknown"},  # 8, 9 and 10
    ]
    assert part_range(records) == {
        "first_seq": 5, "last_seq": 10, "records": 3, "parts": 6,
        "good": 1, "scrap": 2, "unknown": 3,
    }
    assert part_range([])["first_seq"] is None


def test_windows_are_whole_milliseconds_as_the_records_show_them() -> None:
    """The wire shows a booking's window in milliseconds (`format_ts`), and a platform asks
    `oee` with `window: range` and those bounds to check the `completed` record's figures
    (docs/protocol.md). A window decided from a microsecond `now` and a running job's
    expected end (one ideal cycle from now) kept its microseconds, so the figures differed
    in the sixth digit (audit round 3: APT 36.404065 s signed, 36.403683 s asked)."""
    now = datetime(2026, 12, 7, 7, 0, 0, 123456, tzinfo=UTC)
    job = ((now, now + timedelta(seconds=1.5)), "the running job")
    req = parse_reserve({"reference": "po-1", "asset": "m1", "duration_minutes": 1})
    d = decide(req, [Candidate("m1", (job,))], platform="p1", calendar=CAL,
               rules=BookingRules(), usage=NO_USAGE, now=now)
    assert d.state == "accepted" and d.start is not None and d.end is not None
    assert d.start >= now + timedelta(seconds=1.5)
    assert d.start.microsecond % 1000 == 0 and d.end.microsecond % 1000 == 0
    fixed = parse_reserve({"reference": "po-2", "asset": "m1",
                           "start": "2026-12-07T08:00:00.000001Z",
                           "end": "2026-12-07T08:30:00.0004Z"})
    d = decide(fixed, [Candidate("m1")], platform="p1", calendar=CAL,
               rules=BookingRules(), usage=NO_USAGE, now=now)
    assert d.state == "accepted" and d.start is not None and d.end is not None
    assert d.start.microsecond % 1000 == 0 and d.end.microsecond % 1000 == 0
