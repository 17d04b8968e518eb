"""Validating a plant imports each adapter's settings model, not the adapter: the parent of
worker processes (and `validate`, `schema`) must not import pymodbus, asyncua or snap7."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.modbus.settings import ModbusSettings
from adapters.opcua.settings import OpcUaSettings
from edge.config import registry

DEMO = Path(__file__).resolve().parents[3] / "config" / "demo-plant.yaml"


def test_settings_come_from_their_own_entry_points() -> None:
    settings = registry.settings_loader()
    assert settings("modbus") is ModbusSettings is registry.load("modbus").settings_model
    assert settings("opcua") is OpcUaSettings
    with pytest.raises(Exception, match="unknown adapter 'nope'"):
        settings("nope")


def test_every_registered_settings_model_is_its_adapters() -> None:
    """The two entry points of a type cannot drift apart: a plant validated with one model
    and run with another would pass `validate` and fail at start."""
    settings = registry.settings_loader()
    for name in registry.available():
        assert settings(name) is registry.load(name).settings_model, name


def test_loading_the_demo_plant_imports_no_protocol_library() -> None:
    """The demo has Modbus, OPC UA and S7 machines (and MTConnect, Haas, FOCAS)."""
    code = (
        "import sys\n"
        "from edge.config.loader import load_plant, json_schema\n"
        f"loaded = load_plant({str(DEMO)!r})\n"
        "json_schema()\n"
        "assert {m.adapter for m in loaded.plant.machines} >= {'modbus', 'opcua', 's7'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pymodbus', 'asyncua', 'snap7'}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
