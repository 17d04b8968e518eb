"""One clock-driven CNC machine model behind every protocol simulator.

The model is a pure function of time: `snapshot(now)` answers what the machine looks like at
`now`, whoever asks and however often. Protocol servers are thin views of it, so the Modbus,
OPC UA or MTConnect simulator of the same machine agree, and a test can compute what the
gateway should have seen without reading a socket.

How it stays deterministic and cheap: simulated time is cut into *runs* (a setup, then a lot
of parts of one program). Each run is generated in one go from a small checkpoint (counters,
program, temperatures) and its own RNG seeded by `asset:seed:run`, so any run can be rebuilt
from its checkpoint alone. Only the run being looked at is kept as segments; older runs keep
just their checkpoint (thinned when many), so memory stays small at any time scale. A
snapshot is a bisect into the cached run plus a little arithmetic for the analog values.

Scripted mode replaces the random generator with an explicit timeline, for end-to-end OEE
tests whose expected figures are computed by hand.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import ShiftCalendar
from simulators.breaks import CalendarBreaks

__all__ = [
    "AlarmSpec",
    "MachineModel",
    "MachineProfile",
    "MachineSnapshot",
    "ProgramSpec",
    "ScriptEvent",
    "SimulatorOptions",
    "Stretch",
]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(span: tuple[float, float]) -> tuple[float, float]:
    if span[0] > span[1]:
        raise ValueError("expected [low, high] with low <= high")
    return span


Span = Annotated[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]],
                 AfterValidator(_ordered)]
"""A [low, high] range in seconds; values are drawn uniformly from it."""

Probability = Annotated[float, Field(ge=0, le=1)]


class AlarmSpec(_Options):
    code: int = Field(ge=1, le=65535, description="fits the uint16 alarm register")
    text: str


class ProgramSpec(_Options):
    """A part program. Without `number`, the digits of the name are used (O1000 -> 1000)."""

    name: str = Field(min_length=1, max_length=16, pattern=r"^[\x20-\x7e]+$")
    number: int = Field(ge=0, le=65535)
    ideal_cycle_time: float = Field(gt=0, description="seconds per part")
    spindle_speed: float = Field(3000.0, ge=0, description="nominal 1/min while cutting")
    feed_rate: float = Field(1200.0, ge=0, description="nominal mm/min while cutting")
    spindle_load: float = Field(40.0, ge=0, le=150, description="nominal % while cutting")

    @model_validator(mode="before")
    @classmethod
    def _number_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("number") is None and "name" in data:
            digits = re.sub(r"\D", "", str(data["name"]))
            data = {**data, "number": int(digits) % 65536 if digits else 0}
        return data


DEFAULT_PROGRAMS: tuple[ProgramSpec, ...] = (
    ProgramSpec(name="O1000", number=1000, ideal_cycle_time=30, spindle_speed=4500,
                feed_rate=1800, spindle_load=35),
    ProgramSpec(name="O2000", number=2000, ideal_cycle_time=55, spindle_speed=3000,
                feed_rate=1200, spindle_load=50),
    ProgramSpec(name="O3000", number=3000, ideal_cycle_time=120, spindle_speed=1800,
                feed_rate=600, spindle_load=65),
)

DEFAULT_ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec(code=1001, text="spindle overload"),
    AlarmSpec(code=1002, text="axis following error"),
    AlarmSpec(code=2001, text="coolant level low"),
    AlarmSpec(code=2002, text="tool breakage"),
    AlarmSpec(code=3001, text="lubrication pressure low"),
)


class MachineProfile(_Options):
    """How the machine behaves. Defaults make an 8-hour shift show every state.

    Probabilities are per cycle (alarm, e-stop, feed hold, optional stop, scrap) or per idle
    gap (wait); durations are simulated seconds. Per 8-hour shift that makes 200-350 parts,
    3-5 setups, 2-10 alarms, 5-14 feed holds, ~3% scrap, an e-stop every other shift or so,
    and 55-75% of the time cutting: every state shows up whatever the seed.
    """

    cycle_slowdown: float = Field(0.08, ge=0, le=1, description="actual = ideal * (1 + U(0, x))")
    part_gap: Span = (4.0, 15.0)
    wait_probability: Probability = 0.02
    wait_duration: Span = (120.0, 600.0)
    lot_size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (30, 100)
    setup_duration: Span = (300.0, 1200.0)
    alarm_probability: Probability = 0.02
    alarm_duration: Span = (120.0, 480.0)
    alarms: tuple[AlarmSpec, ...] = Field(DEFAULT_ALARMS, min_length=1)
    feed_hold_probability: Probability = 0.025
    feed_hold_duration: Span = (10.0, 90.0)
    optional_stop_probability: Probability = 0.01
    optional_stop_duration: Span = (15.0, 60.0)
    estop_probability: Probability = 0.002
    estop_duration: Span = (60.0, 300.0)
    scrap_rate: Probability = 0.03
    counter_reset: Literal["program_change", "never"] = Field(
        "program_change", description="when part and bad counters go back to 0"
    )
    ambient_temperature: float = 22.0

    @model_validator(mode="after")
    def _consistent(self) -> MachineProfile:
        if self.lot_size[0] > self.lot_size[1]:
            raise ValueError("lot_size: expected [low, high] with low <= high")
        total = (self.alarm_probability + self.estop_probability
                 + self.feed_hold_probability + self.optional_stop_probability)
        if total > 1:
            raise ValueError("alarm + estop + feed_hold + optional_stop probabilities exceed 1")
        return self


class ScriptEvent(_Options):
    """From `at` (simulated seconds after start) on, the given fields hold; None keeps them."""

    at: float = Field(ge=0)
    execution: Execution | None = None
    controller_mode: ControllerMode | None = None
    availability: Availability | None = None
    emergency_stop: bool | None = None
    alarm_code: int | None = Field(None, ge=0, le=65535, description="0 clears the alarm")
    alarm_text: str | None = None
    program: str | None = Field(None, min_length=1, max_length=16)
    part_count: int | None = Field(None, ge=0)
    bad_part_count: int | None = Field(None, ge=0)
    last_cycle_time: float | None = Field(None, ge=0)


class SimulatorOptions(_Options):
    """The `simulator:` block of a plant YAML machine."""

    seed: int = 0
    time_scale: float = Field(1.0, gt=0, description="simulated seconds per wall second")
    start: AwareDatetime | None = Field(None, description="origin of simulated time; now if absent")
    programs: list[ProgramSpec] | None = Field(None, min_length=1)
    profile: MachineProfile = Field(default_factory=MachineProfile)
    script: list[ScriptEvent] | None = Field(None, description="explicit timeline; no randomness")

    @field_validator("programs", mode="before")
    @classmethod
    def _programs_by_name(cls, v: Any) -> Any:
        """Accept the plant's own `programs:` mapping shape, `{O1000: {ideal_cycle_time: 30}}`."""
        if isinstance(v, dict):
            return [{"name": name, **(body or {})} for name, body in v.items()]
        return v


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """The machine at one instant, in the units the register map and the README promise."""

    asset: str
    ts: datetime
    """The wall-clock instant asked for."""
    sim_time: datetime
    elapsed: float
    """Simulated seconds since `start`."""
    availability: Availability
    execution: Execution
    controller_mode: ControllerMode
    emergency_stop: bool
    alarm_code: int
    alarm_text: str
    program: str
    program_number: int
    part_count: int
    bad_part_count: int
    spindle_speed: float
    spindle_load: float
    feed_rate: float
    spindle_temperature: float
    coolant_temperature: float
    last_cycle_time: float
    door_closed: bool

    @property
    def running(self) -> bool:
        return self.execution is Execution.ACTIVE

    @property
    def alarm_active(self) -> bool:
        return self.alarm_code != 0

    def as_state(self) -> MachineState:
        """What the gateway's twin should hold after reading this machine (alarms as codes)."""
        return MachineState(
            asset=self.asset, availability=self.availability, execution=self.execution,
            controller_mode=self.controller_mode, emergency_stop=self.emergency_stop,
            alarms=(str(self.alarm_code),) if self.alarm_code else (), program=self.program,
            part_count=self.part_count, bad_part_count=self.bad_part_count, since=self.ts,
        )


