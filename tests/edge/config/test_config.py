"""Plant YAML loading: every problem located by file, line, column and field path."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config.loader import json_schema, load_plant, parse_plant
from models.errors import PlantConfigError
from models.shift_calendar import shift_at

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "config" / "demo-plant.yaml"

MINIMAL = """\
gateway: {id: gw-1, site: plant-a}
machines:
  - id: m1
    area: a1
    line: l1
    adapter: modbus
    connection: {host: 127.0.0.1, port: 5020}
    points:
      - {name: spindle_speed, register: holding, address: 20, data_type: float32}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    return [str(p) for p in info.value.problems]


def test_demo_plant_is_valid() -> None:
    loaded = load_plant(DEMO)
    assert len(loaded.plant.machines) >= 3
    # one machine per adapter type, so `make demo` shows every protocol
    assert {m.adapter for m in loaded.plant.machines} == {
        "modbus",
        "mtconnect",
        "shdr",
        "haas",
        "focas",
        "s7",
    } | ({"opcua"} if any(m.adapter == "opcua" for m in loaded.plant.machines) else set())
    assert set(loaded.settings) == {m.id for m in loaded.plant.machines}


def test_minimal_plant_loads_with_adapter_settings() -> None:
    loaded = parse_plant(MINIMAL, "plant.yaml")
    settings = loaded.settings["m1"]
    assert settings.points[0].data_type == "float32"  # type: ignore[attr-defined]


def test_generic_field_error_is_located() -> None:
    text = MINIMAL.replace("id: m1", "id: M 1")
    assert problems(text) == [
        "plant.yaml:3:9: machines[0].id: String should match pattern '^[a-z0-9_-]+$'"
    ]


def test_unknown_field_is_named() -> None:
    text = MINIMAL.replace("    line: l1\n", "    line: l1\n    lien: l2\n")
    (p,) = problems(text)
    assert p.startswith("plant.yaml:6:11: machines[0].lien: unknown field")
    assert "did you mean 'line'?" in p


def test_a_misspelt_key_names_the_key_it_was_meant_to_be() -> None:
    """In the plant schema and in an adapter's point settings alike; a key far from any
    known one gets the keys its block takes instead."""
    text = (
        MINIMAL.replace("{id: gw-1, site: plant-a}", "{id: gw-1, site: plant-a, topic_prefx: e}")
        .replace("data_type: float32", "data_typ: float32")
        + "shifts: {timezone: UTC, qqq: 1}\n"
    )
    assert problems(text) == [
        "plant.yaml:1:49: gateway.topic_prefx: unknown field: did you mean 'topic_prefix'? "
        "(`edge-gateway schema` lists every key)",
        "plant.yaml:9:73: machines[0].points[0].data_typ: unknown field: did you mean "
        "'data_type'? (`edge-gateway schema` lists every key)",
        "plant.yaml:10:30: shifts.qqq: unknown field: this block takes holidays, shifts, "
        "timezone",
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        # YAML 1.1 reads an unquoted 22:00 as 1320 (base 60); it was taken as 00:22 UTC
        ("22:00", 'unquoted, YAML reads 22:00 as the number 1320: write the time in quotes, '
                  '"22:00"'),
        # and an unquoted 22:00:00 as 79200: the advice is 22:00:00, not "1320:00"
        ("22:00:00", 'unquoted, YAML reads 22:00:00 as the number 79200: write the time in '
                     'quotes, "22:00:00"'),
        ('"6am"', '\'6am\' is not a time of day: write "HH:MM" (24 h, in quotes), e.g. "06:00"'),
    ],
)
def test_a_shift_time_that_is_not_hh_mm_says_what_to_write(written: str, message: str) -> None:
    text = MINIMAL + f'shifts:\n  shifts:\n    - {{name: late, start: "14:00", end: {written}}}\n'
    (p,) = problems(text)
    assert p == f"plant.yaml:12:41: shifts.shifts[0].end: Value error, {message}"


def test_quoted_shift_times_are_read_as_written() -> None:
    text = MINIMAL + 'shifts:\n  shifts:\n    - {name: late, start: "14:00", end: "22:00:00"}\n'
    (shift,) = parse_plant(text, "plant.yaml").plant.shifts.shifts
    assert (shift.start.isoformat(), shift.end.isoformat()) == ("14:00:00", "22:00:00")


def test_adapter_settings_errors_are_located_in_the_machine_block() -> None:
    text = MINIMAL.replace("address: 20", "address: 65535")
    (p,) = problems(text)
    assert p.startswith("plant.yaml:9:9: machines[0].points[0]:")
    assert "65535" in p or "address" in p


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = MINIMAL.replace("site: plant-a", "site: Plant A").replace("port: 5020", "port: 99999")
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("plant.yaml:1:") and "gateway.site" in found[0]
    assert "machines[0].connection.port" in found[1]


def test_unknown_adapter_lists_installed_ones() -> None:
    (p,) = problems(MINIMAL.replace("adapter: modbus", "adapter: profinet"))
    assert p.startswith("plant.yaml:6:14: machines[0].adapter: unknown adapter 'profinet'")
    assert "modbus" in p


def test_a_problem_in_a_merged_mapping_is_located_at_the_anchor() -> None:
    text = MINIMAL.replace("gateway:", "x-conn: &conn\n  host: 127.0.0.1\n  port: 99999\ngateway:")
    text = text.replace("connection: {host: 127.0.0.1, port: 5020}",
                        "connection:\n      <<: *conn\n      unit: 1")
    found = problems(text)
    assert "plant.yaml:3:9: machines[0].connection.port: Input should be less than or equal " \
        "to 65535" in found


