"""Energy meters and the carbon factor in the plant YAML: located errors, time-of-day bands."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.config.loader import parse_plant
from models.carbon import CarbonFactor
from models.errors import PlantConfigError

PLANT = """\
gateway:
  id: gw-1
  site: plant-a
  carbon:
    kg_per_kwh: 0.4
    source: grid agency
    year: 2025
    time_of_day:
      - {start: "22:00", end: "06:00", kg_per_kwh: 0.3}
      - {start: "11:00", end: "15:00", kg_per_kwh: 0.2}
shifts: {timezone: Europe/Berlin}
machines:
  - id: m1
    area: a1
    line: l1
    adapter: modbus
    part_record: {signals: [spindle_load]}
    connection: {host: 127.0.0.1, port: 5020}
    points: [{name: spindle_load, register: holding, address: 20, data_type: float32}]
  - id: meter-1
    area: a1
    line: l1
    adapter: modbus
    meter_for: METER_FOR
    energy: {energy_kwh: kwh}
    connection: {host: 127.0.0.1, port: 5021}
    points: [{name: kwh, register: input, address: 72, data_type: float32}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    return [str(p) for p in info.value.problems]


def test_a_meter_for_no_machine_or_a_second_meter_is_located() -> None:
    assert problems(PLANT.replace("METER_FOR", "m9")) == [
        "plant.yaml:24:16: machines[1].meter_for: 'm9' is no machine of this plant"]
    second = PLANT.replace("METER_FOR", "m1") + PLANT[PLANT.index("  - id: meter-1"):].replace(
        "meter-1", "meter-2").replace("METER_FOR", "m1")
    (problem,) = problems(second)
    assert "machines[2].meter_for: machine 'm1' already has a meter: 'meter-1'" in problem
    no_kwh = PLANT.replace("METER_FOR", "m1").replace("energy: {energy_kwh: kwh}",
                                                      "energy: {power_w: kwh}")
    assert "needs 'energy.energy_kwh'" in problems(no_kwh)[0]
    assert "another machine" in problems(PLANT.replace("METER_FOR", "meter-1"))[0]


def test_the_time_of_day_factor_applies_in_the_calendar_zone_across_midnight() -> None:
    plant = parse_plant(PLANT.replace("METER_FOR", "m1"), "plant.yaml").plant
    factor = CarbonFactor(plant.gateway.carbon, plant.shifts.timezone)
    winter = {h: factor(datetime(2026, 1, 15, h, 30, tzinfo=UTC)) for h in (4, 5, 11, 14, 21)}
    # Berlin is UTC+1 in January: 04:30Z = 05:30 (night), 05:30Z = 06:30 (day rate)
    assert winter[4] == {"kg_per_kwh": 0.3, "source": "grid agency", "year": 2025}
    assert winter[5] is not None and winter[5]["kg_per_kwh"] == 0.4
    assert winter[11] is not None and winter[11]["kg_per_kwh"] == 0.2  # 12:30 local
    assert winter[14] is not None and winter[14]["kg_per_kwh"] == 0.4  # 15:30 local
    assert winter[21] is not None and winter[21]["kg_per_kwh"] == 0.3  # 22:30 local
    assert CarbonFactor(None)(datetime(2026, 1, 15, tzinfo=UTC)) is None
