"""How every protocol simulator starts and stops: one implementation instead of one per server.

Why: the FOCAS, Haas, Modbus and S7 servers each repeated the same lines: a handle usable
with `async with`, a start that closes what it already opened when a later port cannot be
bound (so a failed start never leaves a listener behind), and the gateway's
`--with-simulators` entry that serves a group of machines at their settings' addresses.
Each server module keeps only what is particular to its protocol: how one machine is
added, and what a machine's connection settings must say.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from simulators.machine import MachineModel

__all__ = ["SimulatedMachine", "SimulatorHandle", "TcpListeners", "serve_machines", "started"]

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""One client connection, served until it ends; the listener closes the writer after."""

SimulatedMachine = tuple[str, Any, MachineModel]
"""(machine id, the adapter's validated settings, its model)"""


class SimulatorHandle(abc.ABC):
    """Running simulated endpoints; `async with` closes them."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop listening and drop every session; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class TcpListeners:
    """The TCP ports of a simulator (one per machine) and the clients they accepted; `ports`
    maps asset -> bound port (0 asks for a free one). `aclose` stops listening and drops
    every client, as a control that is switched off would."""

    def __init__(self, label: str, log: logging.Logger) -> None:
        self._label = label
        self._log = log
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.ports: dict[str, int] = {}

    async def listen(self, asset: str, host: str, port: int, session: Session) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                await session(reader, writer)
            except (ConnectionError, OSError):
                pass  # a dropped peer: a real control just closes the session
            finally:
                self._writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(handle, host, port)
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        self.ports[asset] = bound
        self._log.info("simulated machine %s on %s %s:%d", asset, self._label, host, bound)
        return bound

    async def aclose(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()


H = TypeVar("H", bound=SimulatorHandle)


async def started(sim: H, fill: Callable[[H], Awaitable[None]]) -> H:
    """`sim` once `fill(sim)` has added its machines; if that fails (a port in use, a
    setting it cannot serve) what was opened is closed again before the error goes on."""
    try:
        await fill(sim)
    except BaseException:
        await sim.aclose()
        raise
    return sim


async def serve_machines(
    sim: H,
    machines: list[SimulatedMachine],
    add: Callable[[H, str, Any, MachineModel], Awaitable[None]],
) -> H:
    """The gateway's `--with-simulators` start of one protocol: `add(sim, asset, settings,
    model)` per machine, in order, all closed again if one fails."""

    async def fill(s: H) -> None:
        for asset, settings, model in machines:
            await add(s, asset, settings, model)

    return await started(sim, fill)
