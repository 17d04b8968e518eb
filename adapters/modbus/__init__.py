"""Modbus TCP / RTU / RTU-over-TCP adapter; settings reference in README.md.

The adapter class is imported from its module (the entry point names it), not here: the
settings alone must import without the protocol library (edge/config/registry.py).
"""

from .settings import ModbusConnection, ModbusPoint, ModbusSettings

__all__ = ["ModbusConnection", "ModbusPoint", "ModbusSettings"]