@dataclass(frozen=True, slots=True)
class Stretch:
    """Simulated seconds [t0, t1) in one state: what drives power draw."""

    t0: float
    t1: float
    execution: Execution
    availability: Availability
    emergency_stop: bool
    spindle_on: bool
    cutting: bool
    program: ProgramSpec


@dataclass(frozen=True, slots=True)
class _Segment:
    """A stretch of simulated time with constant discrete state."""

    t0: float
    t1: float
    execution: Execution
    mode: ControllerMode
    availability: Availability
    program: int
    parts: int
    bad: int
    last_cycle: float
    alarm: AlarmSpec | None
    estop: bool
    door_closed: bool
    spindle_on: bool
    cutting: bool
    spindle_temp0: float
    coolant_temp0: float
    spindle_target: float
    coolant_target: float


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """Everything a run needs to be rebuilt: the state carried over from the previous run."""

    run: int
    t: float
    program: int
    parts: int
    bad: int
    last_cycle: float
    spindle_temp: float
    coolant_temp: float


@dataclass(frozen=True, slots=True)
class _Run:
    t0: float
    t1: float
    segments: list[_Segment]
    starts: list[float]


_SPINDLE_TAU = 900.0  # s, thermal time constant of the spindle
_COOLANT_TAU = 1800.0  # s, the coolant tank is slower
_MAX_CHECKPOINTS = 2048
_OPERATION_SECONDS = 6.0  # analog values step every operation, as a real program does
_MASK64 = (1 << 64) - 1
_DOOR_CLOSED = frozenset({Execution.ACTIVE, Execution.FEED_HOLD, Execution.INTERRUPTED})


