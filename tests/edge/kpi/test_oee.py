"""OEE engine: golden cases (Flux oee.APQ, Vorne), loss tree, gaps, counters, properties."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.kpi.oee import (
    ALARM,
    DOWNTIME_REASONS,
    FEED_HOLD,
    NO_DATA,
    RUNNING,
    SETUP,
    UNAVAILABLE,
    WAITING,
    OeeEngine,
    OeeResult,
    classify,
    compute,
)
from models.machine_state import ControllerMode as M
from models.machine_state import Execution as X
from models.plant import Break, Shift, ShiftCalendar

EPS = 1e-9
ALWAYS = ShiftCalendar()  # no shifts: planned 24/7
T0 = datetime(2021, 3, 22, tzinfo=UTC)


def at(minutes: float, base: datetime = T0) -> datetime:
    return base + timedelta(minutes=minutes)


# -- golden: InfluxData Flux experimental/oee APQ test -----------------------------------


def flux_engine() -> OeeEngine:
    eng = OeeEngine("m1", ALWAYS, ideal_cycle_time=30.0, program_cycle_times={})
    rows = [
        (0, "running", 1200, 10),
        (60, "running", 1300, 11),
        (120, "stopped", 1400, 11),
        (180, "running", 1400, 11),
        (210, "running", 1440, 14),
    ]
    for m, state, parts, bad in rows:
        execution = X.ACTIVE if state == "running" else X.STOPPED
        eng.on_state(at(m), execution, True, None, False)
        eng.on_counts(at(m), parts, bad)
    return eng


def test_flux_apq_golden() -> None:
    eng = flux_engine()
    # The engine measures: run time 3 h in 00:00-04:00 (the last state lasts to the window's
    # end, like Flux events.duration), 1440-1200 = 240 parts, 14-10 = 4 bad.
    r = eng.window(at(0), at(240), now=at(240))
    assert (r.apt, r.pq, r.gq, r.scrap) == (3 * 3600, 240, 236, 4)
    assert r.effective_time == 240 * 30
    # Flux is given plannedTime = 8 h for the 4 h window: an explicit PBT override.
    r8 = eng.window(at(0), at(240), now=at(240), pbt=8 * 3600)
    expected = (0.375, 2 / 3, 236 / 240, 0.375 * 2 / 3 * 236 / 240)
    got = (r8.availability, r8.effectiveness, r8.quality, r8.oee)
    assert got == pytest.approx(expected, abs=EPS)
    assert r8.oee == pytest.approx(0.2458333333, abs=1e-9)
    assert r8.performance == r8.effectiveness
    # The same from the pure function and the engine's elements.
    c = compute(pbt=8 * 3600, apt=r.apt, pru_pq=r.effective_time, pq=r.pq, gq=r.gq)
    assert (c.availability, c.effectiveness, c.quality, c.oee) == pytest.approx(expected, abs=EPS)


# -- golden: Vorne (oee.com) shift example, driven through a calendar --------------------


VORNE_CAL = ShiftCalendar(
    timezone="Europe/Berlin",
    shifts=[
        Shift(
            name="day",
            start=time(6),
            end=time(14),
            breaks=[
                Break(start=time(9), end=time(9, 15)),
                Break(start=time(11, 30), end=time(12)),
                Break(start=time(12, 45), end=time(13)),
            ],
        )
    ],
)


def berlin(h: int, mi: int = 0) -> datetime:
    return datetime(2024, 6, 5, h, mi, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday


def test_vorne_shift_golden() -> None:
    eng = OeeEngine("press-3", VORNE_CAL, ideal_cycle_time=1.0, program_cycle_times={})
    eng.on_state(berlin(6), X.ACTIVE, True, "p1", False, M.AUTOMATIC)
    eng.on_counts(berlin(6), 0, 0)
    eng.on_state(berlin(7), X.STOPPED, True, "p1", False, M.AUTOMATIC)  # 47 min stop
    eng.on_state(berlin(7, 47), X.ACTIVE, True, "p1", False, M.AUTOMATIC)
    eng.on_counts(berlin(14), 19271, 423)
    r = eng.window(berlin(6), berlin(14), now=berlin(14))
    assert r.pbt == 420 * 60
    assert r.apt == 373 * 60
    assert (r.pq, r.gq, r.scrap) == (19271, 18848, 423)
    assert r.availability == pytest.approx(373 / 420, abs=EPS)
    assert r.effectiveness == pytest.approx(19271 / 22380, abs=EPS)
    assert r.quality == pytest.approx(18848 / 19271, abs=EPS)
    assert r.oee == pytest.approx(18848 / 25200, abs=EPS)
    rounded = [round(x, 4) for x in (r.availability, r.effectiveness, r.quality, r.oee)]
    assert rounded == [0.8881, 0.8611, 0.9780, 0.7479]
    # Loss tree: the stop, speed loss, scrap; the machine ran through the breaks.
    assert r.losses.downtime[WAITING] == 47 * 60
    assert sum(r.losses.downtime.values()) == r.pbt - r.apt
    assert r.losses.speed_loss == pytest.approx(22380 - 19271, abs=EPS)
    assert (r.losses.scrap_count, r.losses.scrap_time) == (423, 423.0)
    assert r.unplanned_apt == 3600
    # PBT - downtime - speed loss - scrap time = valuable time = PRU x GQ
    assert r.pbt - 47 * 60 - r.losses.speed_loss - r.losses.scrap_time == pytest.approx(18848)
    # The running shift, asked mid-shift at 10:00.
    mid = eng.current_shift(berlin(10))
    assert mid is not None
    assert (mid.start, mid.pbt, mid.apt) == (berlin(6), 3.75 * 3600, (3.75 - 47 / 60) * 3600)
    assert eng.current_shift(berlin(15)) is None


# -- state classification (OPC 40501-1 Annex C) and loss tree ----------------------------


@pytest.mark.parametrize(
    ("execution", "available", "alarm", "mode", "expected"),
    [
        (X.ACTIVE, True, False, M.AUTOMATIC, RUNNING),
        (X.ACTIVE, True, False, None, RUNNING),
        (X.ACTIVE, True, False, M.SEMI_AUTOMATIC, RUNNING),
        (X.ACTIVE, True, True, M.AUTOMATIC, RUNNING),  # executing through a warning
        (X.ACTIVE, True, False, M.MDI, SETUP),
        (X.ACTIVE, True, False, M.MANUAL, SETUP),
        (X.READY, True, False, M.EDIT, SETUP),
        (X.ACTIVE, False, False, M.AUTOMATIC, UNAVAILABLE),
        (X.STOPPED, True, True, M.AUTOMATIC, ALARM),
        (X.ACTIVE, True, True, M.MDI, ALARM),
        (X.FEED_HOLD, True, False, M.AUTOMATIC, FEED_HOLD),
        (X.INTERRUPTED, True, False, M.AUTOMATIC, FEED_HOLD),
        (X.OPTIONAL_STOP, True, False, M.AUTOMATIC, FEED_HOLD),
        (X.READY, True, False, M.AUTOMATIC, WAITING),
        (X.WAIT, True, False, None, WAITING),
        (X.PROGRAM_STOPPED, True, False, None, WAITING),
        (X.PROGRAM_COMPLETED, True, False, None, WAITING),
        (None, True, False, None, WAITING),
    ],
)
def test_classify(
    execution: X | None, available: bool, alarm: bool, mode: M | None, expected: str
) -> None:
    assert classify(execution, available, alarm, mode) == expected


def test_loss_tree_by_reason() -> None:
    eng = OeeEngine("m", ALWAYS, 10.0, {})
    eng.on_state(at(0), X.ACTIVE, True, "a", False)
    eng.on_state(at(10), X.STOPPED, True, "a", True)  # alarm 5 min
    eng.on_state(at(15), X.FEED_HOLD, True, "a", False)  # 3
    eng.on_state(at(18), X.READY, True, None, False, M.MDI)  # setup 7
    eng.on_state(at(25), X.READY, True, None, False)  # waiting 10
    eng.on_state(at(35), None, False, None, False)  # unavailable 5
    eng.on_state(at(40), X.ACTIVE, True, "a", False)  # 20 running
    r = eng.window(at(0), at(60), now=at(60))
    assert r.apt == 30 * 60
    assert r.losses.downtime == {
        ALARM: 300,
        FEED_HOLD: 180,
        SETUP: 420,
        WAITING: 600,
        UNAVAILABLE: 300,
        NO_DATA: 0,
    }
    # Before the first event and after `now`, nothing is known.
    r = eng.window(at(-10), at(70), now=at(60))
    assert r.losses.downtime[NO_DATA] == 20 * 60
    assert sum(r.losses.downtime.values()) == r.pbt - r.apt


def test_pru_per_program_and_attribution_at_program_change() -> None:
    eng = OeeEngine("m", ALWAYS, ideal_cycle_time=20.0, program_cycle_times={"a": 10.0})
    eng.on_state(at(0), X.ACTIVE, True, "a", False)
    eng.on_counts(at(0), 0, 0)
    # At 10:00 program b starts and the counter shows a's last 60 parts: they are a's.
    eng.on_state(at(10), X.ACTIVE, True, "b", False)
    eng.on_counts(at(10), 60, 0)
    eng.on_counts(at(20), 90, 3)  # 30 parts of b, 3 bad
    r = eng.window(at(0), at(20), now=at(20))
    assert r.effective_time == 60 * 10 + 30 * 20
    assert (r.pq, r.gq) == (90, 87)
    assert r.losses.scrap_time == 3 * 20
    assert r.effectiveness == pytest.approx(1200 / 1200)
    # a count at t belongs to windows with start < t <= end
    assert eng.window(at(0), at(10)).pq == 60
    assert eng.window(at(10), at(20)).pq == 30


def test_no_ideal_cycle_time_leaves_effectiveness_unknown() -> None:
    eng = OeeEngine("m", ALWAYS, None, {"a": 5.0})
    eng.on_state(at(0), X.ACTIVE, True, "b", False)
    eng.on_counts(at(0), 0, 0)
    eng.on_counts(at(10), 10, 0)
    r = eng.window(at(0), at(10))
    assert (r.unrated_pq, r.effective_time, r.effectiveness, r.oee) == (10, None, None, None)
    assert r.losses.speed_loss is None
    assert r.availability == 1.0


def test_gap_is_unavailable_and_not_production() -> None:
    eng = OeeEngine("m", ALWAYS, 1.0, {})
    eng.on_state(at(0), X.ACTIVE, True, None, False)
    eng.on_counts(at(0), 100, 0)
    eng.on_counts(at(10), 700, 0)  # 600 parts in 10 min
    eng.on_gap(at(10), at(30))
    eng.on_counts(at(30), 5000, 7)  # jump over the gap: new baseline, not production
    eng.on_counts(at(40), 5600, 7)
    r = eng.window(at(0), at(40), now=at(40))
    assert r.apt == 600  # 00:00-00:10 only: nothing reported since the gap
    assert r.losses.downtime[UNAVAILABLE] == r.losses.gap == 1200
    assert r.losses.downtime[NO_DATA] == 600
    assert (r.pq, r.scrap) == (1200, 0)
    eng.on_state(at(40), X.ACTIVE, True, None, False)
    assert eng.window(at(0), at(50), now=at(50)).apt == 1200
    # A window asked while the gap is still open counts only what has happened.
    eng2 = OeeEngine("m", ALWAYS, 1.0, {})
    eng2.on_state(at(0), X.ACTIVE, True, None, False)
    eng2.on_gap(at(10), at(30))
    r2 = eng2.window(at(0), at(40), now=at(20))
    assert (r2.apt, r2.losses.gap, r2.losses.downtime[NO_DATA]) == (600, 600, 1200)


def test_parts_made_during_a_gap_are_booked_with_the_counters_at_both_ends() -> None:
    """Issue 12: parts made while the gateway was down used to vanish from every count."""
    eng = OeeEngine("m", ALWAYS, 1.0, {})
    eng.on_state(at(0), X.ACTIVE, True, None, False)
    eng.on_counts(at(0), 100, 0)
    eng.on_counts(at(10), 700, 2)
    eng.on_gap(at(10), at(30))
    # a restart mid-gap: the booking survives the engine's persistence
    eng = OeeEngine.from_state_dict(json.loads(json.dumps(eng.state_dict())), ALWAYS, 1.0, {})
    eng.on_counts(at(31), 5000, 7)
    eng.on_counts(at(40), 5600, 7)
    r = eng.window(at(0), at(40), now=at(40))
    assert (r.pq, r.scrap) == (1200, 2)  # unchanged: gap parts are not production
    (g,) = r.losses.gap_parts
    assert (g.start, g.end, g.parts, g.scrap) == (at(10), at(31), 4300, 5)
    assert (g.total_before, g.total_after, g.bad_before, g.bad_after) == (700, 5000, 2, 7)
    assert r.pq + r.unplanned_pq + g.parts == 5600 - 100  # reconciles with the machine
    assert r.as_dict()["losses"]["gap_parts"][0]["counter"] == [700, 5000]
    assert eng.window(at(0), at(30), now=at(40)).losses.gap_parts == ()  # booked at `end`
    # a gap with no earlier reading books nothing (no counter value to start from)
    fresh = OeeEngine("m", ALWAYS, 1.0, {})
    fresh.on_gap(at(0), at(5))
    fresh.on_counts(at(6), 10, 0)
    assert fresh.window(at(0), at(10), now=at(10)).losses.gap_parts == ()


def test_counter_reset_and_rollover() -> None:
    eng = OeeEngine("m", ALWAYS, 1.0, {}, counter_modulus=65536)
    eng.on_state(at(0), X.ACTIVE, True, None, False)
    for m, total in [(0, 65000), (1, 65530), (2, 4), (3, 20), (4, 3)]:
        eng.on_counts(at(m), total, 0)
    # 530 + rollover 10 + 16 + reset (to 0, then 3) 3
    assert eng.window(at(0), at(5)).pq == 559
    with pytest.raises(ValueError, match="negative"):
        eng.on_counts(at(6), -1, 0)


def test_apt_and_parts_outside_planned_time() -> None:
    cal = ShiftCalendar(
        shifts=[
            Shift(name="d", start=time(8), end=time(16), days=["mon", "tue", "wed", "thu", "fri"])
        ]
    )
    mon = datetime(2024, 6, 3, tzinfo=UTC)
    eng = OeeEngine("m", cal, 2.0, {})
    eng.on_state(at(7 * 60, mon), X.ACTIVE, True, None, False)
    eng.on_counts(at(7 * 60, mon), 0, 0)
    eng.on_counts(at(8 * 60, mon), 1000, 0)  # made before the shift
    eng.on_counts(at(16 * 60, mon), 9000, 10)  # in the shift (a count covers the time before)
    eng.on_counts(at(17 * 60, mon), 9500, 10)  # overtime
    r = eng.window(mon, mon + timedelta(days=1), now=at(17 * 60, mon))
    assert (r.pbt, r.apt, r.unplanned_apt) == (8 * 3600, 8 * 3600, 2 * 3600)
    assert (r.pq, r.scrap, r.unplanned_pq) == (8000, 10, 1500)
    assert r.availability == 1.0
    # Saturday: nothing planned, so no ratio has a denominator.
    sat = eng.window(mon + timedelta(days=5), mon + timedelta(days=6), now=at(17 * 60, mon))
    assert (sat.pbt, sat.availability, sat.effectiveness, sat.quality, sat.oee) == (
        0,
        None,
        None,
        None,
        None,
    )


def test_compute_edge_cases() -> None:
    assert compute(0, 0, 0, 0, 0) == compute(0, 0, None, 0, 0)
    c = compute(3600, 0, None, 0, 0)
    assert (c.availability, c.effectiveness, c.quality, c.oee) == (0.0, None, None, 0.0)
    c = compute(3600, 1800, 900, 90, 0)
    assert (c.availability, c.effectiveness, c.quality, c.oee) == (0.5, 0.5, 0.0, 0.0)
    c = compute(3600, 1800, None, 90, 90)
    assert (c.effectiveness, c.oee) == (None, None)


def _polled(phase_ms: int, poll_ms: int, last_ms: int) -> OeeResult:
    """A machine joined an hour into the shift, read every `poll_ms` from `phase_ms` to
    `last_ms` after the join: 1.5 s cutting, then 0.5 s loading, one part per 2 s (the demo's
    30 s part at time_scale 20), at exactly its ideal cycle of 1.5 s; 500 parts before."""
    eng = OeeEngine("m", ALWAYS, ideal_cycle_time=1.5, program_cycle_times={})
    join = at(60)
    for t in range(phase_ms, last_ms + 1, poll_ms):
        when = join + timedelta(milliseconds=t)
        eng.on_state(when, X.ACTIVE if t % 2000 < 1500 else X.READY, True, None, False)
        eng.on_counts(when, 500 + (t + 500) // 2000, 0)
    end = join + timedelta(milliseconds=last_ms)
    return eng.window(at(0), end, now=end)


def test_effectiveness_of_a_short_window_is_as_exact_as_the_state_is_read() -> None:
    """Why the demo reads above 100 % in its first minute (README): parts and running time
    are counted over the same observed time (the hour before the join adds neither: the
    counter's first reading is a baseline, and no state means `no_data`), but a state
    change is seen only at the next read. Read each 0.1 s, the running time is exact, and
    E is above 1 only by the first part, whose cutting began before the join (0.6 of its
    1.5 s seen). Read each second, the reads fall at 0.9 s (cutting) and 1.9 s (loading) of
    every cycle: 1 s running per part, E = 1.5; at 0.4 s and 1.4 s both read cutting,
    loading is never seen: E = 0.73. The counter is exact whatever the phase."""
    fine = _polled(900, 100, 39_900)
    assert (fine.pq, fine.apt) == (20, pytest.approx(0.6 + 19 * 1.5))
    assert fine.effectiveness == pytest.approx(20 * 1.5 / 29.1)  # 1.031
    assert fine.losses.downtime[NO_DATA] == pytest.approx(3600 + 0.9)  # before the join
    late = _polled(900, 1000, 39_900)  # reads at 0.9 s and 1.9 s of each 2 s cycle
    assert (late.pq, late.apt) == (20, pytest.approx(20 * 1.0))
    assert late.effectiveness == pytest.approx(1.5)
    early = _polled(400, 1000, 39_400)  # reads at 0.4 s and 1.4 s: always cutting
    assert (early.pq, early.apt) == (19, pytest.approx(39.0))
    assert early.effectiveness == pytest.approx(19 * 1.5 / 39)  # 0.731


def test_late_events_are_taken_at_the_clock() -> None:
    eng = OeeEngine("m", ALWAYS, 1.0, {})
    eng.on_state(at(0), X.ACTIVE, True, None, False)
    eng.on_state(at(10), X.READY, True, None, False)
    eng.on_state(at(5), X.ACTIVE, True, None, False)  # late: applies at 00:10, and ties
    assert eng.clock == at(10)
    r = eng.window(at(0), at(20), now=at(20))
    assert r.apt == 600  # READY wins the tie at 00:10 (worse news wins)


def test_helpers_and_naive_times() -> None:
    eng = flux_engine()
    assert eng.last(at(240), timedelta(hours=1)).apt == 3600
    assert eng.today(at(240)).apt == 3 * 3600
    with pytest.raises(ValueError, match="timezone-aware"):
        eng.on_counts(datetime(2021, 3, 22), 1, 0)
    with pytest.raises(ValueError, match="before its start"):
        eng.window(at(10), at(0))


def test_prune_and_state_dict_json() -> None:
    eng = flux_engine()
    state = json.loads(json.dumps(eng.state_dict()))
    back = OeeEngine.from_state_dict(state, ALWAYS, 30.0, {})
    assert back.window(at(0), at(240), now=at(240)) == eng.window(at(0), at(240), now=at(240))
    eng.prune(at(90))
    assert eng.window(at(90), at(240), now=at(240)) == back.window(at(90), at(240), now=at(240))
    assert eng.window(at(0), at(240), now=at(240)).apt == 1.5 * 3600  # 00:30 + 01:00
    with pytest.raises(ValueError, match="version"):
        OeeEngine.from_state_dict({**state, "version": 99}, ALWAYS, 30.0, {})


def test_as_dict_is_json() -> None:
    d = flux_engine().window(at(0), at(240), now=at(240)).as_dict()
    assert json.loads(json.dumps(d))["losses"]["downtime"][WAITING] == 3600
    assert d["start"] == "2021-03-22T00:00:00+00:00"


# -- properties ---------------------------------------------------------------------------

PCAL = ShiftCalendar(
    timezone="Europe/Berlin",
    holidays=[date(2024, 3, 29)],
    shifts=[
        Shift(
            name="day", start=time(6), end=time(14), breaks=[Break(start=time(9), end=time(9, 30))]
        ),
        Shift(
            name="night",
            start=time(22),
            end=time(6),
            days=["thu", "fri", "sat"],
            breaks=[Break(start=time(2), end=time(2, 20))],
        ),
    ],
)
PBASE = datetime(2024, 3, 28, 4, tzinfo=UTC)  # covers a holiday and the spring-forward night
SPAN = 4 * 24 * 60  # minutes


@dataclass(frozen=True)
class Ev:
    kind: str  # "state" | "counts" | "gap"
    args: tuple[object, ...]


states = st.builds(
    lambda e, a, p, al, m: Ev("state", (e, a, p, al, m)),
    st.none() | st.sampled_from(X),
    st.booleans(),
    st.none() | st.sampled_from(["a", "b", "c"]),
    st.booleans(),
    st.none() | st.sampled_from(M),
)
counts = st.builds(lambda t, b: Ev("counts", (t, b)), st.integers(0, 5000), st.integers(0, 300))
gaps = st.builds(lambda d: Ev("gap", (d,)), st.integers(1, 600))
# timestamps in minutes, grouped: each group is a set of events at one instant
groups = st.lists(
    st.tuples(st.integers(0, 240), st.lists(states | counts | gaps, min_size=1, max_size=4)),
    max_size=25,
)


def feed(eng: OeeEngine, timeline: list[tuple[int, list[Ev]]]) -> None:
    for minute, evs in timeline:
        t = PBASE + timedelta(minutes=minute)
        for ev in evs:
            if ev.kind == "state":
                e, a, p, al, m = ev.args
                eng.on_state(t, e, a, p, al, m)  # type: ignore[arg-type]
            elif ev.kind == "counts":
                eng.on_counts(t, *ev.args)  # type: ignore[arg-type]
            else:
                eng.on_gap(t, t + timedelta(minutes=ev.args[0]))  # type: ignore[operator]


def timeline_of(spec: list[tuple[int, list[Ev]]]) -> list[tuple[int, list[Ev]]]:
    """Turn (step, events) pairs into increasing timestamps (step 0 = same instant)."""
    out: list[tuple[int, list[Ev]]] = []
    minute = 0
    for step, evs in spec:
        minute += step * 3 + (step % 7)  # irregular spacing across the calendar
        if out and out[-1][0] == minute:
            out[-1] = (minute, out[-1][1] + evs)
        else:
            out.append((minute, evs))
    return out


def engine(spec: list[tuple[int, list[Ev]]]) -> OeeEngine:
    eng = OeeEngine("m", PCAL, 1.5, {"a": 0.5, "b": 2.0}, counter_modulus=4096)
    feed(eng, timeline_of(spec))
    return eng


NOW = PBASE + timedelta(minutes=SPAN)
minute_pts = st.integers(0, SPAN)


def tw(minute: int) -> datetime:
    return PBASE + timedelta(minutes=minute, seconds=minute % 13)


@settings(max_examples=150, deadline=None)
@given(groups, minute_pts, minute_pts)
def test_ratios_stay_in_range(spec: list[tuple[int, list[Ev]]], x: int, y: int) -> None:
    r = engine(spec).window(tw(min(x, y)), tw(max(x, y)), now=NOW)
    assert r.availability is None or 0 <= r.availability <= 1
    assert r.quality is None or 0 <= r.quality <= 1
    assert r.effectiveness is None or r.effectiveness >= 0
    assert 0 <= r.apt <= r.pbt
    assert 0 <= r.gq <= r.pq
    assert all(v >= 0 for v in r.losses.downtime.values())
    assert sum(r.losses.downtime.values()) == pytest.approx(r.pbt - r.apt, abs=1e-6)


def _elements(r: OeeResult) -> list[float]:
    return [
        r.pbt,
        r.apt,
        r.pq,
        r.scrap,
        r.unplanned_apt,
        r.unplanned_pq,
        r.losses.gap,
        *(r.losses.downtime[k] for k in DOWNTIME_REASONS),
        r.effective_time or 0.0,
    ]


@settings(max_examples=150, deadline=None)
@given(groups, minute_pts, minute_pts, minute_pts)
def test_split_windows_add_up(spec: list[tuple[int, list[Ev]]], x: int, y: int, z: int) -> None:
    eng = engine(spec)
    a, b, c = (tw(v) for v in sorted((x, y, z)))
    whole = _elements(eng.window(a, c, now=NOW))
    parts = [
        p + q
        for p, q in zip(
            _elements(eng.window(a, b, now=NOW)), _elements(eng.window(b, c, now=NOW)), strict=True
        )
    ]
    assert parts == pytest.approx(whole, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(groups, st.data())
def test_order_within_a_timestamp_does_not_matter(
    spec: list[tuple[int, list[Ev]]], data: st.DataObject
) -> None:
    shuffled = [(step, data.draw(st.permutations(evs))) for step, evs in spec]
    one, two = engine(spec), engine(shuffled)
    assert one.window(PBASE, NOW, now=NOW) == two.window(PBASE, NOW, now=NOW)
    mid = PBASE + timedelta(hours=20)
    assert one.window(PBASE, mid, now=NOW) == two.window(PBASE, mid, now=NOW)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=40),
    st.none() | st.sampled_from([256, 65536]),
)
def test_counter_deltas_never_negative(readings: list[tuple[int, int]], mod: int | None) -> None:
    eng = OeeEngine("m", ALWAYS, 1.0, {}, counter_modulus=mod)
    for i, (total, bad) in enumerate(readings):
        eng.on_counts(at(i), total, bad)
    eng.advance(at(len(readings)))
    assert all(dt >= 0 and db >= 0 for _, _, dt, db in eng.state_dict()["counts"])
    r = eng.window(at(-1), at(len(readings)))
    assert r.pq >= 0
    assert r.scrap >= 0


@settings(max_examples=100, deadline=None)
@given(groups, groups)
def test_state_dict_round_trip(
    first: list[tuple[int, list[Ev]]], rest: list[tuple[int, list[Ev]]]
) -> None:
    eng = engine(first)
    state = json.loads(json.dumps(eng.state_dict()))
    back = OeeEngine.from_state_dict(state, PCAL, 1.5, {"a": 0.5, "b": 2.0}, counter_modulus=4096)
    assert back.state_dict() == eng.state_dict()
    assert back.window(PBASE, NOW, now=NOW) == eng.window(PBASE, NOW, now=NOW)
    # ...and both continue identically (restart mid-shift loses nothing).
    last = timeline_of(first)[-1][0] if first else 0
    later = [(m + last, evs) for m, evs in timeline_of(rest)]
    feed(eng, later)
    feed(back, later)
    assert back.window(PBASE, NOW, now=NOW) == eng.window(PBASE, NOW, now=NOW)
