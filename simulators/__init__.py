"""Simulated CNC machines for demos, tests and benchmarks.

One clock-driven model (`machine.py`) is the single source of truth; protocol servers such
as `modbus_server.py` only encode its snapshots. Importing this package starts no I/O.
"""

from simulators.machine import (
    AlarmSpec,
    MachineModel,
    MachineProfile,
    MachineSnapshot,
    ProgramSpec,
    ScriptEvent,
    SimulatorOptions,
)

__all__ = [
    "AlarmSpec",
    "MachineModel",
    "MachineProfile",
    "MachineSnapshot",
    "ProgramSpec",
    "ScriptEvent",
    "SimulatorOptions",
]
