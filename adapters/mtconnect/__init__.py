"""MTConnect adapters: an agent over HTTP (`mtconnect`) and SHDR over TCP (`shdr`).

Settings reference and what is verified against what: README.md in this folder.

The adapter class is imported from its module (the entry point names it), not here: the
settings alone must import without the protocol library (edge/config/registry.py).
"""

from .settings import MtconnectAgentSettings, ShdrSettings

__all__ = ["MtconnectAgentSettings", "ShdrSettings"]
