"""Normalized machine state: MTConnect / OPC 40001 vocabulary shared by every adapter.

Adapters emit samples on the well-known signal names below; the asset twin folds them into
one `MachineState`. Whatever the brand, OEE and the AAS model see the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class Execution(StrEnum):
    ACTIVE = "active"
    READY = "ready"
    INTERRUPTED = "interrupted"
    FEED_HOLD = "feed_hold"
    STOPPED = "stopped"
    PROGRAM_STOPPED = "program_stopped"
    PROGRAM_COMPLETED = "program_completed"
    WAIT = "wait"
    OPTIONAL_STOP = "optional_stop"


class Availability(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


class ControllerMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"
    MDI = "mdi"
    EDIT = "edit"
    SEMI_AUTOMATIC = "semi_automatic"


# Well-known signal names an adapter uses so the twin can fold them into MachineState.
SIG_EXECUTION = "execution"
SIG_AVAILABILITY = "availability"
SIG_MODE = "controller_mode"
SIG_ESTOP = "emergency_stop"
SIG_ALARM = "alarm"  # active alarm code; 0 / "" / None means none
SIG_PROGRAM = "program"
SIG_PART_COUNT = "part_count"
SIG_BAD_PART_COUNT = "bad_part_count"
STATE_SIGNALS = frozenset(
    {
        SIG_EXECUTION,
        SIG_AVAILABILITY,
        SIG_MODE,
        SIG_ESTOP,
        SIG_ALARM,
        SIG_PROGRAM,
        SIG_PART_COUNT,
        SIG_BAD_PART_COUNT,
    }
)


@dataclass(frozen=True)
class MachineState:
    """What a platform needs to know about a machine right now."""

    asset: str
    availability: Availability = Availability.UNAVAILABLE
    execution: Execution | None = None
    controller_mode: ControllerMode | None = None
    emergency_stop: bool = False
    alarms: tuple[str, ...] = ()
    program: str | None = None
    part_count: int | None = None
    bad_part_count: int | None = None
    since: datetime | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def with_changes(self, **changes: object) -> MachineState:
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_record(self) -> dict[str, object]:
        return {
            "availability": self.availability.value,
            "execution": self.execution.value if self.execution else None,
            "controller_mode": self.controller_mode.value if self.controller_mode else None,
            "emergency_stop": self.emergency_stop,
            "alarms": list(self.alarms),
            "program": self.program,
            "part_count": self.part_count,
            "bad_part_count": self.bad_part_count,
        }


class CounterTracker:
    """Turns a cumulative device counter into non-negative increments.

    A drop is either a reset (counter set back to zero by the operator: the new value is
    the increment) or a rollover of a fixed-width register (`modulus` known: wrap around).
    """

    def __init__(self, modulus: int | None = None) -> None:
        self._last: int | None = None
        self._modulus = modulus

    def update(self, value: int) -> int:
        last, self._last = self._last, value
        if last is None:
            return 0
        if value >= last:
            return value - last
        if self._modulus is not None and last - value > self._modulus // 2:
            return (value - last) % self._modulus
        return value
