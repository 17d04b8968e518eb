"""Serve the plant's `simulate: true` machines: the bridge from a plant YAML to simulators/.

Every simulated machine gets one clock-driven `MachineModel` (seeded, scripted or not) and
is served by the protocol server of its adapter type. `STARTERS` maps an adapter type to a
function that serves a group of machines of that type and returns a handle with `aclose()`;
each protocol's starter lives beside its server in simulators/. The connection block is
the adapter's validated settings: a simulator listens where the gateway will connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

from edge.config.loader import LoadedPlant
from edge.observability import get_logger
from models.errors import ConfigProblem, ConfigurationError, PlantConfigError
from simulators import (
    focas_server,
    haas_server,
    modbus_server,
    mtconnect_agent,
    opcua_server,
    s7_server,
    shdr_replay,
)
from simulators.lifecycle import SimulatedMachine, SimulatorHandle
from simulators.machine import MachineModel

Starter = Callable[[list[SimulatedMachine]], Awaitable[SimulatorHandle]]


STARTERS: dict[str, Starter] = {
    "modbus": modbus_server.start_for_gateway,
    "mtconnect": mtconnect_agent.start_for_gateway,
    "shdr": shdr_replay.start_for_gateway,
    "haas": haas_server.start_for_gateway,
    "focas": focas_server.start_for_gateway,
    "opcua": opcua_server.start_for_gateway,
    "s7": s7_server.start_for_gateway,
}


def _models(loaded: LoadedPlant) -> dict[str, list[SimulatedMachine]]:
    groups: dict[str, list[SimulatedMachine]] = {}
    problems: list[ConfigProblem] = []
    for i, m in enumerate(loaded.plant.machines):
        if not m.simulate:
            continue
        where = (str(loaded.path), None, None)
        if m.adapter not in STARTERS:
            problems.append(
                ConfigProblem(
                    *where, f"machines[{i}].simulate", f"no simulator for adapter {m.adapter!r} yet"
                )
            )
            continue
        options = dict(m.simulator)
        if m.programs and "programs" not in options and "script" not in options:
            # the machine's own programs and ideal cycle times drive its simulation
            options["programs"] = {
                name: {"ideal_cycle_time": p.ideal_cycle_time} for name, p in m.programs.items()
            }
        try:
            model = MachineModel.from_options(m.id, options)
        except ValueError as exc:
            problems.append(ConfigProblem(*where, f"machines[{i}].simulator", str(exc)))
            continue
        groups.setdefault(m.adapter, []).append((m.id, loaded.settings[m.id], model))
    if problems:
        raise PlantConfigError(problems)
    return groups


async def start_simulators(loaded: LoadedPlant) -> list[SimulatorHandle]:
    handles: list[SimulatorHandle] = []
    try:
        for adapter, machines in _models(loaded).items():
            try:
                handles.append(await STARTERS[adapter](machines))
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot start simulated {adapter} machines: {exc} (port in use?)"
                ) from exc
            get_logger().info(
                "simulators_started", adapter=adapter, machines=[asset for asset, _, _ in machines]
            )
    except BaseException:
        for h in handles:
            await h.aclose()
        raise
    return handles


async def serve_forever(loaded: LoadedPlant) -> int:
    handles = await start_simulators(loaded)
    if not handles:
        get_logger().error("no_simulated_machines", hint="mark machines with `simulate: true`")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for h in handles:
        await h.aclose()
    return 0
