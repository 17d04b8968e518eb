"""Names both sides of the query protocol share (docs/protocol.md, "Queries"): the gateway's
handler and the platform kit's client import them from here, so the platform kit needs
nothing of the daemon."""

from __future__ import annotations

from datetime import UTC, datetime

REQUEST_TYP = "edge-request+json"
"""Protected header `typ` of a platform's signed request."""

REPLY_PREFIX = "platform/replies/"
"""Where `edge.platform_kit.client` asks for replies (any topic outside the gateway's own
namespace would do)."""


def request_ts(now: datetime | None = None) -> str:
    """A request's `ts`: RFC 3339 in UTC with `Z`."""
    return (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
