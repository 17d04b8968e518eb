"""Part records: one signed record per completed part, derived at the source (issue 15).

A pure tracker, one per machine, folds what the gateway observes (state changes, process
signal samples, energy meter readings, link losses) into cycles and closes a cycle when
the machine's part counter advances. It does no I/O and reads no clock: every input
carries its instant (the gateway's time of the read), so tests drive it with a fake clock
and the stage in edge/parts/ persists `to_dict()` to survive restarts.

The rules (docs/protocol.md, "part"):

* **Cycle.** A cycle opens at the first observation of `execution: active` after the
  previous part closed, and closes when `part_count` advances. Time from open to close is
  the cycle time; it is split by what was observed: `alarm` (an alarm active), `active`,
  `feed_hold`, `interrupted` (interrupted, program or optional stop), `stopped` (stopped
  or emergency stop), `other` (ready, wait, completed) and `unknown` (link lost or gateway
  down). The classes sum to the cycle time.
* **Counter.** An increase of N closes the open cycle as N parts (`parts: N`; normally 1;
  more when several parts finished between two reads). A decrease is a reset: the new
  value counts as the parts made since the reset (0: none yet), and the next record says
  `counter_reset: true`. The gateway's `part_seq` never resets: it is per machine,
  monotonic, and persisted with the tracker.
* **Quality.** `scrap` when `bad_part_count` advanced between the previous part's close
  (exclusive) and this one's (inclusive); `good` when it did not; `unknown` when the
  machine has never reported a bad-part counter. `verdict_basis` says which.
* **Partial.** `partial: true` when the cycle's start was not observed (the gateway first
  saw the machine, or saw it again after a gap, already cutting; or the counter advanced
  with no cycle open) or when the gateway restarted during the cycle (the open cycle is
  restored and the time it was down is a `gateway_restart` gap).
* **Gap.** A link loss during the cycle adds `{start, end, reason: link_lost}` to `gaps`
  and its time to `unknown`; the part is still recorded when the counter shows it.
* **Energy.** With a meter, energy is the cumulative kWh reading interpolated linearly at
  the cycle's start and end (the meter is polled on its own schedule), so the record waits
  for the first reading at or after the end, at most `energy_wait` seconds; then it goes
  out with `energy_kwh: null` and the reason. CO2e = energy x the carbon factor at the
  cycle's midpoint (models/carbon.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.machine_state import Availability, Execution, MachineState
from models.sample import format_ts

ALARM_DETAILS = frozenset({"alarm_text", "alarm_severity"})
"""Signals that describe the active alarm (text, severity), when the adapter reads them."""
ENERGY_CATEGORY = {
    "active": "producing", "feed_hold": "idle", "interrupted": "idle", "other": "idle",
    "stopped": "stopped", "alarm": "stopped", "unknown": "stopped",
}
"""How a machine's energy is split in OEE windows: cutting, on but not cutting, down."""
POWER_GAP = 5.0
"""Seconds between power reads beyond which the kWh register bridges the silence."""
STATE_CLASSES = ("active", "feed_hold", "interrupted", "stopped", "alarm", "other", "unknown")
_INTERRUPTED = frozenset(
    {Execution.INTERRUPTED, Execution.PROGRAM_STOPPED, Execution.OPTIONAL_STOP}
)


def state_class(state: MachineState) -> str:
    """The cycle-time class of one observed state (alarm first: it explains the rest)."""
    if state.availability is Availability.UNAVAILABLE:
        return "unknown"
    if state.alarms:
        return "alarm"
    if state.emergency_stop or state.execution is Execution.STOPPED:
        return "stopped"
    if state.execution is Execution.ACTIVE:
        return "active"
    if state.execution is Execution.FEED_HOLD:
        return "feed_hold"
    if state.execution in _INTERRUPTED:
        return "interrupted"
    return "other"


def _ts(t: datetime | None) -> str | None:
    return None if t is None else format_ts(t)


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


@dataclass
class SignalStats:
    """Min, max and mean of the samples read during the cycle."""

    n: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        self.low = min(self.low, v)
        self.high = max(self.high, v)

    def as_record(self) -> dict[str, Any]:
        if not self.n:
            return {"min": None, "mean": None, "max": None, "n": 0}
        return {"min": self.low, "mean": round(self.total / self.n, 6), "max": self.high,
                "n": self.n}