def test_a_loaded_plant_still_locates_fields() -> None:
    """The node tree is not kept after loading (memory): `locate` composes the text again."""
    loaded = parse_plant(MINIMAL, "plant.yaml")
    assert loaded.locate(("machines", 0, "adapter")) == (6, 14)
    assert loaded.locate(("machines", 0, "points", 0, "address")) == (9, 59)


def test_yaml_syntax_error_is_located() -> None:
    (p,) = problems(MINIMAL.replace("machines:\n", "machines:\n  - id: [\n"))
    assert p.startswith("plant.yaml:4:") and "YAML syntax error" in p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway:\n  id: gw\n   site: s\n",
         "plant.yaml:3:8: YAML syntax error: mapping values are not allowed here (check this "
         "line's indentation against the line above, or quote a value holding ': ')"),
        ("gateway:\n\tid: gw\n",
         "plant.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token "
         "(indent with spaces: YAML does not allow tabs there)"),
        ("machines:\n  - id: m1\n    area: a\n  line: l\n",
         "plant.yaml:4:3: YAML syntax error: expected <block end>, but found '?' (this line is "
         "indented differently from the lines of its block)"),
        ("gateway: {id: gw, site: s\nmachines: []\n",
         "plant.yaml:2:9: YAML syntax error: expected ',' or '}', but got ':' (a { } mapping "
         "opened earlier lacks its '}' (or a ',') before this)"),
    ],
)
def test_yaml_syntax_errors_say_what_the_slip_usually_is(text: str, expected: str) -> None:
    """PyYAML's "expected <block end>, but found '?'" means nothing to a plant engineer."""
    assert problems(text) == [expected]


def test_duplicate_keys_are_errors() -> None:
    text = MINIMAL.replace("    line: l1\n", "    line: l1\n    line: l2\n")
    assert problems(text) == ["plant.yaml:6:5: machines[0].line: duplicate key"]


def test_inline_secret_is_refused() -> None:
    text = MINIMAL + "destinations:\n  - {id: p1, url: mqtt://h:1883, password: hunter2}\n"
    (p,) = problems(text)
    assert "destinations[0].password" in p
    assert "hunter2" not in p.split(":", 4)[-1] or "inline" in p


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PlantConfigError, match="cannot read"):
        load_plant(tmp_path / "nope.yaml")


def test_schema_file_matches_models() -> None:
    on_disk = json.loads((ROOT / "config" / "schema.json").read_text())
    assert on_disk == json_schema(), "config/schema.json is stale: run `make schema`"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_validate_ok_and_error_exit_codes(tmp_path: Path) -> None:
    ok = cli("validate", str(DEMO))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout and f"{len(load_plant(DEMO).plant.machines)} machine(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("register: holding", "register: holdings"))
    res = cli("validate", str(bad))
    assert res.returncode == 2
    assert f"{bad}:9:" in res.stderr and "machines[0].points[0].register" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_run_with_invalid_yaml_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: gw-1}\n")
    res = cli("run", "-c", str(bad))
    assert res.returncode == 2
    assert "gateway.site: required field is missing" in res.stderr
    assert "Traceback" not in res.stderr


def test_format_options_that_cannot_apply_are_located_errors() -> None:
    text = MINIMAL + (
        "destinations:\n"
        "  - {id: a, url: mqtt://h:1883, format: sparkplug_b, values: true}\n"
        "  - {id: b, url: mqtt://h:1883, unsigned_on_mqtt311: true}\n"
    )
    found = problems(text)
    assert len(found) == 2, found
    assert found[0].startswith("plant.yaml:11:") and "destinations[0]" in found[0]
    assert "'values' is for envelope and json" in found[0]
    assert "destinations[1]" in found[1] and "format json only" in found[1]
    (unknown,) = problems(MINIMAL + "destinations:\n  - {id: c, url: mqtt://h, format: protobuf}\n")
    assert "destinations[0].format" in unknown and "'sparkplug_b'" in unknown


def test_a_repeated_machine_or_destination_id_is_located_at_the_repeat() -> None:
    """A copied machine block whose id was not changed: the line of the copy, not 1:1."""
    machine = MINIMAL.split("machines:\n", 1)[1]
    text = MINIMAL + machine + (
        "destinations:\n"
        "  - {id: plat, url: mqtt://h:1883}\n"
        "  - {id: plat, url: mqtt://k:1883}\n"
    )
    assert problems(text) == [
        "plant.yaml:10:9: machines[1].id: duplicate id 'm1' (also machines[0]); ids must be unique",
        "plant.yaml:19:10: destinations[1].id: duplicate id 'plat' (also destinations[0]); "
        "ids must be unique",
    ]


def test_the_demo_calendar_has_a_shift_at_every_hour_of_every_day() -> None:
    """The demo shows OEE whenever it is started (issue 14: a Sunday's `query oee` was
    `not_found`): every quarter hour of the two weeks around each of 2027's DST changes in
    Europe/Berlin (03-28, 10-31), weekends included, lies in one of its shifts."""
    cal = load_plant(DEMO).plant.shifts
    assert cal is not None
    instants = [first + timedelta(minutes=15 * i)
                for first in (datetime(2027, 3, 22, tzinfo=UTC), datetime(2027, 10, 25, tzinfo=UTC))
                for i in range(14 * 96)]
    gaps = [t for t in instants if shift_at(cal, t) is None]
    assert not gaps, gaps[:5]
