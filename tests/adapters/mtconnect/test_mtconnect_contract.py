"""Both MTConnect adapters pass the reusable adapter contract suite (adapters/contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from adapters.contract import AdapterContractSuite, ContractCase, closed_port
from adapters.mtconnect.agent import MtconnectAgentAdapter
from adapters.mtconnect.shdr import ShdrAdapter
from simulators.machine import MachineModel
from simulators.mtconnect_agent import serve_agents
from simulators.shdr_replay import serve_shdr

STATE = {"execution", "controller_mode", "part_count", "program", "emergency_stop",
         "availability"}


@asynccontextmanager
async def agent_device() -> AsyncIterator[dict[str, Any]]:
    sim = await serve_agents([(MachineModel("c1", seed=5), "127.0.0.1", 0)])
    try:
        yield {"connection": {"url": sim.url("c1"), "timeout": 2}, "points": []}
    finally:
        await sim.aclose()


@asynccontextmanager
async def shdr_device() -> AsyncIterator[dict[str, Any]]:
    server = await serve_shdr([(MachineModel("c1", seed=5), "127.0.0.1", 0)])
    try:
        yield {"connection": {"host": "127.0.0.1", "port": server.port("c1")}, "points": []}
    finally:
        await server.aclose()


class TestMtconnectAgentContract(AdapterContractSuite):
    case = ContractCase(
        adapter=MtconnectAgentAdapter,
        device=agent_device,
        unreachable=lambda: {"connection": {"url": f"http://127.0.0.1:{closed_port()}",
                                            "timeout": 1}},
        invalid=[{"connection": {}}, {"connection": {"url": "ftp://x"}},
                 {"connection": {"url": "http://x"}, "points": [{"data_item": "a"}]}],
        expected_signals=STATE,
    )


class TestShdrContract(AdapterContractSuite):
    case = ContractCase(
        adapter=ShdrAdapter,
        device=shdr_device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 1}},
        invalid=[{"connection": {}}, {"connection": {"host": "h", "port": 0}},
                 {"connection": {"host": "h"}, "points": [{"key": "k"}]}],
        expected_signals=STATE,
    )
