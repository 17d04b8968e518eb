"""A plant YAML full of schema errors (it passes every loader limit) is refused with exit 2
and located problems, the first `MAX_REPORTED` in file order then `... and N more
problems`, without a spin: the file is composed once more to locate them all, by libyaml,
and each problem costs its path's depth (audit of issue 12 item 9: 80-120 s of CPU for a
4 MiB file, composing it again in pure Python; its lookups scanned each mapping's keys).
Figures: CHANGELOG.md (`validate` of a 4 MiB file of 182,356 problems)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import loader
from edge.config.loader import MAX_REPORTED, parse_plant
from models.errors import PlantConfigError

ROOT = Path(__file__).resolve().parents[3]
MACHINES = 2_000
MACHINE = """  - id: m{i:05d}
    area: a
    line: l
    adapter: modbus
    poll_interval: [1]
    connection: {{host: h, port: 502}}
    points: [{{name: p, register: holding, address: 0, data_type: uint16}}]
"""


def many_wrong_types() -> str:
    """Every machine's `poll_interval` is a list: one located problem per machine."""
    return ("gateway: {id: gw, site: s}\nmachines:\n"
            + "".join(MACHINE.format(i=i) for i in range(MACHINES)))


def refused(text: str) -> PlantConfigError:
    with pytest.raises(PlantConfigError) as caught:
        parse_plant(text, "plant.yaml")
    return caught.value


def test_the_first_problems_in_file_order_then_how_many_more() -> None:
    exc = refused(many_wrong_types())
    assert exc.total == MACHINES and exc.omitted == MACHINES - MAX_REPORTED
    assert len(exc.problems) == MAX_REPORTED
    assert [str(p) for p in exc.problems[:2]] == [
        "plant.yaml:7:20: machines[0].poll_interval: Input should be a valid number",
        "plant.yaml:14:20: machines[1].poll_interval: Input should be a valid number",
    ]
    assert [p.line for p in exc.problems] == [7 + 7 * i for i in range(MAX_REPORTED)]
    assert exc.lines()[-1] == f"... and {MACHINES - MAX_REPORTED} more problems"
    assert str(exc).splitlines() == exc.lines()


def test_a_few_problems_are_all_listed() -> None:
    exc = refused(many_wrong_types().replace("poll_interval: [1]", "poll_interval: 1", 1990))
    assert exc.total == len(exc.problems) == 10 and exc.omitted == 0
    assert not any(line.startswith("...") for line in exc.lines())


@pytest.mark.skipif(loader._FastLoader is None, reason="PyYAML without libyaml")
def test_problems_are_located_from_one_libyaml_composition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Structural, not timed: one composition for all 2,000 problems, and not by the
    pure-Python parser (50-100 s for 4 MiB on a loaded host)."""
    compositions = []
    real = loader._Located._compose

    def counted(self: loader._Located) -> object:
        compositions.append(1)
        return real(self)

    python_parsers = []
    real_init = loader._PlantLoader.__init__

    def python_parser(self: loader._PlantLoader, stream: str) -> None:
        python_parsers.append(1)
        real_init(self, stream)

    monkeypatch.setattr(loader._Located, "_compose", counted)
    monkeypatch.setattr(loader._PlantLoader, "__init__", python_parser)
    exc = refused(many_wrong_types())
    assert exc.total == MACHINES
    assert len(compositions) == 1
    assert python_parsers == []


def test_a_mapping_of_many_unknown_keys_is_located_key_by_key() -> None:
    """Each of a mapping's 3,000 problems is located at its own key's value (the keys
    are indexed once, not scanned per problem)."""
    keys = "".join(f"  k{i}: 1\n" for i in range(3_000))
    exc = refused("gateway:\n  id: gw\n  site: s\n" + keys + "machines: []\n")
    assert exc.total == 3_001  # and the empty machines list
    assert [(p.line, p.column, p.path) for p in exc.problems[:2]] == [
        (4, 7, "gateway.k0"), (5, 7, "gateway.k1")]


def test_validate_prints_the_capped_list_and_exits_2(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(many_wrong_types())
    res = subprocess.run(
        [sys.executable, "-m", "edge.cli", "validate", str(plant)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert "Traceback" not in res.stderr
    assert lines[0] == f"{plant}:7:20: machines[0].poll_interval: Input should be a valid number"
    assert lines[MAX_REPORTED - 1].startswith(f"{plant}:{7 * MAX_REPORTED}:20: ")
    assert lines[MAX_REPORTED:] == [f"... and {MACHINES - MAX_REPORTED} more problems",
                                    f"{MACHINES} problem(s) found"]
