"""The part tracker on a fake clock: cycles, states, counters, verdicts, energy, restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.machine_state import Availability, Execution, MachineState
from models.parts import STATE_CLASSES, PartSettings, PartTracker

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def state(execution: Execution, parts: int | None = 0, bad: int | None = 0,
          alarms: tuple[str, ...] = (), program: str = "O1000") -> MachineState:
    return MachineState(asset="m", availability=Availability.AVAILABLE, execution=execution,
                        alarms=alarms, program=program, part_count=parts, bad_part_count=bad)


def tracker(**kw: Any) -> PartTracker:
    settings = PartSettings(signals=("spindle_load",), ideal_cycle_time=lambda p: 30.0, **kw)
    return PartTracker("m", settings)


def test_a_cycle_from_active_to_the_counter_step_with_its_states_and_signals() -> None:
    t = tracker()
    t.observe(state(Execution.READY, 5, 1), at(0))
    t.observe(state(Execution.ACTIVE, 5, 1), at(10))
    t.observe_signal("spindle_load", 40.0, at(11))
    t.observe_signal("spindle_load", 60.0, at(12))
    t.observe_signal("feed_rate", 99.0, at(12))  # not configured: ignored
    t.observe(state(Execution.FEED_HOLD, 5, 1), at(20))
    t.observe(state(Execution.ACTIVE, 5, 1), at(25))
    t.observe(state(Execution.READY, 6, 1), at(42))
    [r] = t.due(at(42))
    assert r["part_seq"] == 1 and r["machine_count"] == 6 and r["parts"] == 1
    assert r["start"] == "2026-12-07T08:00:10.000Z" and r["end"] == "2026-12-07T08:00:42.000Z"
    assert r["cycle_time"] == 32.0 and r["ideal_cycle_time"] == 30.0
    assert r["states"]["active"] == 27.0 and r["states"]["feed_hold"] == 5.0
    assert sum(r["states"].values()) == pytest.approx(r["cycle_time"])
    assert set(r["states"]) == set(STATE_CLASSES)
    assert r["signals"] == {"spindle_load": {"min": 40.0, "mean": 50.0, "max": 60.0, "n": 2}}
    assert r["verdict"] == "good" and not r["partial"] and r["gaps"] == []
    assert r["energy_kwh"] is None and r["co2e_kg"] is None


def test_scrap_unknown_and_alarm_during_the_cycle() -> None:
    t = tracker()
    t.observe(state(Execution.READY, 0, 0), at(0))
    t.observe(state(Execution.ACTIVE, 0, 0), at(1))
    t.observe_signal("alarm_text", "spindle overload", at(5))
    t.observe(state(Execution.INTERRUPTED, 0, 0, alarms=("1001",)), at(5))
    t.observe(state(Execution.ACTIVE, 0, 0), at(15))
    t.observe(state(Execution.READY, 1, 1), at(20))
    [r] = t.due(at(20))
    assert r["verdict"] == "scrap" and "advanced by 1" in r["verdict_basis"]
    assert r["alarms"] == [{"code": "1001", "text": "spindle overload", "severity": None}]
    assert r["states"]["alarm"] == 10.0 and r["states"]["active"] == 9.0
    u = tracker()
    u.observe(state(Execution.READY, 0, None), at(0))
    u.observe(state(Execution.ACTIVE, 0, None), at(1))
    u.observe(state(Execution.READY, 1, None), at(2))
    assert u.due(at(2))[0]["verdict"] == "unknown"


def test_counter_reset_keeps_the_gateway_sequence_and_flags_the_next_record() -> None:
    t = tracker()
    t.observe(state(Execution.READY, 7, 0), at(0))
    t.observe(state(Execution.ACTIVE, 7, 0), at(1))
    t.observe(state(Execution.READY, 8, 0), at(2))
    t.observe(state(Execution.READY, 0, 0), at(3))  # operator reset
    t.observe(state(Execution.ACTIVE, 0, 0), at(4))
    t.observe(state(Execution.READY, 1, 0), at(6))
    a, b = t.due(at(6))
    assert (a["part_seq"], b["part_seq"]) == (1, 2)
    assert not a["counter_reset"] and b["counter_reset"] and b["machine_count"] == 1


def test_energy_is_interpolated_at_start_and_end_and_waits_for_the_reading() -> None:
    t = tracker(metered=True, energy_wait=5.0,
                carbon_factor=lambda _t: {"kg_per_kwh": 0.5, "source": "x", "year": 2025})
    t.observe(state(Execution.READY, 0, 0), at(0))
    t.observe_meter(at(9), kwh=100.0)
    t.observe(state(Execution.ACTIVE, 0, 0), at(10))
    t.observe_meter(at(11), kwh=100.2)  # start at 10: 100.1
    t.observe(state(Execution.READY, 1, 0), at(20))
    assert t.due(at(20)) == []  # no reading at or after the end yet
    t.observe_meter(at(21), kwh=101.1)  # end at 20: 101.0
    [r] = t.due(at(21))
    assert r["energy_kwh"] == pytest.approx(101.01 - 100.1) and r["energy_basis"] == "interpolated"
    assert r["co2e_kg"] == pytest.approx(0.455)


def test_a_silent_meter_does_not_hold_the_record_forever() -> None:
    t = tracker(metered=True, energy_wait=5.0)
    t.observe(state(Execution.READY, 0, 0), at(0))
    t.observe(state(Execution.ACTIVE, 0, 0), at(1))
    t.observe(state(Execution.READY, 1, 0), at(2))
    assert t.due(at(6)) == []
    [r] = t.due(at(7))
    assert r["energy_kwh"] is None and r["energy_basis"]


def test_link_loss_is_a_gap_and_restart_mid_cycle_is_partial() -> None:
    t = tracker()
    t.observe(state(Execution.READY, 0, 0), at(0))
    t.observe(state(Execution.ACTIVE, 0, 0), at(1))
    t.link_lost(at(3))
    t.observe(state(Execution.ACTIVE, 0, 0), at(8))
    saved, alive = t.to_dict(), at(9)
    restarted = tracker()
    restarted.restore(saved, alive)
    restarted.observe(state(Execution.ACTIVE, 0, 0), at(15))
    restarted.observe(state(Execution.READY, 1, 0), at(16))
    [r] = restarted.due(at(16))
    assert r["partial"] and r["partial_reasons"] == ["gateway restarted during the cycle"]
    assert [g["reason"] for g in r["gaps"]] == ["link_lost", "gateway_restart"]
    assert r["gaps"][1] == {"start": "2026-12-07T08:00:09.000Z",
                            "end": "2026-12-07T08:00:15.000Z", "reason": "gateway_restart"}
    assert r["states"]["unknown"] == 5.0 + 6.0 and r["cycle_time"] == 15.0
    assert sum(r["states"].values()) == pytest.approx(15.0)
    assert r["part_seq"] == 1


def test_first_seen_cutting_is_partial_and_sequence_survives_restore() -> None:
    t = tracker()
    t.observe(state(Execution.ACTIVE, 3, 0), at(0))
    t.observe(state(Execution.READY, 4, 0), at(5))
    [r] = t.due(at(5))
    assert r["partial"] and "already cutting" in r["partial_reasons"][0]
    again = tracker()
    again.restore(t.to_dict(), at(6))
    again.observe(state(Execution.READY, 4, 0), at(7))
    again.observe(state(Execution.ACTIVE, 4, 0), at(8))
    again.observe(state(Execution.READY, 5, 0), at(9))
    [r2] = again.due(at(9))
    assert r2["part_seq"] == 2 and not r2["partial"]


def test_power_is_integrated_and_the_register_bridges_a_long_silence() -> None:
    t = tracker(metered=True)
    t.observe(state(Execution.READY, 0, 0), at(0))
    for s in range(0, 11):  # 1 s reads: 1 kW idle until 2 s, 10 kW cutting after
        t.observe_meter(at(s), kwh=500.0, watts=1000.0 if s < 2 else 10_000.0)
        if s == 2:
            t.observe(state(Execution.ACTIVE, 0, 0), at(2))
    # 30 s of silence (a restart), bridged by the register: +0.1 kWh
    t.observe_meter(at(40), kwh=500.1, watts=10_000.0)
    t.observe(state(Execution.READY, 1, 0), at(40))
    [r] = t.due(at(40))
    assert r["energy_kwh"] == pytest.approx(8 * 10 / 3600 + 0.1, rel=1e-6)
