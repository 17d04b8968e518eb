"""Siemens S7 adapter (ISO-on-TCP, python-snap7): see README.md in this directory."""

from .adapter import S7Adapter
from .settings import S7Settings

__all__ = ["S7Adapter", "S7Settings"]
