"""Haas Machine Data Collection (Q-commands) adapter; settings reference in README.md."""

from .adapter import SIG_MODEL, SIG_SERIAL, SIG_VERSION, HaasAdapter
from .settings import HaasConnection, HaasMacro, HaasSettings

__all__ = [
    "SIG_MODEL",
    "SIG_SERIAL",
    "SIG_VERSION",
    "HaasAdapter",
    "HaasConnection",
    "HaasMacro",
    "HaasSettings",
]
