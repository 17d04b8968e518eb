"""An energy meter makes no parts: the `capacity` query offers it to nobody, as the capacity
stream and `reserve` do not (a "free" meter in the answer invited a refused booking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.metered_plant import metered_machines_yaml
from edge.config.loader import load_plant
from edge.query.backend import QueryBackend
from edge.query.handler import QueryError
from models.plant import Machine


class Device:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine


class Fleet:
    """The running devices as the backend reads them: ids and each one's machine."""

    def __init__(self, machines: list[Machine]) -> None:
        self.machines = {m.id: m for m in machines}

    def assets(self) -> list[str]:
        return list(self.machines)

    def device(self, asset: str) -> Device:
        return Device(self.machines[asset])


class Offers:
    def record(self, asset: str) -> dict[str, Any]:
        return {"asset": asset, "free": []}


def test_the_capacity_query_never_offers_an_energy_meter(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text("gateway: {id: gw-1, site: plant-a}\n"
                                         + metered_machines_yaml("P1", 10, ["load"]))
    loaded = load_plant(tmp_path / "plant.yaml")
    backend = QueryBackend(lambda: loaded, Fleet(loaded.plant.machines),  # type: ignore[arg-type]
                           None, Offers(), stats=dict, counts=dict)  # type: ignore[arg-type]
    assert list(backend.query_capacity(None)["machines"]) == ["m1"]
    assert list(backend.query_capacity("m1")["machines"]) == ["m1"]
    with pytest.raises(QueryError, match="energy meter of m1") as refused:
        backend.query_capacity("meter")
    assert refused.value.code == "not_found"
