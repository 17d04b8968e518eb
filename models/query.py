"""Names both sides of the query protocol share (docs/protocol.md, "Queries"): the gateway's
handler and the platform kit's client import them from here, so the platform kit needs
nothing of the daemon."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

REQUEST_TYP = "edge-request+json"
"""Protected header `typ` of a platform's signed request."""

REPLY_PREFIX = "platform/replies/"
"""Where `edge.platform_kit.client` asks for replies (any topic outside the gateway's own
namespace would do)."""


def request_ts(now: datetime | None = None) -> str:
    """A request's `ts`: RFC 3339 in UTC with `Z`."""
    return (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


_WINDOW = ("asset", "window", "start", "end", "hours")
QUERY_PARAMS: dict[str, tuple[str, ...]] = {
    "describe": ("asset",),
    "aas": ("asset",),
    "state": ("asset",),
    "oee": _WINDOW,
    "capacity": ("asset",),
    "health": ("asset",),
    "parts": ("asset", "start", "end", "program", "verdict", "after", "limit"),
    "energy": _WINDOW,
    "reserve": (
        "reference", "asset", "process", "start", "end", "duration_minutes", "earliest_start",
        "latest_start", "program", "quantity", "ideal_cycle_s",
    ),
    "release": ("asset", "booking", "reference"),
    "bookings": ("asset", "state", "reference", "limit"),
}
"""The `params` keys each query method takes (docs/protocol.md, "Methods"). The gateway
refuses any other key (`bad_request`, naming it): a misspelt `windw` must not be answered as
if it were absent, with the default window, a figure the platform did not ask for."""


TEXT_PARAMS = frozenset({"asset", "booking", "reference", "process", "program"})
"""Params whose value is an id or a name: text even when it reads as a number (a purchase
order `4711`, a machine `42`), where a command line would otherwise send the number and be
refused (`reference: Input should be a valid string`)."""


def unknown_params(method: str, params: Mapping[str, object]) -> str | None:
    """The refusal of `params` keys `method` does not take, or None when all are known."""
    known = QUERY_PARAMS[method]
    unknown = sorted(k for k in params if k not in known)
    if not unknown:
        return None
    return (f"unknown params for {method}: {', '.join(unknown)} "
            f"({method} takes {', '.join(known)})")
