"""Serve the plant's `simulate: true` machines: the bridge from a plant YAML to simulators/.

Every simulated machine gets one clock-driven `MachineModel` (seeded, scripted or not),
idle through the plant calendar's breaks unless scripted, and is served by the protocol
server of its adapter type. `STARTERS` maps an adapter type to a function that serves a
group of machines of that type and returns a handle with `aclose()`; each protocol's
starter lives beside its server in simulators/. The connection block is the adapter's
validated settings: a simulator listens where the gateway will connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from pydantic import ValidationError

from edge.config.loader import LoadedPlant
from edge.observability import get_logger
from models.errors import ConfigProblem, ConfigurationError, PlantConfigError
from models.plant import Machine, ShiftCalendar
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
from simulators.meter import MeterModel, MeterProfile

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


def simulated_models(
    loaded: LoadedPlant,
) -> tuple[dict[str, list[SimulatedMachine]], dict[str, MeterModel]]:
    """Each adapter type's simulated machines, and the simulated meters by meter id."""
    groups: dict[str, list[SimulatedMachine]] = {}
    meters: dict[str, MeterModel] = {}
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
        if m.meter_for is not None:
            meter = _meter(loaded, m)
            if isinstance(meter, str):
                problems.append(ConfigProblem(*where, f"machines[{i}].meter_for", meter))
            else:
                meters[m.id] = meter
                groups.setdefault(m.adapter, []).append(
                    (m.id, loaded.settings[m.id], meter.machine))
            continue
        try:
            model = MachineModel.from_options(m.id, _model_options(m), breaks=_breaks(loaded))
        except ValueError as exc:
            problems.append(ConfigProblem(*where, f"machines[{i}].simulator", str(exc)))
            continue
        groups.setdefault(m.adapter, []).append((m.id, loaded.settings[m.id], model))
    if problems:
        raise PlantConfigError(problems)
    return groups, meters


def _breaks(loaded: LoadedPlant) -> ShiftCalendar | None:
    """The calendar whose breaks the simulated machines idle through (simulators/breaks.py),
    so the demo makes no part in planned downtime; None when it has no break."""
    shifts = loaded.plant.shifts
    return shifts if any(s.breaks for s in shifts.shifts) else None


def _model_options(m: Machine) -> dict[str, Any]:
    options = dict(m.simulator)
    options.pop("meter", None)
    if m.programs and "programs" not in options and "script" not in options:
        # the machine's own programs and ideal cycle times drive its simulation
        options["programs"] = {
            name: {"ideal_cycle_time": p.ideal_cycle_time} for name, p in m.programs.items()
        }
    return options


def _meter(loaded: LoadedPlant, m: Machine) -> MeterModel | str:
    """The simulated meter of `m.meter_for` over the same deterministic machine model, or
    the problem."""
    if m.adapter != "modbus":
        return "simulated meters speak Modbus (SDM630 registers) only"
    target = loaded.plant.machine(str(m.meter_for))
    if not target.simulate:
        return f"the metered machine {target.id!r} is not simulated"
    try:
        machine = MachineModel.from_options(target.id, _model_options(target),
                                            breaks=_breaks(loaded))
        profile = MeterProfile.model_validate(m.simulator.get("meter", {}))
    except (ValueError, ValidationError) as exc:
        return str(exc)
    return MeterModel(machine, profile)


async def start_simulators(loaded: LoadedPlant) -> list[SimulatorHandle]:
    handles: list[SimulatorHandle] = []
    try:
        groups, meters = simulated_models(loaded)
        for adapter, machines in groups.items():
            starter: Starter = STARTERS[adapter]
            if adapter == "modbus":  # simulated energy meters are Modbus units too
                starter = partial(modbus_server.start_for_gateway, meters=meters)
            try:
                handles.append(await starter(machines))
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
    received: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, partial(_stop, stop, received, sig.name))
    await stop.wait()
    # side by side: one after the other, each server's own wind-down added up to seconds
    await asyncio.gather(*(h.aclose() for h in handles))
    get_logger().info("simulators_stopped", signal=received[0] if received else None,
                      servers=len(handles))
    return 0


def _stop(stop: asyncio.Event, received: list[str], name: str) -> None:
    received.append(name)
    stop.set()
