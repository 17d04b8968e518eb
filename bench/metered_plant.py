"""The machines of a plant with one metered machine, as plant YAML: Modbus machine `m1`
(part records on, one program) and its energy meter `meter` (`meter_for: m1`, kWh and W).

Why here: the part-record bench (bench/bench_parts.py) measures the same pairing that the
part stage's tests (tests/edge/parts/test_part_stage.py) check, so both read one description
of it; tests may import bench (as for the RabbitMQ failover), bench never imports tests.
"""

from __future__ import annotations

from collections.abc import Sequence


def metered_machines_yaml(program: str, ideal_cycle_time: float, signals: Sequence[str]) -> str:
    """The `machines:` block; no connection is ever opened (the stage is fed directly)."""
    return f"""machines:
  - id: m1
    area: a
    line: l
    adapter: modbus
    programs: {{{program}: {{ideal_cycle_time: {ideal_cycle_time}}}}}
    part_record: {{signals: [{", ".join(signals)}]}}
    connection: {{host: 127.0.0.1}}
    points: [{{name: execution, register: holding, address: 0}}]
  - id: meter
    area: a
    line: l
    adapter: modbus
    meter_for: m1
    energy: {{energy_kwh: kwh, power_w: watts}}
    connection: {{host: 127.0.0.1}}
    points: [{{name: kwh, register: input, address: 72, data_type: float32}}]
"""
