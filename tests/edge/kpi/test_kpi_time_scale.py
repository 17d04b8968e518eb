"""The KPI service rates a simulated machine by wall-clock cycle times (ideal / time_scale),
and every record says how much of the planned time the gateway observed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.kpi.oee import observed_share
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME, OeeStore
from edge.status.gateway_source import oee_status
from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import Plant

T0 = datetime(2026, 12, 6, 8, tzinfo=UTC)  # the 24/7 calendar's day began at 00:00 UTC


def plant(time_scale: float, simulate: bool = True) -> Plant:
    return Plant.model_validate({
        "gateway": {"id": "gw", "site": "s1"},
        "machines": [{
            "id": "m1", "area": "a", "line": "l", "adapter": "modbus", "connection": {},
            "simulate": simulate, "simulator": {"seed": 1, "time_scale": time_scale},
            "ideal_cycle_time": 30.0, "programs": {"O2000": {"ideal_cycle_time": 45.0}},
        }],
    })


def running(parts: int, program: str = "O1000") -> MachineState:
    return MachineState("m1", Availability.AVAILABLE, Execution.ACTIVE,
                        ControllerMode.AUTOMATIC, program=program, part_count=parts,
                        bad_part_count=0)


def effectiveness(rec: dict[str, Any] | None) -> float:
    assert rec is not None and rec["effectiveness"] is not None
    return float(rec["effectiveness"])


def test_simulated_machine_is_rated_in_wall_seconds_and_reload_rerates(tmp_path: Path) -> None:
    # 20x time: a 30 s part takes 1.5 s of wall time, so 10 parts in 15 s is the ideal rate
    # (rated by the YAML's 30 s as they were, this read 2000 %)
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(plant(20), store, lambda: T0)
        kpi.on_state("m1", running(0), T0)
        # the 10th part ends O1000's run (a count belongs to the program before it)
        kpi.on_state("m1", running(10, "O2000"), T0 + timedelta(seconds=15))
        kpi.on_state("m1", running(14, "O2000"), T0 + timedelta(seconds=24))  # 4 x 45 s / 20
        end = T0 + timedelta(seconds=24)
        assert effectiveness(kpi.window("m1", "range", T0, end, now=end)) == pytest.approx(1.0)
        kpi.reconfigure(plant(10))  # the same history, re-rated: half as fast as ideal
        assert effectiveness(kpi.window("m1", "range", T0, end, now=end)) == pytest.approx(2.0)
        kpi.reconfigure(plant(20, simulate=False))  # a real machine: the YAML's seconds
        assert effectiveness(kpi.window("m1", "range", T0, end, now=end)) == pytest.approx(20.0)


def test_observed_share_explains_a_low_availability_after_a_late_start(tmp_path: Path) -> None:
    clock = [T0]
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(plant(20), store, lambda: clock[0])
        kpi.on_state("m1", running(0), T0)  # the day's shift began 8 h before the gateway
        now = T0 + timedelta(hours=1)
        result = kpi.current_shift_result("m1", now)
        assert result is not None
        assert result.availability == pytest.approx(1 / 9)  # the rule: unobserved = no_data
        assert result.observed == pytest.approx(1 / 9)  # ... and that is what it says
        rec = kpi.window("m1", "shift", now=now)
        assert rec is not None
        # the wire body carries everything needed: time.pbt, time.downtime.no_data, losses.gap
        assert observed_share(rec["time"]["pbt"], rec["time"]["downtime"]["no_data"],
                              rec["losses"]["gap"]) == pytest.approx(1 / 9)
        assert oee_status(rec, None).observed == pytest.approx(1 / 9)
        clock[0] = now
        kpi.close()
    # down for an hour, then back: that hour was not observed either (`losses.gap`)
    clock[0] = T0 + timedelta(hours=2)
    with OeeStore(tmp_path / FILENAME) as store:
        kpi = KpiService(plant(20), store, lambda: clock[0])
        kpi.on_state("m1", running(0), clock[0])
        result = kpi.current_shift_result("m1", clock[0] + timedelta(hours=1))
        assert result is not None and result.losses.gap == pytest.approx(3600)
        assert result.observed == pytest.approx(2 / 11)
    assert observed_share(0, 0, 0) is None
