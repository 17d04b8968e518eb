"""Settings that are valid but dangerous: said at `validate`, so nobody ships them unaware.

Why a separate list and not a validation error: `insecure_skip_verify` has honest uses (a
test bench with a self-signed broker), so it stays allowed; but it must never be silent
(issue 12 item 14). The transport repeats the warning at every connect.
"""

from __future__ import annotations

from models.plant import Plant

__all__ = ["INSECURE_HINT", "risky_settings"]

INSECURE_HINT = ("tls.insecure_skip_verify accepts any broker certificate: anyone on the path "
                 "can read and alter the traffic; set tls.ca_file instead (tests only)")


def risky_settings(plant: Plant) -> list[str]:
    """One sentence per dangerous setting, naming where it is."""
    return [f"destinations[{d.id}]: {INSECURE_HINT}" for d in plant.destinations
            if d.tls is not None and d.tls.insecure_skip_verify]
