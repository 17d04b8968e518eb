"""Resolve `SecretRef`s (environment variable or file) only at the moment a connection needs them.

The gateway's MQTT passwords, TLS key passwords and the status page token are read by the
same function as the adapters' secrets (OPC UA user passwords): `adapters.base.resolve_secret`,
which names where a missing secret should have been and never what it holds.
"""

from __future__ import annotations

from adapters.base import resolve_secret

__all__ = ["resolve_secret"]
