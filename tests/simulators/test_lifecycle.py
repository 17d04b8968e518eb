"""Every protocol simulator starts and stops the same way (simulators/lifecycle.py).

Why: a `--with-simulators` start that fails on its second machine (a port in use) must
close the first machine's listener, for FOCAS, Haas, Modbus and S7 alike, or the next start
finds its own leftover; and `async with` must close what it served.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from simulators import focas_server, haas_server, modbus_server, s7_server
from simulators.lifecycle import SimulatedMachine, SimulatorHandle
from simulators.machine import MachineModel

Start = Callable[[list[SimulatedMachine]], Awaitable[SimulatorHandle]]
STARTS: dict[str, tuple[Start, dict[str, Any]]] = {
    "focas": (focas_server.start_for_gateway, {}),
    "haas": (haas_server.start_for_gateway, {"transport": "tcp"}),
    "modbus": (modbus_server.start_for_gateway, {"transport": "tcp", "unit": 1}),
    "s7": (s7_server.start_for_gateway, {}),
}


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def machine(asset: str, port: int, extra: dict[str, Any]) -> SimulatedMachine:
    conn = SimpleNamespace(host="127.0.0.1", port=port, **extra)
    return asset, SimpleNamespace(connection=conn), MachineModel.from_options(asset, {})


@pytest.mark.parametrize("protocol", sorted(STARTS))
async def test_a_failed_start_closes_what_it_opened(protocol: str, taken: int) -> None:
    start, extra = STARTS[protocol]
    first = free_port()
    with pytest.raises(OSError):
        await start([machine("m1", first, extra), machine("m2", taken, extra)])
    assert can_bind(first), f"{protocol}: the first machine's port was left listening"


@pytest.mark.parametrize("protocol", sorted(STARTS))
async def test_async_with_serves_then_closes(protocol: str) -> None:
    start, extra = STARTS[protocol]
    port = free_port()
    async with await start([machine("m1", port, extra)]) as sim:
        assert isinstance(sim, SimulatorHandle)
        assert not can_bind(port)
    assert can_bind(port)
