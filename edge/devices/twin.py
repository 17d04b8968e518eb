"""The asset twin: folds each machine's samples into its normalized `MachineState`.

Adapters speak their protocol's words; by the time samples reach here, the state signals
carry the shared vocabulary (models/machine_state.py), so this fold is brand-agnostic.
A value outside the vocabulary is kept out of the state (and reported once) rather than
guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import machine_state as ms
from models.sample import Quality, Sample


@dataclass
class TwinStats:
    samples: int = 0
    bad_samples: int = 0
    last_sample: datetime | None = None
    rejected_values: set[tuple[str, str]] = field(default_factory=set)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "on", "yes", "triggered", "active"}
    return bool(value)


class AssetTwin:
    def __init__(self, asset: str) -> None:
        self.state = ms.MachineState(asset=asset)
        self.stats = TwinStats()
        self.last_values: dict[str, Sample] = {}
        self.changed: dict[str, datetime] = {}
        """When each signal's value last differed from the one before (the status page)."""
        self.announced = False  # whether the state stream has carried this twin yet

    def set_available(self, available: bool, at: datetime) -> ms.MachineState | None:
        target = ms.Availability.AVAILABLE if available else ms.Availability.UNAVAILABLE
        if self.state.availability == target:
            return None
        self.state = self.state.with_changes(availability=target, since=at)
        return self.state

    def apply(
        self, samples: Iterable[Sample]
    ) -> tuple[ms.MachineState | None, list[tuple[str, str]]]:
        """Fold a batch; returns the new state if it changed, and newly rejected values.

        Runs for every sample the gateway reads: counters are kept in locals and written
        once per batch, and a batch that changes no field of the state ends without
        building a new state and two records to compare."""
        changes: dict[str, Any] = {}
        rejected: list[tuple[str, str]] = []
        at: datetime | None = None
        good = False
        stats, last_values, changed = self.stats, self.last_values, self.changed
        state_signals, bad_quality = ms.STATE_SIGNALS, Quality.BAD
        count = bad = 0
        last_sample = stats.last_sample
        try:
            for s in samples:
                count += 1
                signal, value, quality, read_at = s.signal, s.value, s.quality, s.gateway_ts
                last_sample = read_at
                before = last_values.get(signal)
                if before is None or before.value != value or before.quality != quality:
                    changed[signal] = read_at
                last_values[signal] = s
                if quality is bad_quality:
                    bad += 1
                    continue
                good = True
                if signal not in state_signals or value is None:
                    continue
                at = s.ts
                try:
                    changes.update(self._fold(s))
                except ValueError:
                    key = (signal, str(value))
                    if key not in stats.rejected_values:
                        stats.rejected_values.add(key)
                        rejected.append(key)
        finally:
            stats.samples += count
            stats.bad_samples += bad
            stats.last_sample = last_sample
        if self.state.availability is ms.Availability.UNAVAILABLE and good:
            # only a good value proves the device back: a batch of bad ones (exception
            # replies, unresolved nodes) is a device that answers but says nothing
            changes.setdefault("availability", ms.Availability.AVAILABLE)
        state = self.state
        if all(getattr(state, k) == v for k, v in changes.items()):  # the usual poll
            return None, rejected  # equal fields give equal records: nothing changed
        new = state.with_changes(**changes)
        if new.as_record() == self.state.as_record():
            return None, rejected
        self.state = new.with_changes(since=at)
        return self.state, rejected

    @staticmethod
    def _fold(s: Sample) -> dict[str, Any]:
        v = s.value
        if v is None:
            return {}
        match s.signal:
            case ms.SIG_EXECUTION:
                return {"execution": ms.Execution(str(v).lower())}
            case ms.SIG_MODE:
                return {"controller_mode": ms.ControllerMode(str(v).lower())}
            case ms.SIG_AVAILABILITY:
                return {
                    "availability": ms.Availability.AVAILABLE
                    if _as_bool(v) or v == "available"
                    else ms.Availability.UNAVAILABLE
                }
            case ms.SIG_ESTOP:
                return {"emergency_stop": _as_bool(v)}
            case ms.SIG_ALARM:
                active = v not in (0, "", "0", False, "none", "normal")
                return {"alarms": (str(v),) if active else ()}
            case ms.SIG_PROGRAM:
                return {"program": str(v).strip() or None}
            case ms.SIG_PART_COUNT:
                return {"part_count": int(v)}
            case ms.SIG_BAD_PART_COUNT:
                return {"bad_part_count": int(v)}
        return {}
