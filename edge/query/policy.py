"""A destination's egress policy applied to the queries answered at its broker.

Why: a platform that reads a destination's broker may query the gateway there, and a query
must not give it what the destination's `machines`, `streams` and `signals` withhold from its
streams (docs/protocol.md, "Topics" and "At a destination with a policy"). The platform's
own `machines` and `methods` apply first; this applies on top, so an answer needs both to
allow it:

- a machine the destination's `machines` filter denies is answered exactly as a machine the
  gateway does not have (`not_found`, the same text), and whole-plant answers leave it out:
  the platform is narrowed to the machines both allow before the method runs, so bookings by
  process never choose a hidden machine either; the platform's own bookings on a hidden
  machine are answered as bookings it does not have (`sees`, passed to the bookings desk:
  `release` refuses them as unknown, `reserve` asking again with their reference decides
  anew, `bookings` leaves them out before `limit`);
- a method whose stream the destination does not take (`METHOD_STREAMS`) is `forbidden`;
- signals: the result is narrowed by edge/egress/redaction.py, the one module deciding what
  a `signals` filter hides, before it is sealed.

A request that arrived through no configured destination (a test's `handle`, the `--broker-url`
or embedded broker, which have no policy) is answered unrestricted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping
from typing import Any

from edge.egress.redaction import redact_result
from models.plant import Destination, Plant, Platform

METHOD_STREAMS: Mapping[str, tuple[str, ...]] = {
    "state": ("state",),
    "oee": ("oee",),
    "energy": ("oee",),  # the oee stream's records carry a window's energy
    "parts": ("part",),
    "capacity": ("capacity",),
    "reserve": ("bookings",),
    "release": ("bookings",),
    "bookings": ("bookings",),
    # an AAS carries the last signal values, the state and the running shift's OEE
    "aas": ("telemetry", "state", "oee"),
    # structure, not data: the configuration and the link to this destination
    "describe": (),
    "health": (),
}
"""The streams whose content each method reveals: the destination must take all of them."""

MACHINE_METHODS = frozenset({"aas", "state", "oee", "capacity", "parts", "energy", "reserve"})
"""Methods that look up `params.asset` (and refuse one the gateway does not have); the
others ignore it, so a hidden machine is ignored there too, as an unknown one is."""


class DestinationPolicy:
    """What a platform may learn through one destination."""

    def __init__(self, plant: Plant, destination: Destination | None) -> None:
        self.plant = plant
        self.destination = destination

    @classmethod
    def at(cls, plant: Plant, name: str | None) -> DestinationPolicy:
        """The policy of destination `name` of `plant` (none when it is not configured)."""
        found = next((d for d in plant.destinations if d.id == name), None)
        return cls(plant, found)

    def refusal(self, method: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
        """(code, message) when the destination withholds the method's stream or the asked
        machine, else None. Asked after the platform's own checks (`forbidden` first)."""
        dest = self.destination
        if dest is None:
            return None
        missing = [s for s in METHOD_STREAMS.get(method, ()) if s not in dest.streams]
        if missing:
            return "forbidden", (f"method {method!r} is not answered at this destination "
                                 f"(it does not take {', '.join(missing)})")
        asset = params.get("asset")
        if method in MACHINE_METHODS and isinstance(asset, str) and not self.sees(asset):
            return "not_found", f"unknown machine {asset!r}"  # as the backend answers it
        return None

    def sees(self, machine: str) -> bool:
        """True when this destination shows `machine`: the one predicate behind every
        narrowing by machine here, passed in where the answer is built (the bookings store
        leaves the platform's bookings on hidden machines out before counting `limit`, and
        answers `release`/`reserve` on one as for a booking it does not have)."""
        return self.destination is None or self.destination.machines.allows(machine)

    def visible(self, platform: Platform) -> Platform:
        """`platform` narrowed to the machines this destination may see too, for the method
        and the scoping of its answer to run with."""
        dest = self.destination
        if dest is None or dest.machines.everything:
            return platform
        ids = [m.id for m in self.plant.machines if self.sees(m.id)
               and any(fnmatch.fnmatchcase(m.id, p) for p in platform.machines)]
        return platform.model_copy(update={"machines": ids})  # ids have no glob characters

    def narrow(self, method: str, result: Any) -> Any:
        """`result` without what the destination's `signals` and `streams` withhold."""
        dest = self.destination
        if dest is None:
            return result
        if method == "describe" and isinstance(result, dict):
            result = _describe(result, dest.streams)
        return redact_result(method, result, dest.signals)


def _describe(result: dict[str, Any], streams: Collection[str]) -> dict[str, Any]:
    """`describe` naming only the streams (and topics) this destination takes."""
    machines = result.get("machines")
    out = {**result, "streams": [s for s in result.get("streams", []) if s in streams]}
    if isinstance(machines, dict):
        out["machines"] = {
            a: {**m, "topics": {s: t for s, t in m.get("topics", {}).items() if s in streams}}
            if isinstance(m, dict) else m
            for a, m in machines.items()
        }
    return out