@dataclass
class Cycle:
    """An open cycle (or a closed part waiting for its energy reading)."""

    start: datetime | None  # None: the counter advanced with no cycle open
    program: str | None
    cls: str
    since: datetime  # when the current class began
    partial_reasons: list[str] = field(default_factory=list)
    states: dict[str, float] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: dict[str, SignalStats] = field(default_factory=dict)
    gaps: list[dict[str, str | None]] = field(default_factory=list)
    energy_start: float | None = None
    energy_start_basis: str | None = None
    energy_end: float | None = None
    # set at close
    end: datetime | None = None
    parts: int = 0
    count: int | None = None
    bad_delta: int = 0
    counter_reset: bool = False
    verdict: str = "unknown"
    verdict_basis: str = ""

    def account(self, until: datetime, next_cls: str | None = None) -> None:
        seconds = max(0.0, (until - self.since).total_seconds())
        self.states[self.cls] = self.states.get(self.cls, 0.0) + seconds
        self.since = until
        if next_cls is not None:
            self.cls = next_cls

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": _ts(self.start), "program": self.program, "cls": self.cls,
            "since": self.since.isoformat(), "partial": self.partial_reasons,
            "states": self.states, "alarms": self.alarms,
            "signals": {k: [s.n, s.total, s.low, s.high] for k, s in self.signals.items()
                        if s.n},
            "gaps": self.gaps, "energy_start": self.energy_start,
            "energy_start_basis": self.energy_start_basis, "energy_end": self.energy_end,
            "end": _ts(self.end),
            "parts": self.parts, "count": self.count, "bad_delta": self.bad_delta,
            "counter_reset": self.counter_reset, "verdict": self.verdict,
            "verdict_basis": self.verdict_basis,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cycle:
        since = _dt(d["since"])
        assert since is not None
        c = cls(_dt(d["start"]), d["program"], d["cls"], since, list(d["partial"]),
                dict(d["states"]), dict(d["alarms"]), {}, list(d["gaps"]),
                d["energy_start"], d["energy_start_basis"], d["energy_end"], _dt(d["end"]),
                d["parts"],
                d["count"], d["bad_delta"], d["counter_reset"], d["verdict"],
                d["verdict_basis"])
        for k, (n, total, low, high) in d["signals"].items():
            c.signals[k] = SignalStats(n, total, low, high)
        return c


@dataclass(frozen=True)
class Reading:
    at: datetime
    kwh: float


def _reading(r: Reading | None) -> list[Any] | None:
    return None if r is None else [r.at.isoformat(), r.kwh]


def _unreading(d: list[Any] | None) -> Reading | None:
    return None if d is None else Reading(datetime.fromisoformat(d[0]), float(d[1]))


@dataclass(frozen=True)
class PartSettings:
    """What the tracker needs from the plant YAML (models/plant.py `part_record`)."""

    signals: tuple[str, ...] = ()
    metered: bool = False
    energy_wait: float = 10.0
    ideal_cycle_time: Callable[[str | None], float | None] = lambda _program: None
    carbon_factor: Callable[[datetime], dict[str, Any] | None] = lambda _at: None


