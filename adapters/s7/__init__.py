"""Siemens S7 adapter (ISO-on-TCP, python-snap7): see README.md in this directory.

The adapter class is imported from its module (the entry point names it), not here: the
settings alone must import without the protocol library (edge/config/registry.py).
"""

from .settings import S7Settings

__all__ = ["S7Settings"]
