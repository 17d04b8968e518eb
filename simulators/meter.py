"""An energy meter on a simulated machine: power follows the machine's state.

The machine model is a pure function of time, cut into stretches of constant state; power
is constant on each stretch (no noise), so the cumulative energy at any instant is an exact
sum, and a test can compare a part record's energy with the meter's own integral:

* unavailable or emergency stop: `standby_w` (controls only);
* otherwise `base_w` (controls, hydraulics, chip conveyor, coolant pump);
* spindle turning (cutting or feed hold): plus `spindle_w`;
* cutting: plus `load_w_per_percent` x the program's nominal spindle load (%);
* in one of the calendar's breaks (simulators/breaks.py), idle: `base_w`.

Served over Modbus in the Eastron SDM630 register layout (simulators/modbus_server.py), the
same addresses as adapters/modbus/meters/eastron-sdm630.yaml reads.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from models.machine_state import Availability
from simulators.machine import MachineModel, Stretch

__all__ = ["MeterModel", "MeterProfile"]


class MeterProfile(BaseModel):
    """The `simulator.meter:` block of a meter machine in the plant YAML (watts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    standby_w: float = Field(350.0, ge=0)
    base_w: float = Field(2200.0, ge=0)
    spindle_w: float = Field(1500.0, ge=0)
    load_w_per_percent: float = Field(150.0, ge=0, description="W per % spindle load")
    initial_kwh: float = Field(12_345.0, ge=0, description="the register's value at start")


class MeterModel:
    """Power (W) and cumulative imported energy (kWh) of `machine` at any instant."""

    def __init__(self, machine: MachineModel, profile: MeterProfile | None = None) -> None:
        self.machine = machine
        self.profile = profile or MeterProfile()
        self._t = 0.0  # simulated seconds integrated so far
        self._joules = 0.0

    @property
    def asset(self) -> str:
        return self.machine.asset

    def power_of(self, s: Stretch) -> float:
        p = self.profile
        if s.availability is Availability.UNAVAILABLE or s.emergency_stop:
            return p.standby_w
        watts = p.base_w
        if s.spindle_on:
            watts += p.spindle_w
        if s.cutting:
            watts += p.load_w_per_percent * s.program.spindle_load
        return watts

    def power_w(self, now: datetime) -> float:
        if self.machine.on_break(now):  # idle through a break: controls and pumps only
            return self.profile.base_w
        t = self.machine.elapsed(now)
        return next(self.power_of(s) for s in self.machine.stretches(t, t + 1e-9))

    def _break_joules(self, start: datetime | None, end: datetime) -> float:
        """What the idle machine drew in the calendar's breaks in [start, end)."""
        pauses = self.machine.pauses
        if pauses is None:
            return 0.0
        before = 0.0 if start is None else pauses.paused_seconds(start)
        return self.profile.base_w * (pauses.paused_seconds(end) - before)

    def energy_kwh(self, now: datetime) -> float:
        """Cumulative energy at `now`. Power acts over wall-clock time, as the power register
        reads, so a machine simulated 20x fast draws 1/20 of a real cycle's energy per part:
        the register and the integral of the power register agree, whatever the scale."""
        t = self.machine.elapsed(now)
        if t < self._t:  # asked about the past: integrate from the start again
            self._t, self._joules = 0.0, 0.0
        self._joules += self._joules_between(self._t, t)
        self._t = t
        return self.profile.initial_kwh + (self._joules + self._break_joules(None, now)) / 3.6e6

    def energy_between(self, start: datetime, end: datetime) -> float:
        """kWh drawn in [start, end): the reference a part record's energy is checked by."""
        a, b = self.machine.elapsed(start), self.machine.elapsed(end)
        return (self._joules_between(a, b) + self._break_joules(start, end)) / 3.6e6

    def _joules_between(self, a: float, b: float) -> float:
        """Simulated seconds [a, b) at each stretch's power, over wall-clock seconds."""
        scale = self.machine.time_scale
        return sum(self.power_of(s) * (s.t1 - s.t0) for s in self.machine.stretches(a, b)) / scale
