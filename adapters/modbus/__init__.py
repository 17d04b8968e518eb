"""Modbus TCP / RTU / RTU-over-TCP adapter; settings reference in README.md."""

from .adapter import ModbusAdapter
from .settings import ModbusConnection, ModbusPoint, ModbusSettings

__all__ = ["ModbusAdapter", "ModbusConnection", "ModbusPoint", "ModbusSettings"]
