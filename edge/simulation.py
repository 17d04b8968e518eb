"""Serve the plant's `simulate: true` machines: the bridge from a plant YAML to simulators/.

Machines sharing a host and port become units of one simulated server, exactly as the
gateway would see a multi-drop Modbus gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from edge.config import LoadedPlant
from edge.observability import get_logger
from models.errors import ConfigProblem, ConfigurationError, PlantConfigError
from simulators.machine import MachineModel
from simulators.modbus_server import ModbusBinding, serve_modbus

SUPPORTED = {"modbus"}


def _bindings(loaded: LoadedPlant) -> list[ModbusBinding]:
    out: list[ModbusBinding] = []
    problems: list[ConfigProblem] = []
    for i, m in enumerate(loaded.plant.machines):
        if not m.simulate:
            continue
        if m.adapter not in SUPPORTED:
            problems.append(
                ConfigProblem(
                    str(loaded.path),
                    None,
                    None,
                    f"machines[{i}].simulate",
                    f"no simulator for adapter {m.adapter!r} yet",
                )
            )
            continue
        try:
            options = dict(m.simulator)
            if m.programs and "programs" not in options and "script" not in options:
                # the machine's own programs and ideal cycle times drive its simulation
                options["programs"] = {
                    name: {"ideal_cycle_time": p.ideal_cycle_time} for name, p in m.programs.items()
                }
            model = MachineModel.from_options(m.id, options)
        except ValueError as exc:
            problems.append(
                ConfigProblem(str(loaded.path), None, None, f"machines[{i}].simulator", str(exc))
            )
            continue
        conn: Any = getattr(loaded.settings[m.id], "connection", None)
        if conn is None or conn.transport != "tcp":
            problems.append(
                ConfigProblem(
                    str(loaded.path),
                    None,
                    None,
                    f"machines[{i}].connection",
                    "the Modbus simulator serves transport 'tcp' only",
                )
            )
            continue
        out.append(ModbusBinding(model, conn.host, conn.port, conn.unit))
    if problems:
        raise PlantConfigError(problems)
    return out


async def start_simulators(loaded: LoadedPlant) -> list[Any]:
    bindings = _bindings(loaded)
    if not bindings:
        return []
    try:
        handle = await serve_modbus(bindings)
    except OSError as exc:
        raise ConfigurationError(f"cannot start simulated machines: {exc} (port in use?)") from exc
    get_logger().info(
        "simulators_started",
        machines=[f"{b.model.asset}@{b.host}:{b.port}/{b.unit}" for b in handle.endpoints],
    )
    return [handle]


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
