"""`OeeEngine.export_since`: incremental exports add up to `state_dict()` exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.kpi.oee import OeeEngine
from models.machine_state import ControllerMode as M
from models.machine_state import Execution as X
from models.plant import Shift, ShiftCalendar

CAL = ShiftCalendar(
    timezone="Europe/Berlin", shifts=[Shift(name="day", start=time(6), end=time(22))]
)
T0 = datetime(2024, 6, 3, 3, tzinfo=UTC)

# One step: (minutes forward, 0 = same instant; event kind; argument; export afterwards?)
steps = st.lists(
    st.tuples(
        st.integers(0, 90),
        st.sampled_from(["state", "counts", "gap", "advance"]),
        st.integers(0, 2000),
        st.booleans(),
    ),
    max_size=40,
)


def apply(eng: OeeEngine, t: datetime, kind: str, arg: int) -> None:
    if kind == "state":
        eng.on_state(
            t,
            list(X)[arg % len(X)],
            arg % 11 != 0,
            "ab"[arg % 2],
            arg % 5 == 0,
            list(M)[arg % len(M)],
        )
    elif kind == "counts":
        eng.on_counts(t, arg, arg // 50)
    elif kind == "gap":
        eng.on_gap(t, t + timedelta(minutes=arg % 120 + 1))
    else:
        eng.advance(t)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_exports_concatenate_to_state_dict(script: list[tuple[int, str, int, bool]]) -> None:
    eng = OeeEngine("m", CAL, 2.0, {"a": 1.0})
    cursor: int | None = None
    segs: list[list[object]] = []
    counts: list[list[object]] = []
    head: dict[str, object] = {}
    t = T0
    for minutes, kind, arg, export in [*script, (1, "advance", 0, True)]:
        t += timedelta(minutes=minutes)
        apply(eng, t, kind, arg)
        if export:
            state, new_cursor = eng.export_since(cursor)
            state = json.loads(json.dumps(state))  # what the store writes and reads back
            assert new_cursor is None or cursor is None or new_cursor >= cursor
            assert all(s[1] > (cursor or -1) for s in state["segments"])  # nothing twice
            segs += state.pop("segments")
            counts += state.pop("counts")
            head, cursor = state, new_cursor
    whole = eng.state_dict()
    assert {**head, "segments": segs, "counts": counts} == json.loads(json.dumps(whole))
    back = OeeEngine.from_state_dict(
        {**head, "segments": segs, "counts": counts}, CAL, 2.0, {"a": 1.0}
    )
    end = t + timedelta(hours=3)
    assert back.window(T0, end, now=end) == eng.window(T0, end, now=end)


def test_cursor_survives_prune_and_pending_events_stay_in_the_head() -> None:
    eng = OeeEngine("m", CAL, 2.0)
    for i in range(6):  # running / waiting every 10 minutes, a part each time
        t = T0 + timedelta(hours=4, minutes=10 * i)
        eng.on_state(t, X.ACTIVE if i % 2 == 0 else X.READY, True, None)
        eng.on_counts(t, i, 0)
    first, cursor = eng.export_since(None)
    assert first == eng.state_dict() and cursor == first["segments"][-1][1]
    assert first["pending_states"] and first["pending_counts"]  # the 6th instant is pending
    eng.prune(T0 + timedelta(hours=4, minutes=25))
    again, same = eng.export_since(cursor)
    assert (again["segments"], again["counts"], same) == ([], [], cursor)
    eng.advance(T0 + timedelta(hours=5))  # commits the pending instant
    later, nxt = eng.export_since(cursor)
    assert len(later["segments"]) == 1 and len(later["counts"]) == 1
    assert nxt is not None and cursor is not None and nxt > cursor
    assert eng.export_since(nxt)[0]["segments"] == []
    fresh = OeeEngine("n", CAL, None)
    assert fresh.export_since(None)[1] is None
