"""The plant YAML is read by libyaml when PyYAML has it (11 s of CPU for a 500-machine
plant in pure Python, 2 s with it; issue 17): the same data, duplicate keys and marks as
the pure-Python parser, whose messages stay the ones users see for a refused file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.config import loader, registry
from edge.config.loader import parse_plant
from models.errors import PlantConfigError

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(loader._FastLoader is None, reason="PyYAML without libyaml")


@pytest.mark.parametrize("name", ["plant.example.yaml", "demo-plant.yaml"])
def test_libyaml_reads_what_the_python_parser_reads(name: str) -> None:
    text = (ROOT / "config" / name).read_text()
    text += "\nextra: &a {x: 1, x: 2, when: 2026-01-02}\nmore: *a\n"  # alias, dup, date
    assert loader._FastLoader is not None
    fast_root, fast, fast_dups = loader._read_yaml(text, name, loader._FastLoader)
    slow_root, slow, slow_dups = loader._read_yaml(text, name, loader._PlantLoader)
    assert fast == slow
    assert fast_dups == slow_dups and fast_dups  # the duplicate `x`, located alike
    assert shape(fast_root) == shape(slow_root)  # every node where it was, same tag and value


def shape(node: yaml.Node | None) -> object:
    """A node tree as comparable data: kind, tag, line, column, and value or children."""
    if node is None:
        return None
    mark = (type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column)
    if isinstance(node, yaml.ScalarNode):
        return (*mark, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (*mark, [shape(n) for n in node.value])
    assert isinstance(node, yaml.MappingNode)
    return (*mark, [(shape(k), shape(v)) for k, v in node.value])


def test_a_syntax_error_keeps_the_python_parsers_message() -> None:
    text = "gateway:\n  id: gw\n  site: [unclosed\nmachines: []\n"
    with pytest.raises(yaml.YAMLError) as slow:
        yaml.load(text, Loader=loader._PlantLoader)
    with pytest.raises(PlantConfigError) as refused:
        parse_plant(text, "plant.yaml")
    problem = refused.value.problems[0]
    assert isinstance(slow.value, yaml.MarkedYAMLError) and slow.value.problem is not None
    assert problem.message.endswith(slow.value.problem)


def test_an_impossible_date_is_located_by_either_parser() -> None:
    with pytest.raises(PlantConfigError, match="invalid date or time"):
        parse_plant("gateway: {id: gw, site: s, since: 2026-13-45}\nmachines: []\n", "p.yaml")


def test_loader_scans_entry_points_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scans = []
    real = registry._entry_points

    def counted() -> dict[str, object]:
        scans.append(1)
        return real()  # type: ignore[return-value]

    monkeypatch.setattr(registry, "_entry_points", counted)
    load = registry.loader()
    assert load("modbus") is load("modbus") is registry.load("modbus")
    assert len(scans) == 2  # one for the loader, one for the plain `load`
    with pytest.raises(Exception, match="unknown adapter 'nope'"):
        load("nope")
