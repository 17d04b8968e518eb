"""The machine model is a pure, cheap function of time that shows every state in a shift."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

import simulators.machine as machine_module
from models.machine_state import Availability, ControllerMode, Execution
from simulators import MachineModel, MachineProfile, MachineSnapshot, ProgramSpec, ScriptEvent

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
SHIFT = 8 * 3600.0
SCALE = 480.0  # an 8-hour shift in one wall-clock minute


def wall(sim_seconds: float, scale: float = SCALE) -> datetime:
    return START + timedelta(seconds=sim_seconds / scale)


def shift_snapshots(model: MachineModel, step: float = 5.0) -> list[MachineSnapshot]:
    return [model.snapshot(wall(t * step)) for t in range(int(SHIFT / step) + 1)]


def test_same_seed_same_times_same_snapshots_however_often_asked() -> None:
    times = [wall(t) for t in range(0, int(SHIFT), 37)]
    straight = MachineModel("m1", seed=7, time_scale=SCALE, start=START)
    expected = [straight.snapshot(t) for t in times]

    shuffled = MachineModel("m1", seed=7, time_scale=SCALE, start=START)
    order = list(range(len(times)))
    random.Random(3).shuffle(order)
    got = {}
    for i in order:
        shuffled.snapshot(times[(i * 7) % len(times)])  # extra calls must not matter
        got[i] = shuffled.snapshot(times[i])
        assert shuffled.snapshot(times[i]) == got[i]
    assert [got[i] for i in range(len(times))] == expected

    backwards = MachineModel("m1", seed=7, time_scale=SCALE, start=START)
    assert [backwards.snapshot(t) for t in reversed(times)] == expected[::-1]


def test_thinned_checkpoints_rebuild_the_same_past(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine_module, "_MAX_CHECKPOINTS", 4)
    times = [wall(t) for t in range(0, 3 * int(SHIFT), 600)]
    reference = [
        MachineModel("m1", seed=2, time_scale=SCALE, start=START).snapshot(t) for t in times
    ]
    model = MachineModel("m1", seed=2, time_scale=SCALE, start=START)
    model.snapshot(times[-1])  # generate far ahead first, thinning the history
    assert len(model._checkpoints) <= 5
    assert [model.snapshot(t) for t in times] == reference


def test_seed_and_asset_both_change_the_machine() -> None:
    def trace(asset: str, seed: int) -> list[tuple[str, int]]:
        m = MachineModel(asset, seed=seed, time_scale=SCALE, start=START)
        return [(s.execution.value, s.part_count) for s in shift_snapshots(m, 300)]

    assert trace("m1", 1) != trace("m1", 2)
    assert trace("m1", 1) != trace("m2", 1)


def test_values_advance_with_time_only() -> None:
    m = MachineModel("m1", seed=1, time_scale=60, start=START)
    now = START + timedelta(minutes=30)
    first = m.snapshot(now)
    for _ in range(100):
        assert m.snapshot(now) == first
    assert first.elapsed == pytest.approx(30 * 60 * 60)
    assert first.sim_time == START + timedelta(hours=30)
    later = m.snapshot(now + timedelta(seconds=10))
    assert later.elapsed == pytest.approx(first.elapsed + 600)
    before = m.snapshot(START - timedelta(hours=1))
    assert before.elapsed == 0.0
    assert replace(before, ts=START) == m.snapshot(START)


# The defaults aim at every state in every shift; about 1.5% of seeds miss one (seed 1 of
# cnc-01 makes no scrap in its first shift), so these seeds are fixed, not drawn.
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_eight_hour_shift_shows_every_state_scrap_and_alarms(seed: int) -> None:
    m = MachineModel("cnc-01", seed=seed, time_scale=SCALE, start=START)
    snaps = shift_snapshots(m, step=2.0)
    assert snaps[-1].ts == START + timedelta(minutes=1)
    seen = {s.execution for s in snaps}
    assert {
        Execution.ACTIVE,
        Execution.READY,
        Execution.INTERRUPTED,
        Execution.FEED_HOLD,
        Execution.STOPPED,
        Execution.PROGRAM_COMPLETED,
    } <= seen
    assert {ControllerMode.AUTOMATIC, ControllerMode.MANUAL, ControllerMode.MDI} <= {
        s.controller_mode for s in snaps
    }
    alarms = {(s.alarm_code, s.alarm_text) for s in snaps if s.alarm_code}
    assert alarms
    assert alarms <= {(a.code, a.text) for a in m.profile.alarms}
    assert all(s.execution is Execution.INTERRUPTED for s in snaps if s.alarm_code)
    assert any(s.bad_part_count > 0 for s in snaps)
    assert len({s.program for s in snaps}) >= 2
    assert sum(s.part_count > p.part_count for p, s in pairwise(snaps)) > 150
    assert all(s.availability is Availability.AVAILABLE for s in snaps)


@pytest.mark.parametrize("reset", ["program_change", "never"])
def test_counters_go_back_only_at_a_documented_reset(reset: str) -> None:
    profile = MachineProfile(counter_reset=reset)
    m = MachineModel("m1", seed=4, time_scale=SCALE, start=START, profile=profile)
    snaps = shift_snapshots(m, step=2.0)
    resets = 0
    for prev, cur in pairwise(snaps):
        assert 0 <= cur.bad_part_count <= cur.part_count
        if cur.part_count < prev.part_count or cur.bad_part_count < prev.bad_part_count:
            resets += 1
            assert reset == "program_change"
            assert (cur.part_count, cur.bad_part_count) == (0, 0)
            assert cur.program != prev.program
            assert cur.controller_mode is ControllerMode.MANUAL
            assert prev.execution is Execution.PROGRAM_COMPLETED  # the last count was shown
        else:
            assert cur.part_count - prev.part_count <= 1  # no cycle is shorter than 2 s
    assert (resets > 0) == (reset == "program_change")


def test_analog_values_follow_the_state() -> None:
    m = MachineModel("m1", seed=3, time_scale=SCALE, start=START)
    snaps = shift_snapshots(m, step=3.0)
    ideal = {p.name: p.ideal_cycle_time for p in m.programs}
    for prev, s in pairwise(snaps):
        if s.execution is Execution.ACTIVE:
            assert s.spindle_speed > 0 and s.feed_rate > 0 and s.spindle_load > 0
            assert s.door_closed
        elif s.execution is Execution.FEED_HOLD:
            assert s.spindle_speed > 0 and s.feed_rate == 0
        else:
            assert s.spindle_speed == s.feed_rate == 0
        assert 21.9 < s.spindle_temperature < 50 and 21.9 < s.coolant_temperature < 40
        assert abs(s.spindle_temperature - prev.spindle_temperature) < 0.2  # slow thermal curve
        if s.last_cycle_time:
            assert min(ideal.values()) <= s.last_cycle_time <= max(ideal.values()) * 1.08 + 1e-6
    hot = max(s.spindle_temperature for s in snaps)
    assert hot > 30  # the spindle warms up over a shift


def test_scripted_follows_the_script() -> None:
    # The InfluxData oee.APQ golden case timeline, one simulated second per wall second.
    h = 3600.0
    events = [
        ScriptEvent(
            at=0, execution=Execution.ACTIVE, part_count=1200, bad_part_count=10, program="O1000"
        ),
        ScriptEvent(at=1 * h, part_count=1300, bad_part_count=11),
        ScriptEvent(at=2 * h, execution=Execution.STOPPED, part_count=1400),
        ScriptEvent(
            at=3 * h, execution=Execution.ACTIVE, alarm_code=2002, alarm_text="tool breakage"
        ),
        ScriptEvent(
            at=3.5 * h,
            part_count=1440,
            bad_part_count=14,
            alarm_code=0,
            program="P77",
            controller_mode=ControllerMode.MDI,
        ),
    ]
    m = MachineModel.scripted("golden", list(reversed(events)), start=START)

    def at(seconds: float) -> MachineSnapshot:
        return m.snapshot(START + timedelta(seconds=seconds))

    assert (at(0).execution, at(0).part_count, at(0).bad_part_count) == (Execution.ACTIVE, 1200, 10)
    assert (at(h - 1).part_count, at(h).part_count, at(h).bad_part_count) == (1200, 1300, 11)
    assert (at(2.5 * h).execution, at(2.5 * h).part_count, at(2.5 * h).bad_part_count) == (
        Execution.STOPPED,
        1400,
        11,
    )
    assert at(2.5 * h).spindle_speed == 0
    assert (at(3.2 * h).alarm_code, at(3.2 * h).alarm_text) == (2002, "tool breakage")
    assert at(3.2 * h).spindle_speed > 0 and at(3.2 * h).program == "O1000"
    end = at(10 * h)
    assert (
        end.part_count,
        end.bad_part_count,
        end.alarm_code,
        end.program,
        end.program_number,
        end.controller_mode,
    ) == (1440, 14, 0, "P77", 77, ControllerMode.MDI)
    assert end.as_state().part_count == 1440 and end.as_state().alarms == ()
    assert at(3.2 * h).as_state().alarms == ("2002",)

    late = MachineModel.scripted(
        "x", [ScriptEvent(at=60, execution=Execution.ACTIVE)], start=START, time_scale=10
    )
    assert late.snapshot(START + timedelta(seconds=5.9)).execution is Execution.READY
    assert late.snapshot(START + timedelta(seconds=6)).execution is Execution.ACTIVE
    assert MachineModel.scripted("y", [], start=START).snapshot(START).execution is (
        Execution.READY
    )


def test_from_options_validates_the_yaml_block() -> None:
    m = MachineModel.from_options(
        "m1",
        {
            "seed": 5,
            "time_scale": 60,
            "start": "2026-01-05T06:00:00Z",
            "programs": {
                "O4711": {"ideal_cycle_time": 42},
                "P2": {"ideal_cycle_time": 9, "number": 2},
            },
            "profile": {"scrap_rate": 0.1, "lot_size": [5, 10], "counter_reset": "never"},
        },
    )
    assert (m.seed, m.time_scale, m.start) == (5, 60.0, START)
    assert [(p.name, p.number, p.ideal_cycle_time) for p in m.programs] == [
        ("O4711", 4711, 42.0),
        ("P2", 2, 9.0),
    ]
    assert m.profile.scrap_rate == 0.1 and m.profile.counter_reset == "never"
    listed = MachineModel.from_options(
        "m1", {"programs": [{"name": "O1", "ideal_cycle_time": 10, "spindle_speed": 8000}]}
    )
    assert listed.programs[0].spindle_speed == 8000
    scripted = MachineModel.from_options(
        "m1",
        {
            "start": "2026-01-05T06:00:00+00:00",
            "script": [{"at": 0, "execution": "active", "part_count": 3}],
        },
    )
    assert scripted.snapshot(START).execution is Execution.ACTIVE

    cases: list[tuple[dict[str, Any], str]] = [
        ({"time_scale": 0}, "time_scale"),
        ({"sead": 1}, "sead"),
        ({"profile": {"lot_size": [9, 3]}}, "profile"),
        ({"profile": {"alarm_probability": 0.9, "feed_hold_probability": 0.5}}, "profile"),
        ({"programs": [{"name": "O1"}]}, "programs.0.ideal_cycle_time"),
        ({"script": [{"at": 0, "execution": "running"}]}, "script.0.execution"),
        ({"start": "2026-01-05T06:00:00"}, "start"),
    ]
    for bad, where in cases:
        with pytest.raises(ValueError, match=r"simulator options of machine 'm1'") as info:
            MachineModel.from_options("m1", bad)
        assert where in str(info.value)


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        MachineModel("m1", time_scale=0)
    with pytest.raises(ValueError, match="timezone"):
        MachineModel("m1", start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="ideal_cycle_time"):
        ProgramSpec(name="O1", number=1, ideal_cycle_time=0)


def test_two_hundred_machines_every_second_is_cheap() -> None:
    fleet = [MachineModel(f"m{i}", seed=i, time_scale=60, start=START) for i in range(200)]
    began = time.process_time()
    for second in range(60):
        now = START + timedelta(seconds=second)
        for m in fleet:
            m.snapshot(now)
    spent = time.process_time() - began
    # 12,000 snapshots (one simulated hour each, generation included); ~0.2 s on a laptop.
    assert spent < 3.0
