"""OPC UA adapter (asyncua): subscriptions, cyclic reads, security, OPC 40501-1 mapping."""

from __future__ import annotations

__all__ = ["OpcUaAdapter", "OpcUaSettings"]


def __getattr__(name: str) -> object:
    # Lazy: `import adapters.opcua.settings` (the YAML validator) must not pay for asyncua.
    if name == "OpcUaAdapter":
        from .adapter import OpcUaAdapter  # noqa: PLC0415

        return OpcUaAdapter
    if name == "OpcUaSettings":
        from .settings import OpcUaSettings  # noqa: PLC0415

        return OpcUaSettings
    raise AttributeError(name)
