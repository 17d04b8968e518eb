"""The gateway's contract suite, run against this plugin: all a third party has to write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from edge_gateway_example_adapter import LineMeterAdapter, start_device

from adapters.contract import AdapterContractSuite, ContractCase, closed_port


@asynccontextmanager
async def device() -> AsyncIterator[Mapping[str, Any]]:
    dev = await start_device()
    try:
        yield {"connection": {"host": "127.0.0.1", "port": dev.port, "timeout": 1.0}}
    finally:
        await dev.aclose()


class TestLineMeterContract(AdapterContractSuite):
    case = ContractCase(
        adapter=LineMeterAdapter,
        device=device,
        unreachable=lambda: {"connection": {"host": "127.0.0.1", "port": closed_port(),
                                            "timeout": 0.5}},
        invalid=[{"connection": {}}, {"connection": {"host": "h", "port": 70000}},
                 {"connection": {"host": "h"}, "points": [{"name": "x"}]}],
        expected_signals={"execution", "controller_mode", "part_count", "spindle_speed"},
    )