class PartTracker:
    """One machine's cycles, parts and counters; see the module docstring for the rules."""

    def __init__(self, asset: str, settings: PartSettings) -> None:
        self.asset = asset
        self.settings = settings
        self.next_seq = 1
        self.last_count: int | None = None
        self.last_bad: int | None = None
        self.bad_seen = False
        self.reset_pending = False
        self.bad_since_close = 0
        self.program: str | None = None
        self.cls = "unknown"
        self.seen_since_gap = False  # an observation arrived after the last gap or start
        self.open: Cycle | None = None
        self.closing: list[Cycle] = []
        self.last_reading: Reading | None = None
        self.prev_reading: Reading | None = None  # the one before: readings may run ahead
        self.integrated = 0.0  # kWh of power integrated since the tracker began
        self.last_power: Reading | None = None
        self.last_register: Reading | None = None
        self.energy: dict[tuple[str, str], float] = {}  # (minute, category) -> kWh, undrained
        self.alarm_text: str | None = None
        self.alarm_severity: str | None = None
        self.link_lost_at: datetime | None = None

    # ---- inputs ------------------------------------------------------------------------
    def observe(self, state: MachineState, at: datetime) -> None:
        """A state change (or the first state) read at `at`."""
        cls = state_class(state)
        first = not self.seen_since_gap
        self.seen_since_gap = True
        self._end_gap(at)
        if state.program is not None:
            self.program = state.program
        if state.bad_part_count is not None:
            self._bad(state.bad_part_count)
        if state.part_count is not None:
            self._count(state.part_count, at, cls)
        cyc = self.open
        if cyc is not None:
            cyc.account(at, cls)
        elif cls == "active":
            reasons = ["start not observed: the machine was already cutting when first seen"
                       ] if first else []
            cyc = self.open = Cycle(at, self.program, cls, at, reasons)
            self._energy_start(cyc)
        if cyc is not None:
            for code in state.alarms:
                cyc.alarms.setdefault(code, {"code": code, "text": self.alarm_text,
                                             "severity": self.alarm_severity})
        self.cls = cls

    def observe_signal(self, name: str, value: object, at: datetime) -> None:
        """A process signal sample (only `settings.signals` are kept) or alarm detail."""
        if name == "alarm_text":
            self.alarm_text = None if value in (None, "") else str(value)
        elif name == "alarm_severity":
            self.alarm_severity = None if value in (None, "") else str(value)
        if self.open is None or name not in self.settings.signals:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not math.isfinite(value):
            return
        self.open.signals.setdefault(name, SignalStats()).add(float(value))

    def observe_meter(self, at: datetime, kwh: float | None = None,
                      watts: float | None = None) -> None:
        """One read of this machine's meter: cumulative active energy (kWh) and/or total
        active power (W).

        With power, energy per part is power integrated (trapezoids between reads): a
        float32 kWh register, as most meters have, resolves only ~1 Wh at 10,000 kWh, a
        few percent of a short cycle. Across a silence longer than `POWER_GAP` (a restart,
        a lost link) the register's own difference is used when there is one. Without
        power, the register itself is interpolated."""
        if watts is None:
            if kwh is not None and self.last_power is None:
                self._energy_reading(kwh, at)
            return
        value = self.integrated
        prev = self.last_power
        if prev is not None:
            dt = (at - prev.at).total_seconds()
            reg = self.last_register
            if dt > POWER_GAP and kwh is not None and reg is not None and kwh >= reg.kwh:
                value += kwh - reg.kwh
            else:
                value += max(0.0, dt) * (prev.kwh + watts) / 2 / 3.6e6
        self.integrated = value
        self.last_power = Reading(at, float(watts))  # kwh holds watts here
        if kwh is not None:
            self.last_register = Reading(at, float(kwh))
        self._energy_reading(value, at)

    def _energy_reading(self, kwh: float, at: datetime) -> None:
        reading = Reading(at, float(kwh))
        prev = self.last_reading
        if prev is not None and reading.kwh < prev.kwh:
            prev = None  # the meter was reset or replaced: no interpolation across it
        if prev is not None:
            key = (format_ts(at.replace(second=0, microsecond=0)), ENERGY_CATEGORY[self.cls])
            self.energy[key] = self.energy.get(key, 0.0) + reading.kwh - prev.kwh
        cyc = self.open
        if cyc is not None and cyc.energy_start is None and cyc.start is not None \
                and at >= cyc.start:
            cyc.energy_start, cyc.energy_start_basis = self._interpolate(prev, reading,
                                                                         cyc.start)
        for part in self.closing:
            if part.end is not None and at >= part.end and part.energy_end is None:
                value, basis = self._interpolate(prev, reading, part.end)
                part.energy_end = value
                if basis != "interpolated":
                    part.energy_start_basis = basis
        self.prev_reading, self.last_reading = prev, reading

    def link_lost(self, at: datetime) -> None:
        """The device went away: time from here to the next observation is a gap."""
        if self.link_lost_at is None:
            self.link_lost_at = at
            self.seen_since_gap = False
            if self.open is not None:
                self.open.account(at, "unknown")

    # ---- outputs -----------------------------------------------------------------------
    def due(self, now: datetime) -> list[dict[str, Any]]:
        """Records ready to publish: parts whose energy is known, or waited for long enough."""
        out = []
        wait = timedelta(seconds=self.settings.energy_wait)
        keep = []
        for part in self.closing:
            assert part.end is not None
            if not self.settings.metered or part.energy_end is not None or now - part.end >= wait:
                out.append(self._record(part))
            else:
                keep.append(part)
        self.closing = keep
        return out

    def drain_energy(self) -> dict[tuple[str, str], float]:
        """kWh per (minute start, category) since the last drain (saved by the stage)."""
        out, self.energy = self.energy, {}
        return out

    # ---- restart -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "next_seq": self.next_seq, "last_count": self.last_count,
            "last_bad": self.last_bad, "bad_seen": self.bad_seen,
            "reset_pending": self.reset_pending, "bad_since_close": self.bad_since_close,
            "program": self.program,
            "meter": {"integrated": self.integrated, "last": _reading(self.last_reading),
                      "prev": _reading(self.prev_reading), "power": _reading(self.last_power),
                      "register": _reading(self.last_register)},
            "open": None if self.open is None else self.open.to_dict(),
            "closing": [c.to_dict() for c in self.closing],
        }

    def restore(self, d: Mapping[str, Any], alive: datetime) -> None:
        """Take the state saved at `alive` back; an open cycle becomes partial, and the time
        until the next observation is a `gateway_restart` gap."""
        self.next_seq = int(d["next_seq"])
        self.last_count = d["last_count"]
        self.last_bad = d["last_bad"]
        self.bad_seen = bool(d["bad_seen"])
        self.reset_pending = bool(d["reset_pending"])
        self.bad_since_close = int(d["bad_since_close"])
        self.program = d["program"]
        meter = d["meter"]
        self.integrated = float(meter["integrated"])
        self.last_reading = _unreading(meter["last"])
        self.prev_reading = _unreading(meter["prev"])
        self.last_power = _unreading(meter["power"])
        self.last_register = _unreading(meter["register"])
        self.closing = [Cycle.from_dict(c) for c in d["closing"]]
        if d["open"] is not None:
            cyc = Cycle.from_dict(d["open"])
            cyc.account(max(alive, cyc.since), "unknown")
            cyc.partial_reasons.append("gateway restarted during the cycle")
            cyc.gaps.append({"start": format_ts(alive), "end": None,
                             "reason": "gateway_restart"})
            self.open = cyc
        self.link_lost_at = alive

    # ---- internals ---------------------------------------------------------------------
    def _end_gap(self, at: datetime) -> None:
        if self.link_lost_at is None:
            return
        lost, self.link_lost_at = self.link_lost_at, None
        cyc = self.open
        if cyc is None:
            return
        open_gap = next((g for g in cyc.gaps if g["end"] is None), None)
        if open_gap is not None:
            open_gap["end"] = format_ts(at)
        else:
            cyc.gaps.append({"start": format_ts(lost), "end": format_ts(at),
                             "reason": "link_lost"})

    def _bad(self, value: int) -> None:
        if self.last_bad is not None:
            self.bad_since_close += value - self.last_bad if value >= self.last_bad else value
        self.last_bad = value
        self.bad_seen = True

    def _count(self, value: int, at: datetime, cls: str) -> None:
        last, self.last_count = self.last_count, value
        if last is None:
            return
        if value >= last:
            parts = value - last
        else:
            parts, self.reset_pending = value, True
        if parts > 0:
            self._close(parts, value, at, cls)

    def _close(self, parts: int, count: int, at: datetime, cls: str) -> None:
        cyc = self.open
        if cyc is None:
            cyc = Cycle(None, self.program, self.cls, at,
                        ["start not observed: the counter advanced with no cycle open"])
            if not self.seen_since_gap:
                cyc.partial_reasons.append("the counter advanced during a gap")
        cyc.account(at)
        self.open = None
        cyc.end, cyc.parts, cyc.count = at, parts, count
        cyc.counter_reset, self.reset_pending = self.reset_pending, False
        cyc.bad_delta, self.bad_since_close = self.bad_since_close, 0
        if not self.bad_seen:
            cyc.verdict = "unknown"
            cyc.verdict_basis = "the machine reports no bad-part counter"
        elif cyc.bad_delta > 0:
            cyc.verdict = "scrap"
            cyc.verdict_basis = (f"bad_part_count advanced by {cyc.bad_delta} with this part "
                                 f"(now {self.last_bad})")
        else:
            cyc.verdict = "good"
            cyc.verdict_basis = f"bad_part_count did not advance (still {self.last_bad})"
        r = self.last_reading
        if self.settings.metered and r is not None and r.at >= at:
            cyc.energy_end = self._interpolate(self.prev_reading, r, at)[0]
        self.closing.append(cyc)
        if cls == "active":  # cutting on: the next part's cycle starts now
            self.open = Cycle(at, self.program, "active", at)
            self._energy_start(self.open)

    def _energy_start(self, cyc: Cycle) -> None:
        r = self.last_reading
        if self.settings.metered and r is not None and cyc.start is not None \
                and r.at >= cyc.start:
            cyc.energy_start, cyc.energy_start_basis = self._interpolate(
                self.prev_reading, r, cyc.start)

    @staticmethod
    def _interpolate(prev: Reading | None, reading: Reading, at: datetime) -> tuple[float, str]:
        if prev is None or prev.at > at:
            return reading.kwh, "first reading after the instant"
        span = (reading.at - prev.at).total_seconds()
        if span <= 0:
            return reading.kwh, "interpolated"
        f = (at - prev.at).total_seconds() / span
        return prev.kwh + (reading.kwh - prev.kwh) * f, "interpolated"

    def _record(self, part: Cycle) -> dict[str, Any]:
        assert part.end is not None
        seq = self.next_seq
        self.next_seq += part.parts
        states = {k: round(part.states.get(k, 0.0), 3) for k in STATE_CLASSES}
        energy: float | None = None
        energy_basis: str | None = None
        if self.settings.metered:
            end_kwh = part.energy_end
            if part.energy_start is None or end_kwh is None:
                energy_basis = ("no meter reading after the part ended" if end_kwh is None
                                else "no meter reading during the cycle")
            elif end_kwh < part.energy_start:
                energy_basis = "meter reset during the cycle"
            else:
                energy = round(end_kwh - part.energy_start, 9)
                energy_basis = part.energy_start_basis or "interpolated"
        mid = part.end if part.start is None else part.start + (part.end - part.start) / 2
        carbon = self.settings.carbon_factor(mid)
        co2e = None if energy is None or carbon is None else round(
            energy * float(carbon["kg_per_kwh"]), 9)
        cycle_time = None if part.start is None else round(
            (part.end - part.start).total_seconds(), 3)
        return {
            "part_seq": seq,
            "parts": part.parts,
            "machine_count": part.count,
            "counter_reset": part.counter_reset,
            "program": part.program,
            "start": _ts(part.start),
            "end": format_ts(part.end),
            "cycle_time": cycle_time,
            "ideal_cycle_time": self.settings.ideal_cycle_time(part.program),
            "states": states,
            "alarms": list(part.alarms.values()),
            "signals": {k: s.as_record() for k, s in sorted(part.signals.items())},
            "energy_kwh": energy,
            "energy_basis": energy_basis,
            "co2e_kg": co2e,
            "carbon_factor": carbon,
            "verdict": part.verdict,
            "verdict_basis": part.verdict_basis,
            "partial": bool(part.partial_reasons),
            "partial_reasons": part.partial_reasons,
            "gaps": part.gaps,
            "booking": None,  # set by the recorder when the part ends in a booked window
            "ts": format_ts(part.end),
        }


@dataclass(frozen=True)
class ProgramEnergy:
    """Sums over one program's metered part records (edge/parts/store.py aggregates them)."""

    program: str
    good_parts: int
    kwh: float  # every metered part, scrap included
    co2e_kg: float | None  # None when no record had a carbon factor


def per_good_part(sums: Sequence[ProgramEnergy]) -> dict[str, dict[str, Any]]:
    """Energy and CO2e per good part per program (capacity offers, the AAS carbon
    footprint). Scrap parts' energy is carried by the good parts of their program: that is
    what a good part cost. A program without a good part is left out."""
    return {
        e.program: {
            "good_parts": e.good_parts,
            "kwh_per_part": round(e.kwh / e.good_parts, 9),
            "co2e_kg_per_part": None if e.co2e_kg is None else round(
                e.co2e_kg / e.good_parts, 9),
        }
        for e in sorted(sums, key=lambda e: e.program)
        if e.good_parts > 0
    }
