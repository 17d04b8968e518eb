"""A configured point named like a signal its adapter already publishes is refused by
`validate` (and so by `run` and reload), located at the point's `name`.

Why (acceptance audit of issue 13): the demo's dmu-01 (`profile: machine_tool`) had its
AlarmCode node as a point named `alarm`, the profile's own alarm signal. Each alarm change
then carried two `alarm` records, `2002` and `"2002"`: a Sparkplug host re-birthed the
device on every type flip, an InfluxDB consumer hit a field type conflict.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapters.opcua.profile_signals import PROFILE_SIGNALS
from edge.config.loader import load_plant, parse_plant
from models.errors import PlantConfigError

ROOT = Path(__file__).resolve().parents[3]


def opcua_plant(profile: str, point: str) -> str:
    return f"""\
gateway: {{id: gw-1, site: plant-a}}
machines:
  - id: dmu-01
    area: a1
    line: l1
    adapter: opcua
    connection:
      endpoint: opc.tcp://127.0.0.1:4841/
      profile: {profile}
    points:
      - {{name: coolant_temperature, node: "nsu=urn:sim;s=dmu-01.CoolantTemperature"}}
      - {{name: {point}, node: "nsu=urn:sim;s=dmu-01.AlarmCode"}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    return [str(p) for p in info.value.problems]


def test_a_point_named_like_a_profile_signal_is_refused_at_its_name() -> None:
    assert problems(opcua_plant("machine_tool", "alarm")) == [
        "plant.yaml:12:16: machines[0].points[1].name: rename the point, e.g. alarm_code; "
        "profile machine_tool already publishes `alarm`"
    ]


@pytest.mark.parametrize(("profile", "signal"), [
    ("machinery", "execution"), ("machinery", "identification_serial_number"),
    ("machine_tool", "part_count"), ("machine_tool", "production_job"),
    ("machine_tool", "alarm_text"), ("sinumerik", "spindle_load"),
    ("sinumerik", "program_path"), ("none", "availability"),
])
def test_every_profile_refuses_its_own_signals(profile: str, signal: str) -> None:
    (problem,) = problems(opcua_plant(profile, signal))
    assert "machines[0].points[1].name" in problem and f"publishes `{signal}`" in problem


@pytest.mark.parametrize("profile", ["none", "machinery"])
def test_a_name_the_profile_does_not_publish_is_kept(profile: str) -> None:
    # `profile: machinery` maps no program or part counter: a point may supply them
    for name in ("alarm_code", "part_count", "program") if profile == "machinery" else (
            "alarm", "execution"):
        assert parse_plant(opcua_plant(profile, name), "plant.yaml").plant.machines


def test_the_profile_tables_cover_what_the_profiles_derive() -> None:
    """PROFILE_SIGNALS (asyncua-free, for `validate`) against the derive functions."""
    from adapters.opcua import machine_tool, sinumerik

    everything = {"item_state": "Executing", "program_state": "Running", "channel_mode": 1,
                  "feed_override": 100.0, "spindle_rotating": True, "spindle_override": 100.0,
                  "program": "O1", "parts_completed": 3, "parts_good": 2, "job": "J1"}
    assert set(machine_tool.derive(everything)) <= PROFILE_SIGNALS["machine_tool"]
    nc = {"prog_status": 3, "op_mode": 2, "program": "/_N_MPF_DIR/_N_P_MPF", "act_parts": 1,
          "req_parts": 2, "spindle_speed": 1.0, "spindle_load": 2.0, "spindle_override": 3.0,
          "feed_override": 4.0}
    assert set(sinumerik.derive(nc)) <= PROFILE_SIGNALS["sinumerik"]


def test_the_shipped_plants_and_samples_have_no_clash(tmp_path: Path) -> None:
    load_plant(ROOT / "config" / "demo-plant.yaml")
    sample = yaml.safe_load((ROOT / "adapters" / "opcua" / "sample.yaml").read_text())
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump(
        {"gateway": {"id": "gw-1", "site": "s"}, "machines": [sample]}))
    load_plant(plant)


def test_cli_validate_exits_2_naming_file_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "plant.yaml"
    bad.write_text(opcua_plant("machine_tool", "alarm"))
    res = subprocess.run([sys.executable, "-m", "edge.cli", "validate", str(bad)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert f"{bad}:12:" in res.stderr and "machines[0].points[1].name" in res.stderr
    assert "e.g. alarm_code" in res.stderr and "Traceback" not in res.stderr


def test_haas_and_focas_fixed_signals_are_located_at_the_point_too() -> None:
    text = """\
gateway: {id: gw-1, site: plant-a}
machines:
  - {id: vf2-01, area: a1, line: l1, adapter: haas, connection: {host: 127.0.0.1},
     points: [{name: part_count, macro: 3901}, {name: alarm, macro: 3027}]}
  - {id: rd-01, area: a1, line: l1, adapter: focas, connection: {host: 127.0.0.1},
     points: [{name: program, source: macro, number: 500}]}
"""
    assert problems(text) == [
        "plant.yaml:4:55: machines[0].points[1].name: rename the point, e.g. alarm_code; "
        "Q500 (status: true) already publishes `alarm`",
        "plant.yaml:6:22: machines[1].points[0].name: rename the point, e.g. program_point; "
        "the FOCAS adapter already publishes `program`",
    ]
