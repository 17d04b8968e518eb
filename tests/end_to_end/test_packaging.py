"""The top-level package names are generic (`models`, `edge`...) and exist on PyPI too:
prove that what gets imported is this repository's code."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["models", "adapters", "edge", "simulators"])
def test_top_level_packages_resolve_to_this_repo(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / name


def test_modbus_adapter_is_registered_as_entry_point() -> None:
    from edge.config import registry

    assert "modbus" in registry.available()
    assert registry.load("modbus").__module__ == "adapters.modbus.adapter"
