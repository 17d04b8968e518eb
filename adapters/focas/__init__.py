"""FANUC FOCAS2 Ethernet adapter (publicly described subset); see README.md."""

from .adapter import FocasAdapter
from .settings import FocasConnection, FocasPoint, FocasSettings

__all__ = ["FocasAdapter", "FocasConnection", "FocasPoint", "FocasSettings"]
