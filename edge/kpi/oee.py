"""OEE by ISO 22400-2, computed at the source from machine-state and counter events.

    A = APT / PBT      E = sum_i(PRU_i x PQ_i) / APT      Q = GQ / PQ      OEE = A x E x Q

The engine is a pure, deterministic fold: the runner feeds it events with their own
(timezone-aware) timestamps and asks for windows; it never reads a clock, does no I/O and
no asyncio. See docs/oee.md for the definitions and worked examples.

How it accumulates: the state is piecewise constant between events, so the engine keeps
one record per state interval (start, end, loss class, program) and one per counter
increment (time, program, +total, +bad). A window sums the records it overlaps, clipped
exactly at its edges and masked by the planned busy time of the shift calendar, so "current
shift", "last hour", "today" or any range cost O(log n + records in the window), and
splitting a window anywhere gives parts that add up to the whole. Times are integer
microseconds, so those sums are exact. `state_dict()` is the whole engine as plain JSON;
a restart mid-shift restores it and loses nothing.

Decisions (each one is tested):

* APT is executing *and* processing, OPC 40501-1 Annex C (Signal Mapping): `Execution.ACTIVE`
  in automatic, semi-automatic or unknown mode. ACTIVE in manual/MDI/edit mode is setup.
* APT, PQ and GQ count only inside planned busy time (ISO 22400: APT is part of PBT);
  running time and parts outside it are reported as `unplanned_apt` / `unplanned_pq`.
* A counter increment reported at `t` is production of the time before `t`: it belongs to
  the program in force just before `t` and to windows with start < t <= end.
* Events with equal timestamps are held until time moves on, then applied in a canonical
  order, so their arrival order never matters: counter readings first (ascending), then the
  state reports, of which the worst wins (gap > unavailable > alarm > feed_hold > setup >
  waiting > running > no_data; ties by program name).
* An event older than the newest one seen is taken as happening at the newest time.
* `on_gap(start, end)`: the gateway was down. The interval is unavailable downtime (and is
  also reported as `losses.gap`); the counter is re-baselined, so parts made while nobody
  watched are not production; the state is unknown (`no_data`) until the next report.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from models.machine_state import ControllerMode, Execution
from models.plant import ShiftCalendar
from models.sample import format_ts
from models.shift_calendar import planned_intervals, shift_at

RUNNING = "running"
ALARM = "alarm"
FEED_HOLD = "feed_hold"
SETUP = "setup"
WAITING = "waiting"
UNAVAILABLE = "unavailable"
GAP = "gap"
NO_DATA = "no_data"
DOWNTIME_REASONS = (ALARM, FEED_HOLD, SETUP, WAITING, UNAVAILABLE, NO_DATA)
"""Keys of `LossTree.downtime`; `GAP` time is reported under `UNAVAILABLE`."""

# Tie-break among state reports with one timestamp: the lowest rank (the worst news) wins.
_RANK = {
    c: i
    for i, c in enumerate((GAP, UNAVAILABLE, ALARM, FEED_HOLD, SETUP, WAITING, RUNNING, NO_DATA))
}
_PAUSED = frozenset({Execution.FEED_HOLD, Execution.INTERRUPTED, Execution.OPTIONAL_STOP})
_SETUP_MODES = frozenset({ControllerMode.MANUAL, ControllerMode.MDI, ControllerMode.EDIT})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STATE_VERSION = 1

_State = tuple[str, str | None]  # (loss class, program)
_Seg = tuple[int, int, str, str | None]  # [start, end) in µs, class, program
_Count = tuple[int, str | None, int, int]  # time in µs, program, +total, +bad
# gap start and first reading after it (µs), total before/after, bad before/after
_GapSpan = tuple[int, int, int, int, int, int]


class _Settled(NamedTuple):
    """What the pending events would commit (see `OeeEngine._settle`)."""

    segs: list[_Seg]
    counts: list[_Count]
    cur: _State | None
    since: int
    last_total: int | None
    last_bad: int | None
    gap_base: tuple[int, int, int] | None
    gap_parts: list[_GapSpan]


def classify(
    execution: Execution | None, available: bool, alarm: bool, mode: ControllerMode | None = None
) -> str:
    """The loss class of one machine state (RUNNING is APT, the rest are downtime reasons).

    A machine that executes in automatic mode produces even with a (warning) alarm active,
    as in the OPC 40501-1 mapping, which looks only at Executing and Processing.
    """
    if not available:
        return UNAVAILABLE
    setup_mode = mode in _SETUP_MODES
    if execution == Execution.ACTIVE and not setup_mode:
        return RUNNING
    if alarm:
        return ALARM
    if execution in _PAUSED:
        return FEED_HOLD
    if setup_mode:
        return SETUP
    return WAITING  # ready, wait, stopped, program_stopped, program_completed, unknown


@dataclass(frozen=True, slots=True)
class Ratios:
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None


def compute(pbt: float, apt: float, pru_pq: float | None, pq: float, gq: float) -> Ratios:
    """ISO 22400-2 ratios; a ratio is None when its denominator is 0 (or PRU is unknown).

    OEE is 0 as soon as one factor is 0 (whatever the others), else None if one is unknown.
    Effectiveness is not clamped: above 1 means the ideal cycle time is set too slow.
    """
    a = apt / pbt if pbt > 0 else None
    e = pru_pq / apt if pru_pq is not None and apt > 0 else None
    q = gq / pq if pq > 0 else None
    factors = (a, e, q)
    if any(f == 0 for f in factors):
        oee: float | None = 0.0
    elif a is None or e is None or q is None:
        oee = None
    else:
        oee = a * e * q
    return Ratios(a, e, q, oee)


def observed_share(pbt: float, no_data: float, gap: float) -> float | None:
    """The share of planned busy time the gateway watched: 1 - (no_data + gap) / PBT, or
    None without PBT.

    Why it exists: by the rules above, planned time nobody observed is downtime (`no_data`
    before the first report and after a gap, `losses.gap` while the gateway was down), so a
    shift that began before the gateway started shows a low availability. This figure says
    how much of PBT the ratios rest on; both inputs are in every `oee` record
    (`time.pbt`, `time.downtime.no_data`, `losses.gap`), so a reader computes the same."""
    if pbt <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - (no_data + gap) / pbt))


@dataclass(frozen=True, slots=True)
class LossTree:
    """Where the planned busy time went, in seconds (the six big losses, as measured)."""

    downtime: dict[str, float]  # by DOWNTIME_REASONS, inside PBT; sums to PBT - APT
    gap: float  # the part of downtime["unavailable"] when the gateway was down
    speed_loss: float | None  # APT - sum(PRU_i x PQ_i); None without PRU
    scrap_count: int
    scrap_time: float | None  # sum(PRU_i x scrap_i)
    gap_parts: tuple[GapParts, ...] = ()  # parts made while the gateway was down; not in PQ


@dataclass(frozen=True, slots=True)
class GapParts:
    """Parts the machine's own counters say were made while the gateway was down: the counter
    values when the gap began and at the first reading after it. Not in PQ (their running
    time is in the gap, not APT), but booked, so a platform can reconcile the OEE record with
    the machine's counter: counter delta over a window = pq + unplanned_pq + sum(gap parts)."""

    start: datetime  # the gap began (last reading before it was the counter `before`)
    end: datetime  # the first counter reading after the gap
    total_before: int
    total_after: int
    bad_before: int
    bad_after: int
    parts: int  # with the engine's reset/rollover rules
    scrap: int

    def as_record(self) -> dict[str, Any]:
        return {
            "from": format_ts(self.start),
            "to": format_ts(self.end),
            "parts": self.parts,
            "scrap": self.scrap,
            "counter": [self.total_before, self.total_after],
            "bad_counter": [self.bad_before, self.bad_after],
        }


