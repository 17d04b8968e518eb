"""The OPC UA adapter passes the reusable adapter contract suite (adapters/contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from adapters.contract import AdapterContractSuite, ContractCase, closed_port
from adapters.opcua.adapter import OpcUaAdapter
from simulators.machine import MachineModel
from simulators.opcua_server import SIM_URI, serve_opcua


@asynccontextmanager
async def simulated_machine() -> AsyncIterator[dict[str, Any]]:
    port = closed_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    server = await serve_opcua([(MachineModel("asset-1", time_scale=60), endpoint)])
    try:
        yield {"connection": {"endpoint": endpoint, "profile": "machine_tool",
                              "publishing_interval": 0.1, "timeout": 2.0},
               "points": [{"name": "spindle_speed", "unit": "1/min",
                           "node": f"nsu={SIM_URI};s=asset-1.SpindleSpeed"}]}
    finally:
        await server.aclose()


class TestOpcUaContract(AdapterContractSuite):
    case = ContractCase(
        adapter=OpcUaAdapter,
        device=simulated_machine,
        unreachable=lambda: {"connection": {"endpoint": f"opc.tcp://127.0.0.1:{closed_port()}/",
                                            "timeout": 1.0}, "points": [
            {"name": "x", "node": "i=2258"}]},
        invalid=[
            {"connection": {}},
            {"connection": {"endpoint": "http://x/"}, "points": [{"name": "x", "node": "i=1"}]},
            {"connection": {"endpoint": "opc.tcp://h:4840/"},
             "points": [{"name": "x", "node": "ns=2;s=x"}]},
            {"connection": {"endpoint": "opc.tcp://h:4840/", "security_policy": "Basic256Sha256"},
             "points": [{"name": "x", "node": "i=1"}]},
        ],
        expected_signals={"availability"},
    )


@asynccontextmanager
async def simulated_sinumerik() -> AsyncIterator[dict[str, Any]]:
    port = closed_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    server = await serve_opcua([(MachineModel("asset-1", time_scale=60), endpoint)],
                               sinumerik=[endpoint])
    try:
        yield {"connection": {"endpoint": endpoint, "profile": "sinumerik",
                              "publishing_interval": 0.1, "timeout": 2.0}}
    finally:
        await server.aclose()


class TestOpcUaSinumerikContract(AdapterContractSuite):
    case = ContractCase(
        adapter=OpcUaAdapter,
        device=simulated_sinumerik,
        unreachable=lambda: {"connection": {"endpoint": f"opc.tcp://127.0.0.1:{closed_port()}/",
                                            "timeout": 1.0, "profile": "sinumerik"}},
        invalid=[{"connection": {"endpoint": "opc.tcp://h:4840/", "profile": "fanuc"}}],
        expected_signals={"availability"},
    )
