"""Who may change a booking from the status page: the checks a POST passes before the
decision is taken, and the log of the ones that fail.

Why these layers (each would stop the classic attack alone, a hostile web page open in the
engineer's browser posting a form to http://127.0.0.1:8080): the access token travels in a
`SameSite=Strict` cookie or a Bearer header (checked by the server's guard; a cross-site
form carries neither); the form carries this process's random CSRF token, which a page of
another origin cannot read; the `Origin` header must name the `Host` the request went to
(a browser sets it on every POST and a page cannot forge it), and on a loopback bind the
`Host` must be a loopback name, which defeats DNS rebinding (a hostile name resolved to
127.0.0.1). Refusals are logged, once a minute at most, with how many since.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from structlog.typing import FilteringBoundLogger

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
LOG_EVERY = 60.0
"""Seconds between two log lines about refused POSTs (a script may send thousands)."""


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(authority: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`; `[::1]:8080` -> `::1`."""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class DecisionGuard:
    """Checks a decision POST: origin and host, then the form's CSRF token."""

    def __init__(
        self,
        bind: str,
        log: FilteringBoundLogger | None,
        *,
        csrf: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.csrf = csrf or secrets.token_urlsafe(32)
        """Per process: a restart makes an open page's forms stale (they say so)."""
        self.loopback_only = _loopback(bind)
        self.log = log
        self.clock = clock
        self.refused = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def origin_problem(self, request: web.Request) -> str | None:
        """None when the request comes from a page of this gateway, else why not."""
        host = request.headers.get("Host", "")
        if not host:
            return "no Host header"
        if self.loopback_only and not _loopback(_hostname(host)):
            return f"Host {host!r} is not a loopback name (the page listens on loopback only)"
        origin = request.headers.get("Origin")
        if origin is None:
            return "no Origin header (send the form from the status page)"
        scheme, _, authority = origin.partition("://")
        if scheme not in ("http", "https") or authority.lower() != host.lower():
            return f"Origin {origin!r} is not this page ({host})"
        return None

    def csrf_problem(self, offered: object) -> str | None:
        if not isinstance(offered, str) or not hmac.compare_digest(
            offered.encode(), self.csrf.encode()
        ):
            return "the form is stale or not from this page (reload the bookings page)"
        return None

    def note_refusal(self, request: web.Request, booking: str, why: str) -> None:
        self.refused += 1
        now = self.clock()
        if self.log is None:
            return
        if self._logged_at is not None and now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        self.log.warning("booking_post_refused", booking=booking, remote=request.remote,
                         error=why, refused_since_last_line=self._unlogged)
        self._logged_at, self._unlogged = now, 0
