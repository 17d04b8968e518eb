"""The twin folds state signals into the shared vocabulary and reports real changes only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.devices.twin import AssetTwin
from models.machine_state import Availability, ControllerMode, CounterTracker, Execution
from models.sample import Quality, Sample

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def s(signal: str, value: object, dt: float = 0, quality: Quality = Quality.GOOD) -> Sample:
    return Sample("m1", signal, value, None, T0 + timedelta(seconds=dt), quality=quality)  # type: ignore[arg-type]


def test_fold_and_change_detection() -> None:
    twin = AssetTwin("m1")
    state, rejected = twin.apply(
        [
            s("execution", "active"),
            s("controller_mode", "automatic"),
            s("part_count", 12),
            s("program", "O1000 "),
            s("alarm", 0),
        ]
    )
    assert state is not None and not rejected
    assert state.execution is Execution.ACTIVE
    assert state.controller_mode is ControllerMode.AUTOMATIC
    assert state.availability is Availability.AVAILABLE
    assert (state.part_count, state.program, state.alarms) == (12, "O1000", ())
    same, _ = twin.apply([s("execution", "active", 1), s("spindle_speed", 1200.0, 1)])
    assert same is None, "an unchanged state must not be re-published"
    changed, _ = twin.apply([s("alarm", 1001, 2), s("execution", "interrupted", 2)])
    assert changed is not None
    assert changed.alarms == ("1001",) and changed.execution is Execution.INTERRUPTED
    assert changed.since == T0 + timedelta(seconds=2)


def test_values_outside_vocabulary_are_rejected_once() -> None:
    twin = AssetTwin("m1")
    _, rejected = twin.apply([s("execution", "17")])
    assert rejected == [("execution", "17")]
    _, rejected = twin.apply([s("execution", "17")])
    assert rejected == []
    assert twin.state.execution is None


def test_bad_quality_does_not_change_state() -> None:
    twin = AssetTwin("m1")
    twin.apply([s("execution", "active")])
    state, _ = twin.apply([s("execution", None, 1, Quality.BAD)])
    assert state is None and twin.state.execution is Execution.ACTIVE
    assert twin.stats.bad_samples == 1


def test_unavailable_then_back() -> None:
    twin = AssetTwin("m1")
    twin.apply([s("execution", "ready")])
    assert twin.set_available(False, T0) is not None
    assert twin.set_available(False, T0) is None
    state, _ = twin.apply([s("execution", "ready", 5)])
    assert state is not None and state.availability is Availability.AVAILABLE


def test_counter_tracker_reset_and_rollover() -> None:
    c = CounterTracker(modulus=2**16)
    assert [c.update(v) for v in (100, 105, 105, 3, 10)] == [0, 5, 0, 3, 7]  # reset to 0 -> +3
    c = CounterTracker(modulus=2**16)
    assert [c.update(v) for v in (65530, 65535, 4)] == [0, 5, 5]  # wrap-around: 65536 - 65535 + 4
