"""Ideal cycle times in wall-clock seconds (`Machine.cycle_times`): the YAML's figures are the
machine's own seconds, and a machine served by the simulator at `time_scale: k` makes a part
in 1/k of that wall time, so every consumer (OEE, part records, capacity, bookings, AAS)
divides by k, in this one place."""

from __future__ import annotations

from typing import Any

import pytest

from edge.config.loader import parse_plant
from models.capacity import ideal_cycle_time_for
from models.errors import PlantConfigError
from models.plant import CycleTimes, Machine


def machine(**kw: Any) -> Machine:
    base: dict[str, Any] = {
        "id": "m1", "area": "a", "line": "l", "adapter": "modbus", "connection": {},
        "ideal_cycle_time": 30.0,
        "programs": {"O1000": {"ideal_cycle_time": 30.0}, "O2000": {"ideal_cycle_time": 45.0}},
    }
    return Machine.model_validate({**base, **kw})


def test_a_simulated_machine_divides_by_its_time_scale() -> None:
    m = machine(simulate=True, simulator={"seed": 1, "time_scale": 20})
    assert m.time_scale == 20.0
    assert m.cycle_times == CycleTimes(1.5, {"O1000": 1.5, "O2000": 2.25})
    assert m.ideal_cycle_time == 30.0  # the YAML's figure stays what the YAML says


def test_a_real_machine_keeps_the_yaml_figures() -> None:
    # a `simulator:` block without `simulate: true` serves nothing, so it scales nothing
    for m in (machine(), machine(simulator={"time_scale": 20}), machine(simulate=True)):
        assert m.time_scale == 1.0
        assert m.cycle_times == CycleTimes(30.0, {"O1000": 30.0, "O2000": 45.0})


def test_program_first_then_machine_then_none() -> None:
    m = machine(simulate=True, simulator={"time_scale": 10})
    assert [m.cycle_times.of(p) for p in ("O2000", "O9999", None)] == [4.5, 3.0, 3.0]
    bare = machine(ideal_cycle_time=None, programs={})
    assert bare.cycle_times.of("O1000") is None
    # capacity, part records and the bookings desk read the same figures
    assert ideal_cycle_time_for(m, "O2000") == 4.5
    assert ideal_cycle_time_for(bare, None) is None


@pytest.mark.parametrize("bad", ["fast", 0, -2, True, None])
def test_a_bad_time_scale_is_a_located_config_error(bad: object) -> None:
    text = f"""\
gateway: {{id: gw-1, site: plant-a}}
machines:
  - id: m1
    area: a1
    line: l1
    adapter: modbus
    simulate: true
    ideal_cycle_time: 30
    simulator: {{seed: 1, time_scale: {"null" if bad is None else str(bad).lower()}}}
    connection: {{host: 127.0.0.1, port: 5020}}
    points: [{{name: part_count, register: holding, address: 10, data_type: uint32}}]
"""
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    (problem,) = (str(p) for p in info.value.problems)
    assert problem.startswith("plant.yaml:9:") and "machines[0].simulator" in problem
    assert "time_scale: expected a number > 0" in problem
