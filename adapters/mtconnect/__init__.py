"""MTConnect adapters: an agent over HTTP (`mtconnect`) and SHDR over TCP (`shdr`).

Settings reference and what is verified against what: README.md in this folder.
"""

from .agent import MtconnectAgentAdapter
from .settings import MtconnectAgentSettings, ShdrSettings
from .shdr import ShdrAdapter

__all__ = ["MtconnectAgentAdapter", "MtconnectAgentSettings", "ShdrAdapter", "ShdrSettings"]
