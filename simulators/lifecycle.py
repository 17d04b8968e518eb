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
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from simulators.machine import MachineModel

__all__ = ["SimulatedMachine", "SimulatorHandle", "serve_machines", "started"]

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