def _noise(key: int) -> float:
    """Stateless hash noise in [0, 1) (splitmix64 finalizer): analog values need no RNG state."""
    z = (key * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / 9007199254740992.0


class _Builder:
    """Appends segments, carrying counters and temperatures from one to the next."""

    def __init__(self, programs: Sequence[ProgramSpec], ambient: float, cp: _Checkpoint) -> None:
        self.programs = programs
        self.ambient = ambient
        self.t = cp.t
        self.program = cp.program
        self.parts = cp.parts
        self.bad = cp.bad
        self.last_cycle = cp.last_cycle
        self.spindle_temp = cp.spindle_temp
        self.coolant_temp = cp.coolant_temp
        self.segments: list[_Segment] = []

    def emit(self, duration: float, execution: Execution,
             mode: ControllerMode = ControllerMode.AUTOMATIC, *,
             availability: Availability = Availability.AVAILABLE, alarm: AlarmSpec | None = None,
             estop: bool = False) -> None:
        prog = self.programs[self.program]
        spindle_on = execution in (Execution.ACTIVE, Execution.FEED_HOLD) and not estop
        cutting = execution is Execution.ACTIVE
        # The door stays shut while a program is under way; it opens to load parts, measure
        # at an optional stop, set up, or after an e-stop.
        door_closed = execution in _DOOR_CLOSED and not estop
        spindle_target = self.ambient + (6.0 + 15.0 * prog.spindle_speed / 6000.0
                                         if spindle_on else 0.0)
        coolant_target = self.ambient + (3.0 + 6.0 * prog.spindle_load / 100.0
                                         if cutting else 0.0)
        end = self.t + duration
        self.segments.append(_Segment(
            self.t, end, execution, mode, availability, self.program, self.parts, self.bad,
            self.last_cycle, alarm, estop, door_closed,
            spindle_on, cutting, self.spindle_temp, self.coolant_temp, spindle_target,
            coolant_target,
        ))
        if math.isfinite(duration):
            self.spindle_temp = spindle_target + (self.spindle_temp - spindle_target) * math.exp(
                -duration / _SPINDLE_TAU)
            self.coolant_temp = coolant_target + (self.coolant_temp - coolant_target) * math.exp(
                -duration / _COOLANT_TAU)
        self.t = end

    def checkpoint(self, run: int) -> _Checkpoint:
        return _Checkpoint(run, self.t, self.program, self.parts, self.bad, self.last_cycle,
                           self.spindle_temp, self.coolant_temp)


class MachineModel:
    """A CNC machine whose every observable is a deterministic function of time.

    Simulated time is `start + (now - start) * time_scale`; before `start` the machine sits
    in its initial state. The asset id is part of the seed, so machines that share a seed
    still behave differently. Counters only move forward, except that both go back to 0
    at a program change when `profile.counter_reset == "program_change"` (the default);
    `part_count` counts every finished part, good or bad, `bad_part_count` the rejects.
    """

    def __init__(self, asset: str, seed: int = 0, time_scale: float = 1.0,
                 programs: Sequence[ProgramSpec] | None = None, start: datetime | None = None,
                 *, profile: MachineProfile | None = None,
                 breaks: ShiftCalendar | None = None) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.asset = asset
        self.seed = seed
        self.time_scale = float(time_scale)
        self.start = start or datetime.now(UTC)
        self.programs: tuple[ProgramSpec, ...] = tuple(programs or DEFAULT_PROGRAMS)
        self.profile = profile or MachineProfile()
        self._key = f"{asset}:{seed}"
        self._noise_key = int.from_bytes(hashlib.sha256(self._key.encode()).digest()[:4], "big")
        ambient = self.profile.ambient_temperature
        first = _Checkpoint(0, 0.0, 0, 0, 0, 0.0, ambient, ambient)
        self._checkpoints = [first]
        self._checkpoint_times = [0.0]
        self._frontier = first
        self._run: _Run | None = None
        self.pauses = None if breaks is None else CalendarBreaks(breaks, self.start)
        """The calendar's breaks, which the machine idles through (simulators/breaks.py)."""

    @classmethod
    def scripted(cls, asset: str, events: Sequence[ScriptEvent], *,
                 start: datetime | None = None, time_scale: float = 1.0,
                 programs: Sequence[ProgramSpec] | None = None) -> MachineModel:
        """A machine that follows `events` exactly; before the first one it is ready, idle."""
        ordered = sorted(events, key=lambda e: e.at)
        progs = list(programs or DEFAULT_PROGRAMS[:1])
        for e in ordered:
            if e.program is not None and all(p.name != e.program for p in progs):
                progs.append(ProgramSpec.model_validate(
                    {"name": e.program, "ideal_cycle_time": progs[0].ideal_cycle_time}))
        model = cls(asset, time_scale=time_scale, programs=progs, start=start)
        index = {p.name: i for i, p in enumerate(model.programs)}
        ambient = model.profile.ambient_temperature
        b = _Builder(model.programs, ambient, _Checkpoint(0, 0.0, 0, 0, 0, 0.0, ambient, ambient))
        execution, mode = Execution.READY, ControllerMode.AUTOMATIC
        availability, estop, alarm = Availability.AVAILABLE, False, None
        times = [e.at for e in ordered] + [math.inf]
        if not ordered or ordered[0].at > 0:
            b.emit(times[0], execution)
        for e, end in zip(ordered, times[1:], strict=True):
            execution = e.execution or execution
            mode = e.controller_mode or mode
            availability = e.availability or availability
            estop = estop if e.emergency_stop is None else e.emergency_stop
            if e.alarm_code is not None:
                alarm = (AlarmSpec(code=e.alarm_code, text=e.alarm_text or "")
                         if e.alarm_code else None)
            if e.program is not None:
                b.program = index[e.program]
            b.parts = b.parts if e.part_count is None else e.part_count
            b.bad = b.bad if e.bad_part_count is None else e.bad_part_count
            b.last_cycle = b.last_cycle if e.last_cycle_time is None else e.last_cycle_time
            if end > e.at:
                b.emit(end - e.at, execution, mode, availability=availability, alarm=alarm,
                       estop=estop)
        model._run = _Run(0.0, math.inf, b.segments, [s.t0 for s in b.segments])
        return model

    @classmethod
    def from_options(cls, asset: str, options: dict[str, Any], *,
                     breaks: ShiftCalendar | None = None) -> MachineModel:
        """Build from a plant YAML `simulator:` block; a bad block raises one clear ValueError.
        `breaks`: the plant's calendar, whose breaks a generated machine idles through (a
        script is an explicit timeline and keeps to it)."""
        try:
            opts = SimulatorOptions.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"simulator options of machine {asset!r}: {problems}") from None
        if opts.script is not None:
            return cls.scripted(asset, opts.script, start=opts.start,
                                time_scale=opts.time_scale, programs=opts.programs)
        return cls(asset, seed=opts.seed, time_scale=opts.time_scale, programs=opts.programs,
                   start=opts.start, profile=opts.profile, breaks=breaks)

    def elapsed(self, now: datetime) -> float:
        """Simulated seconds since start at wall time `now` (0 before start); the clock
        stands still in the calendar's breaks."""
        wall = (now - self.start).total_seconds()
        if self.pauses is not None:
            wall -= self.pauses.paused_seconds(now)
        return max(0.0, wall * self.time_scale)

    def on_break(self, now: datetime) -> bool:
        """Whether `now` is in one of the calendar's breaks (the machine idles)."""
        return self.pauses is not None and self.pauses.paused(now)

    def snapshot(self, now: datetime) -> MachineSnapshot:
        snap = self._snapshot(now)
        if not self.on_break(now):
            return snap
        # In a break the machine waits where it stopped: counters, program and temperatures
        # as they were, idle and ready, nothing turning, the door open
        return replace(snap, execution=Execution.READY, emergency_stop=False, alarm_code=0,
                       alarm_text="", spindle_speed=0.0, spindle_load=0.0, feed_rate=0.0,
                       door_closed=False)

    def _snapshot(self, now: datetime) -> MachineSnapshot:
        t = self.elapsed(now)
        run = self._run
        if run is None or not run.t0 <= t < run.t1:
            run = self._run = self._find_run(t)
        seg = run.segments[bisect_right(run.starts, t) - 1]
        prog = self.programs[seg.program]
        dt = t - seg.t0
        spindle_temp = seg.spindle_target + (seg.spindle_temp0 - seg.spindle_target) * math.exp(
            -dt / _SPINDLE_TAU)
        coolant_temp = seg.coolant_target + (seg.coolant_temp0 - seg.coolant_target) * math.exp(
            -dt / _COOLANT_TAU)
        speed = load = feed = 0.0
        if seg.spindle_on:
            key = (self._noise_key << 32) + int(t // _OPERATION_SECONDS) * 4
            speed = round(prog.spindle_speed * (0.85 + 0.3 * _noise(key)), -1)
            if seg.cutting:
                load = round(prog.spindle_load * (0.6 + 0.8 * _noise(key + 1)), 1)
                feed = round(prog.feed_rate * (0.7 + 0.6 * _noise(key + 2)), 0)
            else:
                load = round(3.0 + 4.0 * _noise(key + 1), 1)
        alarm = seg.alarm
        return MachineSnapshot(
            asset=self.asset, ts=now, sim_time=self.start + timedelta(seconds=t), elapsed=t,
            availability=seg.availability, execution=seg.execution, controller_mode=seg.mode,
            emergency_stop=seg.estop, alarm_code=alarm.code if alarm else 0,
            alarm_text=alarm.text if alarm else "", program=prog.name,
            program_number=prog.number, part_count=seg.parts, bad_part_count=seg.bad,
            spindle_speed=speed, spindle_load=load, feed_rate=feed,
            spindle_temperature=round(spindle_temp, 2), coolant_temperature=round(coolant_temp, 2),
            last_cycle_time=round(seg.last_cycle, 3), door_closed=seg.door_closed,
        )

    def stretches(self, t0: float, t1: float) -> Iterator[Stretch]:
        """The constant-state stretches covering simulated seconds [t0, t1), clipped: what
        an energy meter integrates (simulators/meter.py)."""
        t = max(0.0, t0)
        while t < t1:
            run = self._run
            if run is None or not run.t0 <= t < run.t1:
                run = self._run = self._find_run(t)
            i = bisect_right(run.starts, t) - 1
            for seg in run.segments[i:]:
                if seg.t0 >= t1:
                    return
                a, b = max(seg.t0, t), min(seg.t1, t1)
                if b > a:
                    yield Stretch(a, b, seg.execution, seg.availability, seg.estop,
                                  seg.spindle_on, seg.cutting, self.programs[seg.program])
            t = run.t1

    def process_values(self, snapshot: MachineSnapshot, count: int = 100) -> list[int]:
        """`count` uint16 values that drift with simulated time, for many-point load tests."""
        t = snapshot.elapsed
        return [int(32768 + 30000 * math.sin(t / (20.0 + 7.0 * i) + i)) for i in range(count)]

    def _find_run(self, t: float) -> _Run:
        """Generate forward to `t`, or rebuild the past run holding `t` from a checkpoint."""
        while t >= self._frontier.t:
            cp = self._frontier
            run, self._frontier = self._generate(cp)
            if cp.run > self._checkpoints[-1].run:
                self._add_checkpoint(cp)
            if t < run.t1:
                return run
        cp = self._checkpoints[bisect_right(self._checkpoint_times, t) - 1]
        while True:
            run, cp = self._generate(cp)
            if t < run.t1:
                return run

    def _add_checkpoint(self, cp: _Checkpoint) -> None:
        self._checkpoints.append(cp)
        if len(self._checkpoints) > _MAX_CHECKPOINTS:
            # Halve the history but keep the first and the newest: a far-past query then
            # regenerates a few more runs, which is cheap, instead of memory growing forever.
            kept = self._checkpoints[::-2][::-1]
            if kept[0] is not self._checkpoints[0]:
                kept.insert(0, self._checkpoints[0])
            self._checkpoints = kept
        self._checkpoint_times = [c.t for c in self._checkpoints]

    def _generate(self, cp: _Checkpoint) -> tuple[_Run, _Checkpoint]:
        """One run: a setup (except the very first), one lot of parts, the lot completed."""
        p = self.profile
        rng = random.Random(f"{self._key}:{cp.run}")
        b = _Builder(self.programs, p.ambient_temperature, cp)
        if cp.run > 0:
            if len(self.programs) > 1:
                b.program = rng.choice([i for i in range(len(self.programs)) if i != b.program])
            if p.counter_reset == "program_change":
                b.parts = b.bad = 0
            setup = rng.uniform(*p.setup_duration)
            b.emit(setup * 0.6, Execution.STOPPED, ControllerMode.MANUAL)
            b.emit(setup * 0.4, Execution.READY, ControllerMode.MDI)
        for _ in range(rng.randint(*p.lot_size)):
            b.emit(rng.uniform(*p.part_gap), Execution.READY)
            if rng.random() < p.wait_probability:
                b.emit(rng.uniform(*p.wait_duration), Execution.WAIT)
            self._cycle(b, rng)
        # The lot is done: the last part is unloaded with its count showing before the setup
        # resets the counters, so a poller sees every part.
        b.emit(rng.uniform(*p.part_gap), Execution.PROGRAM_COMPLETED)
        run = _Run(cp.t, b.t, b.segments, [s.t0 for s in b.segments])
        return run, b.checkpoint(cp.run + 1)

    def _cycle(self, b: _Builder, rng: random.Random) -> None:
        """One part; an alarm or e-stop aborts it uncounted, a hold only delays it."""
        p = self.profile
        actual = self.programs[b.program].ideal_cycle_time * (1 + rng.uniform(0, p.cycle_slowdown))
        split = actual * rng.uniform(0.2, 0.8)
        r = rng.random()
        if r < (edge := p.alarm_probability):
            b.emit(split, Execution.ACTIVE)
            b.emit(rng.uniform(*p.alarm_duration), Execution.INTERRUPTED,
                   alarm=rng.choice(p.alarms))
            return
        if r < (edge := edge + p.estop_probability):
            b.emit(split, Execution.ACTIVE)
            b.emit(rng.uniform(*p.estop_duration), Execution.STOPPED, estop=True)
            return
        if r < (edge := edge + p.feed_hold_probability):
            hold: tuple[Execution, tuple[float, float]] | None = (
                Execution.FEED_HOLD, p.feed_hold_duration)
        elif r < edge + p.optional_stop_probability:
            hold = (Execution.OPTIONAL_STOP, p.optional_stop_duration)
        else:
            hold = None
        if hold is None:
            b.emit(actual, Execution.ACTIVE)
        else:
            b.emit(split, Execution.ACTIVE)
            b.emit(rng.uniform(*hold[1]), hold[0])
            b.emit(actual - split, Execution.ACTIVE)
        b.parts += 1
        b.bad += rng.random() < p.scrap_rate
        b.last_cycle = actual
