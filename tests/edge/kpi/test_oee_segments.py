"""OeeEngine.segments: the state timeline the status page draws."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.kpi.oee import OeeEngine
from models.machine_state import Execution
from models.plant import ShiftCalendar

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def test_segments_are_clipped_and_end_with_the_current_state() -> None:
    eng = OeeEngine("m", ShiftCalendar(), 30.0)
    eng.on_state(T0, Execution.ACTIVE, True, "O1")
    eng.on_state(T0 + 10 * M, Execution.FEED_HOLD, True, "O1")
    eng.on_state(T0 + 15 * M, Execution.ACTIVE, True, "O1", alarm=True)  # running wins
    eng.on_state(T0 + 20 * M, Execution.READY, True, "O1", alarm=True)
    segs = eng.segments(T0 + 5 * M, T0 + 30 * M)
    assert [(a - T0, b - T0, c) for a, b, c in segs] == [
        (5 * M, 10 * M, "running"),
        (10 * M, 15 * M, "feed_hold"),
        (15 * M, 20 * M, "running"),
        (20 * M, 30 * M, "alarm"),
    ]
    assert eng.segments(T0 + 40 * M, T0 + 50 * M) == [(T0 + 40 * M, T0 + 50 * M, "alarm")]
    assert OeeEngine("n", ShiftCalendar(), None).segments(T0, T0 + M) == []
