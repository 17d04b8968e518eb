"""Bookings: how a platform's `reserve` request is decided, and what each state change says.

A platform asks for a machine (or a process any shared machine offers) for a fixed window,
or for a duration somewhere between an earliest and a latest start. The plant's
`booking:` rules (`models.plant.BookingRules`) and its calendar decide:

* **Hard limits**, never crossed by the rules or by a person: the window lies in planned
  shift time (breaks, holidays and time outside shifts excluded), overlaps no maintenance,
  no blackout, no accepted booking (from the store, the YAML or a bookings file) and not the
  running job's expected remaining time, starts no earlier than now and no later than
  `max_horizon_days`. A request that cannot fit is `declined`, with the reason.
* **Automatic acceptance**: a fitting request is `accepted` at once when every rule holds
  (`auto_accept`, maximum duration, minimum notice, horizon, allowed machines and programs,
  the platform's quota); otherwise it stays `requested` and waits for a person, and the
  record says which rules it waits for.

States: `requested` -> `accepted` | `declined` | `expired` (nobody decided within
`hold_minutes`, or its start passed) | `released` (the platform withdrew it); `accepted` ->
`released` | `completed` (its window ended; the record carries the window's OEE and the
range of part records made in it). Both open states hold machine time: `accepted` for good,
`requested` until its hold ends (`hold_until`), so a platform waiting for a person is not
overtaken by one that asks later; a plant that decides slowly loses the request, not the
other platforms their chance (the slot returns to the offer when the hold expires).

Pure: no I/O, no clock (the caller passes `now`); every datetime handled is aware and
returned in UTC. The one place that serialises decisions is the store's transaction
(edge/bookings/store.py), which calls `decide` with the bookings it just read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.plant import BookingRules, ShiftCalendar
from models.sample import format_ts
from models.shift_calendar import planned_intervals, subtract_intervals

Interval = tuple[datetime, datetime]
BookingState = Literal["requested", "accepted", "declined", "released", "expired", "completed"]
BOOKING_STATES: tuple[BookingState, ...] = (
    "requested",
    "accepted",
    "declined",
    "released",
    "expired",
    "completed",
)
OPEN_STATES: frozenset[str] = frozenset({"requested", "accepted"})
"""States that still hold something: a request waiting, or machine time promised."""


class ReserveParams(BaseModel):
    """`params` of the `reserve` query method (docs/protocol.md, "Bookings")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(min_length=1, max_length=128, description="the platform's own id")
    asset: str | None = Field(None, min_length=1, max_length=64)
    process: str | None = Field(None, min_length=1, max_length=128)
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    duration_minutes: float | None = Field(None, gt=0, le=90 * 1440)
    earliest_start: AwareDatetime | None = None
    latest_start: AwareDatetime | None = None
    program: str | None = Field(None, min_length=1, max_length=128)
    quantity: int | None = Field(None, ge=1, le=10_000_000)
    ideal_cycle_s: float | None = Field(None, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _shape(self) -> ReserveParams:
        if (self.asset is None) == (self.process is None):
            raise ValueError("give exactly one of asset or process")
        fixed = self.start is not None or self.end is not None
        if fixed:
            if self.start is None or self.end is None:
                raise ValueError("a window needs both start and end")
            if self.end <= self.start:
                raise ValueError("end must be after start")
            if self.duration_minutes or self.earliest_start or self.latest_start:
                raise ValueError(
                    "give start/end, or a duration with earliest_start/latest_start, not both"
                )
        elif self.duration_minutes is None and self.quantity is None:
            raise ValueError("give start/end, duration_minutes, or quantity (with a cycle time)")
        if (
            self.earliest_start is not None
            and self.latest_start is not None
            and self.latest_start < self.earliest_start
        ):
            raise ValueError("latest_start must not be before earliest_start")
        return self


def parse_reserve(params: Mapping[str, Any]) -> ReserveParams:
    """Validate `reserve` params; ValueError names every bad field in one line."""
    try:
        return ReserveParams.model_validate(dict(params))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


@dataclass(frozen=True)
class Candidate:
    """A machine the request may go to, with everything that blocks its time.

    `busy` holds (interval, reason) pairs: accepted bookings, maintenance, blackouts, the
    running job. `ideal_cycle_s` is the YAML's cycle time for the requested program (used
    when the request gives a quantity without its own cycle time)."""

    machine: str
    busy: tuple[tuple[Interval, str], ...] = ()
    ideal_cycle_s: float | None = None


@dataclass(frozen=True)
class Usage:
    """What a platform already holds (open bookings ending after now), for its quota."""

    hours: float = 0.0
    bookings: int = 0


NOTHING_HELD = Usage()
"""No bookings elsewhere (one booking store: one process, or the machine's worker alone)."""


@dataclass(frozen=True)
class OtherStores:
    """What the gateway's other booking stores bring to a decision in this one (`run
    --workers N`: one store per worker): the platform's open bookings there (its quota
    counts them all) and, for a `reserve` by process, the one machine of this store the
    parent chose among every worker's proposals (None: this store's candidates, as usual)."""

    usage: Usage = NOTHING_HELD
    machine: str | None = None


MachineSeen = Callable[[str], bool]
"""Whether the destination a request came through shows a machine (edge/query/policy.py
`DestinationPolicy.sees`, the one place deciding it): a platform's bookings on a machine it
hides are answered there as bookings that do not exist."""


def every_machine(_machine: str) -> bool:
    """The `MachineSeen` of a request through no destination policy, or of the operator."""
    return True


ALONE = OtherStores()
"""One booking store: one process."""
PROPOSE = "propose"
"""Not a platform's method: the parent of `run --workers N` asks a worker what `reserve`
would decide there, committing nothing (platforms can only send QUERY_METHODS)."""


@dataclass(frozen=True)
class Decision:
    state: BookingState
    machine: str
    start: datetime | None
    end: datetime | None
    reason: str | None = None
    waits_for: tuple[str, ...] = field(default=())


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


_MS = timedelta(milliseconds=1)


def _ms_floor(t: datetime) -> datetime:
    return t - timedelta(microseconds=t.microsecond % 1000)


def _ms_ceil(t: datetime) -> datetime:
    """Windows are decided in whole milliseconds, the precision of every timestamp on the
    wire (`format_ts`): the window a record shows is then the very window the booking
    holds, its parts and its `completed` OEE are computed over, and a platform asks for."""
    floor = _ms_floor(t)
    return floor if floor == t else floor + _MS


def _duration(req: ReserveParams, cand: Candidate) -> timedelta | None:
    if req.start is not None and req.end is not None:
        return _utc(req.end) - _utc(req.start)
    if req.duration_minutes is not None:
        return timedelta(minutes=req.duration_minutes)
    cycle = req.ideal_cycle_s or cand.ideal_cycle_s
    if req.quantity is None or cycle is None:
        return None
    return timedelta(seconds=req.quantity * cycle)


def _free(
    calendar: ShiftCalendar, busy: Iterable[tuple[Interval, str]], lo: datetime, hi: datetime
) -> list[Interval]:
    return subtract_intervals(planned_intervals(calendar, lo, hi), [iv for iv, _ in busy])


def first_fit(
    free: list[Interval], duration: timedelta, earliest: datetime, latest: datetime
) -> datetime | None:
    """The earliest start in [earliest, latest] whose whole window lies in one free interval."""
    for a, b in free:
        s = max(a, earliest)
        if s > latest:
            return None
        if s + duration <= b:
            return s
    return None


def _blocker(
    calendar: ShiftCalendar, busy: Iterable[tuple[Interval, str]], start: datetime, end: datetime
) -> str:
    """Why [start, end) cannot be booked, in words a platform can act on."""
    outside = subtract_intervals([(start, end)], planned_intervals(calendar, start, end))
    if outside:
        a, b = outside[0]
        return (
            f"outside planned shift time from {format_ts(a)} to {format_ts(b)} "
            "(no shift, a break or a holiday)"
        )
    for (a, b), why in sorted(busy, key=lambda x: x[0]):
        if a < end and b > start:
            return f"overlaps {why} ({format_ts(a)} to {format_ts(b)})"
    return "no free time"  # unreachable when the caller only asks after a failed fit


def _auto_rules(
    rules: BookingRules,
    req: ReserveParams,
    *,
    platform: str,
    machine: str,
    start: datetime,
    end: datetime,
    usage: Usage,
    now: datetime,
) -> list[str]:
    """Every automatic-acceptance rule the slot breaks (empty: accept at once)."""
    waits: list[str] = []
    if not rules.auto_accept:
        waits.append("every request is decided by a person (auto_accept: false)")
    if end - start > rules.max_duration:
        waits.append(f"longer than max_duration_minutes {rules.max_duration_minutes}")
    if start - now < rules.min_notice:
        waits.append(f"starts sooner than min_notice_minutes {rules.min_notice_minutes}")
    if start > now + timedelta(days=rules.horizon_days):
        waits.append(f"starts later than horizon_days {rules.horizon_days}")
    if not any(fnmatchcase(machine, p) for p in rules.machines):
        waits.append(f"machine {machine} is not booked automatically")
    if req.program is not None and not any(fnmatchcase(req.program, p) for p in rules.programs):
        waits.append(f"program {req.program} is not booked automatically")
    quota = rules.quota_for(platform)
    hours = (end - start).total_seconds() / 3600.0
    if quota.max_hours is not None and usage.hours + hours > quota.max_hours:
        waits.append(f"platform quota of {quota.max_hours:g} h would be exceeded")
    if quota.max_bookings is not None and usage.bookings + 1 > quota.max_bookings:
        waits.append(f"platform quota of {quota.max_bookings} open bookings would be exceeded")
    return waits


def decide(
    req: ReserveParams,
    candidates: list[Candidate],
    *,
    platform: str,
    calendar: ShiftCalendar,
    rules: BookingRules,
    usage: Usage,
    now: datetime,
) -> Decision:
    """Accept, hold for a person, or decline one request; deterministic for equal inputs.

    Candidates are tried in order (the YAML's machine order). For each, the earliest
    fitting start is taken, first at or after the minimum notice (so a flexible request
    is accepted automatically when it can be), then at any allowed start (the slot then
    waits for a person; a flexible one no sooner than the hold's end when it fits there, so
    it does not expire before a person could decide). Among candidates, the first one
    whose slot passes every rule wins; else the first one with any slot waits; else the
    request is declined with the first candidate's reason. `candidates` must not be empty.
    """
    if not candidates:
        raise ValueError("no machine to decide on")
    now = _ms_ceil(_utc(now))
    limit = now + timedelta(days=rules.max_horizon_days)
    if req.start is not None:
        earliest = latest = _ms_ceil(_utc(req.start))
    else:
        earliest = _ms_ceil(_utc(req.earliest_start)) if req.earliest_start else now
        latest = _ms_floor(_utc(req.latest_start)) if req.latest_start else limit
    first = candidates[0].machine
    if earliest < now:
        return Decision("declined", first, None, None, "starts in the past")
    if earliest > limit:
        why = f"starts later than max_horizon_days {rules.max_horizon_days}"
        return Decision("declined", first, None, None, why)
    latest = min(latest, limit)
    waiting: Decision | None = None
    refusal: Decision | None = None
    for cand in candidates:
        duration = _duration(req, cand)
        if duration is None:
            why = "quantity needs ideal_cycle_s or a program with an ideal cycle time here"
            refusal = refusal or Decision("declined", cand.machine, None, None, why)
            continue
        duration = _ms_ceil(earliest + duration) - earliest  # whole ms, like `earliest`
        busy = tuple(((_ms_floor(a), _ms_ceil(b)), why) for (a, b), why in cand.busy)
        free = _free(calendar, busy, earliest, latest + duration)
        noticed = first_fit(free, duration, max(earliest, now + rules.min_notice), latest)
        start = noticed if noticed is not None else first_fit(free, duration, earliest, latest)
        if start is None:
            if req.start is not None:
                why = _blocker(calendar, busy, earliest, earliest + duration)
            else:
                why = (
                    f"no free {duration.total_seconds() / 3600:g} h starting between "
                    f"{format_ts(earliest)} and {format_ts(latest)}"
                )
            why = f"{cand.machine}: {why}"
            refusal = refusal or Decision("declined", cand.machine, None, None, why)
            continue
        waits = _auto_rules(rules, req, platform=platform, machine=cand.machine, start=start,
                            end=start + duration, usage=usage, now=now)
        decidable = max(earliest, now + rules.hold)
        if waits and req.start is None and start < decidable:
            # A person decides within the hold, which ends at the start at the latest: a
            # flexible slot starting sooner would expire before anyone could accept it.
            later = first_fit(free, duration, decidable, latest)
            if later is not None:
                start = later
                waits = _auto_rules(rules, req, platform=platform, machine=cand.machine,
                                    start=start, end=start + duration, usage=usage, now=now)
        end = start + duration
        if not waits:
            return Decision("accepted", cand.machine, start, end)
        waiting = waiting or Decision("requested", cand.machine, start, end, None, tuple(waits))
    if waiting is not None:
        return waiting
    assert refusal is not None
    return refusal


def recheck(
    machine: str,
    start: datetime,
    end: datetime,
    busy: Iterable[tuple[Interval, str]],
    *,
    calendar: ShiftCalendar,
    now: datetime,
) -> str | None:
    """A person accepting a waiting request: the hard limits again (time has passed and
    other bookings may have been accepted meanwhile); None when it may be accepted."""
    now, start, end = _utc(now), _utc(start), _utc(end)
    if start < now:
        return "starts in the past"
    busy = list(busy)
    if first_fit(_free(calendar, busy, start, end), end - start, start, start) is None:
        return f"{machine}: {_blocker(calendar, busy, start, end)}"
    return None


def booking_record(
    *,
    booking: str,
    state: BookingState,
    owner: Mapping[str, Any],
    machine: str,
    start: datetime | None,
    end: datetime | None,
    at: datetime,
    by: Literal["rules", "operator", "platform", "gateway"],
    request: Mapping[str, Any],
    reason: str | None = None,
    waits_for: Iterable[str] = (),
    hold_until: datetime | None = None,
    oee: Mapping[str, Any] | None = None,
    parts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One record of the `bookings` stream (docs/protocol.md, "Stream bookings").

    `owner` is `platform`, `reference` (both null unless the platform chose
    `public_reference`) and `commitment` (always): what every subscriber may see of who
    booked."""
    return {
        "booking": booking,
        "state": state,
        "platform": owner["platform"],
        "reference": owner["reference"],
        "commitment": owner["commitment"],
        "machine": machine,
        "start": None if start is None else format_ts(_utc(start)),
        "end": None if end is None else format_ts(_utc(end)),
        "program": request.get("program"),
        "process": request.get("process"),
        "quantity": request.get("quantity"),
        "by": by,
        "reason": reason,
        "waits_for": list(waits_for),
        "hold_until": None if hold_until is None else format_ts(_utc(hold_until)),
        "oee": None if oee is None else dict(oee),
        "parts": None if parts is None else dict(parts),
        "at": format_ts(_utc(at)),
    }


def part_range(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a `completed` record says of the part records whose `end` lies in the booked
    window (edge/parts): the gateway part numbers they span and how many parts by verdict.
    `part_seq` is the first number of a record covering `parts` N."""
    rows = sorted(records, key=lambda r: int(r["part_seq"]))
    by_verdict = {"good": 0, "scrap": 0, "unknown": 0}
    for r in rows:
        by_verdict[str(r["verdict"])] = by_verdict.get(str(r["verdict"]), 0) + int(r["parts"])
    return {
        "first_seq": int(rows[0]["part_seq"]) if rows else None,
        "last_seq": int(rows[-1]["part_seq"]) + int(rows[-1]["parts"]) - 1 if rows else None,
        "records": len(rows),
        "parts": sum(by_verdict.values()),
        **by_verdict,
    }


def plant_holds(rules: BookingRules, machine: str) -> list[tuple[Interval, str]]:
    """Maintenance and blackouts of `machine` from the YAML: never booked, never offered."""
    out: list[tuple[Interval, str]] = []
    for kind, windows in (("maintenance", rules.maintenance), ("blackout", rules.blackouts)):
        for w in windows:
            if w.applies_to(machine):
                out.append((w.interval(), f"{kind}{': ' + w.reason if w.reason else ''}"))
    return out