@dataclass(frozen=True, slots=True)
class OeeResult:
    asset: str
    start: datetime
    end: datetime
    pbt: float  # seconds of planned busy time (or the caller's override)
    apt: float  # seconds executing inside PBT
    pq: int  # produced quantity inside PBT
    gq: int  # good quantity: pq - scrap, not below 0
    scrap: int
    effective_time: float | None  # sum(PRU_i x PQ_i) in seconds; None if some PQ has no PRU
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None
    losses: LossTree
    unplanned_apt: float  # seconds executing outside PBT (overtime, breaks): not in A
    unplanned_pq: int  # parts counted outside PBT: not in E or Q
    unrated_pq: int  # parts of programs with no ideal cycle time (E is then None)

    @property
    def performance(self) -> float | None:
        """Common name of ISO 22400 effectiveness."""
        return self.effectiveness

    @property
    def observed(self) -> float | None:
        """The share of PBT the gateway watched (`observed_share`)."""
        return observed_share(self.pbt, self.losses.downtime.get(NO_DATA, 0.0), self.losses.gap)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form for records and query replies."""
        d = {k: getattr(self, k) for k in self.__slots__}
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        d["losses"] = {k: getattr(self.losses, k) for k in LossTree.__slots__}
        d["losses"]["gap_parts"] = [g.as_record() for g in self.losses.gap_parts]
        return d


def _us(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {t.isoformat()}")
    return (t - _EPOCH) // _US


def _dt(us: int) -> datetime:
    return _EPOCH + us * _US


def _delta(last: int | None, value: int, modulus: int | None) -> int:
    """Non-negative increment of a cumulative counter (CounterTracker's rules).

    Rollover uses `% modulus`, so a reading wider than the register (a misconfigured
    modulus) still cannot give a negative increment.
    """
    if last is None:
        return 0  # first reading is the baseline
    if value >= last:
        return value - last
    if modulus is not None and last - value > modulus // 2:
        return (value - last) % modulus  # rollover of a fixed-width register
    return value  # reset to zero, then counted up to `value`


def _tie_key(s: _State) -> tuple[int, bool, str]:
    return _RANK[s[0]], s[1] is not None, s[1] or ""


class OeeEngine:
    """Folds one asset's state and counter events into time and count records; see module doc."""

    def __init__(
        self,
        asset: str,
        calendar: ShiftCalendar,
        ideal_cycle_time: float | None,
        program_cycle_times: dict[str, float] | None = None,
        *,
        counter_modulus: int | None = None,
    ) -> None:
        self.asset = asset
        self.calendar = calendar
        self.ideal_cycle_time = ideal_cycle_time
        self.program_cycle_times = dict(program_cycle_times or {})
        self.counter_modulus = counter_modulus
        self._segs: list[_Seg] = []
        self._counts: list[_Count] = []
        self._cur: _State | None = None  # None only before the first state report
        self._since = 0
        self._last_total: int | None = None
        self._last_bad: int | None = None
        self._pt: int | None = None  # timestamp of the pending events = the engine's clock
        self._pstates: list[_State] = []
        self._pcounts: list[tuple[int, int]] = []
        self._gap_end: int | None = None  # end of a gap whose start is pending or current
        # counters (total, bad) and time when the last gap began, until the next reading
        self._gap_base: tuple[int, int, int] | None = None
        self._gap_parts: list[_GapSpan] = []

    # -- inputs ---------------------------------------------------------------------------

    def on_state(  # noqa: PLR0917 (the documented event signature)
        self,
        t: datetime,
        execution: Execution | None,
        available: bool,
        program: str | None,
        alarm: bool = False,
        mode: ControllerMode | None = None,
    ) -> None:
        """The machine state from `t` on (alarm includes emergency stop)."""
        self._at(t)
        self._pstates.append((classify(execution, available, alarm, mode), program or None))

    def on_counts(self, t: datetime, total: int, bad: int) -> None:
        """Cumulative part counters read at `t` (total includes bad)."""
        if total < 0 or bad < 0:
            raise ValueError(f"cumulative counters cannot be negative: total={total}, bad={bad}")
        self._at(t)
        self._pcounts.append((total, bad))

    def on_gap(self, start: datetime, end: datetime) -> None:
        """The gateway did not observe the machine in [start, end) (it was down)."""
        s, e = self._at(start), _us(end)
        if e <= s:
            return
        self._pstates.append((GAP, None))
        # The clock does not jump to `end`, so more events at `start` still tie-break fairly.
        self._gap_end = e if self._gap_end is None else max(e, self._gap_end)

    def advance(self, t: datetime) -> None:
        """Move the clock to `t` without an event: settles the events before `t`."""
        self._at(t)

    @property
    def clock(self) -> datetime | None:
        """The newest time the engine was told about."""
        return None if self._pt is None else _dt(self._pt)

    def _at(self, t: datetime) -> int:
        us = _us(t)
        if self._pt is None:
            self._pt = us
        elif us > self._pt:
            self._commit()
            ge = self._gap_end  # always > the old clock
            if ge is not None and ge <= us:  # the gap ends: state unknown unless reported
                self._gap_end, self._pt = None, ge
                if self._cur is not None and self._cur[0] == GAP:
                    self._pstates.append((NO_DATA, None))
                if us > ge:
                    self._commit()
            self._pt = us
        return self._pt

    def _settle(self) -> _Settled:
        """Apply the pending events (all at `_pt`) without mutating: closed segment, new
        counts, state and counter baselines after them, and the parts a gap hid."""
        t = self._pt
        cur, since, lt, lb = self._cur, self._since, self._last_total, self._last_bad
        segs: list[_Seg] = []
        counts: list[_Count] = []
        gb = self._gap_base
        spans: list[_GapSpan] = []
        if t is None:
            return _Settled(segs, counts, cur, since, lt, lb, gb, spans)
        program = cur[1] if cur else None
        for total, bad in sorted(self._pcounts):
            if lt is None and gb is not None:  # first reading after a gap: book what it hid
                spans.append((gb[2], t, gb[0], total, gb[1], bad))
                gb = None
            dt, db = _delta(lt, total, self.counter_modulus), _delta(lb, bad, self.counter_modulus)
            lt, lb = total, bad
            if dt or db:
                counts.append((t, program, dt, db))
        if self._pstates:
            new = min(self._pstates, key=_tie_key)
            if new != cur:
                if cur is not None and t > since:
                    segs.append((since, t, cur[0], cur[1]))
                cur, since = new, t
            if new[0] == GAP:
                if lt is not None and lb is not None:
                    gb = (lt, lb, t)
                lt = lb = None
        return _Settled(segs, counts, cur, since, lt, lb, gb, spans)

    def _commit(self) -> None:
        st = self._settle()
        self._cur, self._since = st.cur, st.since
        self._last_total, self._last_bad = st.last_total, st.last_bad
        self._gap_base = st.gap_base
        self._segs.extend(st.segs)
        self._counts.extend(st.counts)
        self._gap_parts.extend(st.gap_parts)
        self._pstates, self._pcounts = [], []

    # -- windows --------------------------------------------------------------------------

    def segments(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        """The loss class of each stretch of [start, end), clipped, the current state up to
        `end`: the status page draws the shift's state timeline from it. Walks back from
        the newest segment, so a short window costs little however long the history."""
        s, e = _us(start), _us(end)
        settled = self._settle()
        pending, cur, since = settled.segs, settled.cur, settled.since
        open_seg: list[_Seg] = [(since, e, cur[0], cur[1])] if cur is not None else []
        out: list[tuple[datetime, datetime, str]] = []
        for a, b, cls, _program in reversed([*self._segs, *pending, *open_seg]):
            if b <= s:
                break
            if a < e and b > a:
                out.append((_dt(max(a, s)), _dt(min(b, e)), cls))
        out.reverse()
        return out

    def pru(self, program: str | None) -> float | None:
        """Ideal cycle time in seconds per part: the program's when known, else the machine's."""
        if program is not None and program in self.program_cycle_times:
            return self.program_cycle_times[program]
        return self.ideal_cycle_time

    def window(
        self,
        start: datetime,
        end: datetime,
        *,
        now: datetime | None = None,
        pbt: float | None = None,
    ) -> OeeResult:
        """OEE of [start, end).

        The current state is taken to last until `now` (default: the engine's clock); later
        time in the window counts as `no_data`, so ask for a running shift with end=now.
        `pbt` overrides the calendar's planned busy time (seconds) as the denominator of A,
        for callers that plan outside the calendar; the planned mask still comes from it.
        """
        ws, we = _us(start), _us(end)
        if we < ws:
            raise ValueError("window end is before its start")
        plan = [(_us(a), _us(b)) for a, b in planned_intervals(self.calendar, start, end)]
        p_starts = [a for a, _ in plan]
        p_cum = [0]
        for a, b in plan:
            p_cum.append(p_cum[-1] + b - a)

        def planned_before(x: int) -> int:  # planned µs in [ws, x)
            j = bisect_right(p_starts, x)
            return 0 if j == 0 else p_cum[j - 1] + min(x, plan[j - 1][1]) - plan[j - 1][0]

        def is_planned(x: int) -> bool:  # a count at x covers the time just before x
            j = bisect_left(p_starts, x)
            return j > 0 and x <= plan[j - 1][1]

        settled = self._settle()
        new_segs, new_counts, cur, since = settled.segs, settled.counts, settled.cur, settled.since
        segs: list[_Seg] = []
        for k in range(bisect_right(self._segs, ws, key=lambda s: s[1]), len(self._segs)):
            if self._segs[k][0] >= we:
                break
            segs.append(self._segs[k])
        segs.extend(new_segs)
        if cur is not None and self._pt is not None:
            until = max(self._pt, _us(now) if now is not None else self._pt)
            if cur[0] == GAP and self._gap_end is not None:
                until = min(until, self._gap_end)
            segs.append((since, until, cur[0], cur[1]))

        planned_us = dict.fromkeys(_RANK, 0)
        unplanned_apt = 0
        for s, e, cls, _prog in segs:
            a, b = max(s, ws), min(e, we)
            if b > a:
                p = planned_before(b) - planned_before(a)
                planned_us[cls] += p
                if cls == RUNNING:
                    unplanned_apt += b - a - p

        lo = bisect_right(self._counts, ws, key=lambda c: c[0])
        hi = bisect_right(self._counts, we, key=lambda c: c[0])
        made: dict[str | None, list[int]] = {}
        unplanned_pq = 0
        for t, prog, dt, db in self._counts[lo:hi] + [c for c in new_counts if ws < c[0] <= we]:
            if is_planned(t):
                acc = made.setdefault(prog, [0, 0])
                acc[0] += dt
                acc[1] += db
            else:
                unplanned_pq += dt

        pq = sum(v[0] for v in made.values())
        scrap = sum(v[1] for v in made.values())
        gq = max(pq - scrap, 0)
        effective = scrap_time = 0.0
        unrated = 0
        for prog in sorted(made, key=lambda p: (p is not None, p or "")):
            pru = self.pru(prog)
            if pru is None:
                unrated += made[prog][0]
            else:
                effective += pru * made[prog][0]
                scrap_time += pru * made[prog][1]
        rated = unrated == 0

        cal_pbt = p_cum[-1]
        apt_us = planned_us[RUNNING]
        down = {r: planned_us[r] / 1e6 for r in (ALARM, FEED_HOLD, SETUP, WAITING)}
        down[UNAVAILABLE] = (planned_us[UNAVAILABLE] + planned_us[GAP]) / 1e6
        pbt_s = cal_pbt / 1e6 if pbt is None else float(pbt)
        if pbt is None:  # exact in µs: planned time no record covers is no_data
            covered = sum(v for r, v in planned_us.items() if r != NO_DATA)
            down[NO_DATA] = (cal_pbt - covered) / 1e6
        else:
            down[NO_DATA] = max(0.0, pbt_s - apt_us / 1e6 - sum(down.values()))
        apt_s = apt_us / 1e6
        ratios = compute(pbt_s, apt_s, effective if rated else None, pq, gq)
        return OeeResult(
            asset=self.asset,
            start=start,
            end=end,
            pbt=pbt_s,
            apt=apt_s,
            pq=pq,
            gq=gq,
            scrap=scrap,
            effective_time=effective if rated else None,
            availability=ratios.availability,
            effectiveness=ratios.effectiveness,
            quality=ratios.quality,
            oee=ratios.oee,
            losses=LossTree(
                downtime={r: down[r] for r in DOWNTIME_REASONS},
                gap=planned_us[GAP] / 1e6,
                speed_loss=apt_s - effective if rated else None,
                scrap_count=scrap,
                scrap_time=scrap_time if rated else None,
                gap_parts=tuple(
                    self._gap_parts_of(g)
                    for g in [*self._gap_parts, *settled.gap_parts]
                    if ws < g[1] <= we
                ),
            ),
            unplanned_apt=unplanned_apt / 1e6,
            unplanned_pq=unplanned_pq,
            unrated_pq=unrated,
        )

    def _gap_parts_of(self, span: _GapSpan) -> GapParts:
        start, end, t0, t1, b0, b1 = span
        mod = self.counter_modulus
        return GapParts(_dt(start), _dt(end), t0, t1, b0, b1, _delta(t0, t1, mod),
                        _delta(b0, b1, mod))

    def current_shift(self, now: datetime) -> OeeResult | None:
        """The running shift from its start to `now`; None between shifts."""
        shift = shift_at(self.calendar, now)
        return None if shift is None else self.window(shift.start, now, now=now)

    def last(self, now: datetime, duration: timedelta) -> OeeResult:
        """The `duration` up to `now` (e.g. the last hour)."""
        return self.window(now - duration, now, now=now)

    def today(self, now: datetime) -> OeeResult:
        """From local midnight (calendar time zone) to `now`."""
        tz = ZoneInfo(self.calendar.timezone)
        midnight = datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)
        return self.window(midnight, now, now=now)

    # -- persistence ----------------------------------------------------------------------

    def prune(self, before: datetime) -> None:
        """Forget records before `before` (windows starting earlier become incomplete)."""
        b = _us(before)
        self._segs = [(max(s, b), e, c, p) for s, e, c, p in self._segs if e > b]
        self._counts = [c for c in self._counts if c[0] > b]
        self._gap_parts = [g for g in self._gap_parts if g[1] > b]

    def state_dict(self) -> dict[str, Any]:
        """Everything the engine knows, as plain JSON (ints, strings, lists, None).

        Configuration (calendar, cycle times) is not included: it comes from the plant YAML,
        so a corrected ideal cycle time also corrects stored history.
        """
        return self.export_since(None)[0]

    def export_since(self, cursor: int | None) -> tuple[dict[str, Any], int | None]:
        """`state_dict()` with only the segments and counts committed after `cursor`, and
        the cursor to pass next time (None: export everything).

        For incremental persistence (edge/kpi/store.py): records are committed at strictly
        increasing instants (the clock only moves forward, and one commit closes everything
        of one instant), so the instant of the newest committed record splits them exactly
        into "already exported" and "new". The records of successive exports, concatenated,
        plus the other fields of the last one, are `state_dict()`; `from_state_dict` takes
        them. Pending same-instant events are not records yet: they travel in the other
        fields until time moves on. `prune` does not move the cursor.
        """
        segs, counts = self._segs, self._counts
        if cursor is not None:
            segs = segs[bisect_right(segs, cursor, key=lambda s: s[1]) :]
            counts = counts[bisect_right(counts, cursor, key=lambda c: c[0]) :]
        marks = [cursor, segs[-1][1] if segs else None, counts[-1][0] if counts else None]
        state = {
            "version": _STATE_VERSION,
            "asset": self.asset,
            "segments": [list(s) for s in segs],
            "counts": [list(c) for c in counts],
            "current": None if self._cur is None else list(self._cur),
            "since": self._since,
            "last_total": self._last_total,
            "last_bad": self._last_bad,
            "pending_time": self._pt,
            "pending_states": [list(s) for s in self._pstates],
            "pending_counts": [list(c) for c in self._pcounts],
            "gap_end": self._gap_end,
            "gap_base": None if self._gap_base is None else list(self._gap_base),
            "gap_parts": [list(g) for g in self._gap_parts],
        }
        return state, max((m for m in marks if m is not None), default=None)

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, Any],
        calendar: ShiftCalendar,
        ideal_cycle_time: float | None,
        program_cycle_times: dict[str, float] | None = None,
        *,
        counter_modulus: int | None = None,
    ) -> OeeEngine:
        """Rebuild an engine saved with `state_dict()` (after a restart)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported OEE state version {state.get('version')!r}")
        eng = cls(
            state["asset"],
            calendar,
            ideal_cycle_time,
            program_cycle_times,
            counter_modulus=counter_modulus,
        )
        eng._segs = [(int(s), int(e), str(c), p) for s, e, c, p in state["segments"]]
        eng._counts = [(int(t), p, int(dt), int(db)) for t, p, dt, db in state["counts"]]
        cur = state["current"]
        eng._cur = None if cur is None else (str(cur[0]), cur[1])
        eng._since = int(state["since"])
        eng._last_total, eng._last_bad = state["last_total"], state["last_bad"]
        eng._pt = state["pending_time"]
        eng._pstates = [(str(c), p) for c, p in state["pending_states"]]
        eng._pcounts = [(int(a), int(b)) for a, b in state["pending_counts"]]
        eng._gap_end = state["gap_end"]
        base = state.get("gap_base")  # absent in states saved before gap parts were booked
        eng._gap_base = None if base is None else (int(base[0]), int(base[1]), int(base[2]))
        eng._gap_parts = [
            (int(a), int(b), int(c), int(d), int(e), int(f))
            for a, b, c, d, e, f in state.get("gap_parts", [])
        ]
        return eng
