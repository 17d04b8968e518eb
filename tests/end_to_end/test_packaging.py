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


def test_the_demo_broker_is_an_extra_not_a_dependency() -> None:
    """A shop-floor install (`pip install edge-gateway`) does not bring amqtt."""
    from importlib.metadata import requires

    reqs = requires("edge-gateway") or []
    amqtt = [r for r in reqs if r.startswith("amqtt")]
    assert amqtt and all('extra == "demo"' in r for r in amqtt), reqs


def test_run_without_destinations_nor_demo_broker_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    from edge.cli import main
    from edge.daemon import embedded_broker

    monkeypatch.setattr(embedded_broker, "available", lambda: False)
    try:
        rc = main(["run", "-c", str(ROOT / "config" / "demo-plant.yaml"), "--no-console"])
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert rc == 2
    assert "destinations:" in err and "--broker" in err and "edge-gateway[demo]" in err
