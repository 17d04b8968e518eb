"""adapters/mtconnect/sample.yaml validates as the gateway does and works with simulate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from adapters.base import Adapter, AdapterContext
from adapters.mtconnect.agent import MtconnectAgentAdapter
from adapters.mtconnect.shdr import ShdrAdapter
from simulators import mtconnect_agent, shdr_replay
from simulators.machine import MachineModel

SAMPLE = Path(__file__).resolve().parents[3] / "adapters" / "mtconnect" / "sample.yaml"


async def test_sample_blocks_against_their_simulators(free_port: Callable[[], int]) -> None:
    blocks = yaml.safe_load(SAMPLE.read_text())
    kinds: dict[str, Any] = {
        "mtconnect": (MtconnectAgentAdapter, mtconnect_agent.start_for_gateway),
        "shdr": (ShdrAdapter, shdr_replay.start_for_gateway),
    }
    for block in blocks:
        cls, start = kinds[block["adapter"]]
        port = free_port()
        conn = dict(block["connection"])
        if "url" in conn:
            conn["url"] = f"http://127.0.0.1:{port}"
        else:
            conn["port"] = port
        # exactly what edge/config/loader.py hands the adapter
        settings = cls.settings_model.model_validate(
            {"connection": conn, "points": block.get("points", [])})
        model = MachineModel.from_options(block["id"], block["simulator"])
        handle = await start([(block["id"], settings, model)])
        adapter: Adapter = cls(AdapterContext(block["id"], poll_interval=0.1), settings)
        try:
            await adapter.connect()
            async with asyncio.timeout(5):
                batch = await anext(aiter(adapter.stream()))
            signals = {s.signal for s in batch}
            assert {"execution", "controller_mode", "part_count", "program",
                    "spindle_speed"} <= signals, block["id"]
            units = {s.signal: s.unit for s in batch}
            assert units["spindle_speed"] == "1/min"
        finally:
            await adapter.aclose()
            await handle.aclose()
