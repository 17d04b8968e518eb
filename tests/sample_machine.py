"""An adapter's `sample.yaml` run as the gateway runs a `simulate: true` block: its own
simulator serves the block (on a free port), the adapter built from the block reads once.
Shared by the adapter tests whose sample blocks are served that way (Haas, FOCAS)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel

from adapters.base import AdapterContext, PollingAdapter
from models.plant import Machine
from models.sample import Sample
from simulators.machine import MachineModel

ROOT = Path(__file__).resolve().parents[1]


class Simulator(Protocol):
    async def aclose(self) -> None: ...


async def read_sample_block(
    adapter: str,
    adapter_cls: type[PollingAdapter],
    settings_cls: type[BaseModel],
    start_for_gateway: Callable[[list[tuple[str, Any, MachineModel]]], Awaitable[Simulator]],
    port: int,
) -> dict[str, Sample]:
    """One read of `adapters/<adapter>/sample.yaml` against its simulator, by signal."""
    path = ROOT / "adapters" / adapter / "sample.yaml"
    machine = Machine.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert machine.adapter == adapter and machine.simulate
    raw = {"connection": {**machine.connection, "port": port}, "points": machine.points}
    settings = settings_cls.model_validate(raw)
    model = MachineModel.from_options(machine.id, machine.simulator)
    sim = await start_for_gateway([(machine.id, settings, model)])
    try:
        reader = adapter_cls(AdapterContext(asset=machine.id), settings)
        await reader.connect()
        try:
            return {s.signal: s for s in await reader.read_once()}
        finally:
            await reader.aclose()
    finally:
        await sim.aclose()
