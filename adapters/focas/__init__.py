"""FANUC FOCAS2 Ethernet adapter (publicly described subset); see README.md.

The adapter class is imported from its module (the entry point names it), not here: the
settings alone must import without the protocol library (edge/config/registry.py).
"""

from .settings import FocasConnection, FocasPoint, FocasSettings

__all__ = ["FocasConnection", "FocasPoint", "FocasSettings"]
