"""The gateway's local status page and `/metrics`, served from the gateway's event loop.

Why aiohttp.web in-process: the figures live in the daemon's memory, so a separate process
would need an API of its own; aiohttp runs on the same asyncio loop with no thread, and
costs nothing while nobody is connected (no timer runs unless a page is open).

Read-only unless told otherwise: GET routes built from `StatusSource` snapshots, and one
POST route, a person's accept/decline of a booking waiting for a decision, refused unless
`gateway.web.allow_decisions` (which needs a token) is on; its checks are in
`edge/web/decisions.py` and the decision itself is the command line's (`BookingBoard`).
Bound to 127.0.0.1 by default; with `gateway.web.token` every request needs the token (a
Bearer header, or `?token=` once on a GET, which sets an HttpOnly cookie and redirects
without it). Pages carry a Content-Security-Policy of `'self'` only: every asset ships in
the package.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from structlog.typing import FilteringBoundLogger
from yarl import URL

from edge.bookings.board import BookingBoard
from edge.bookings.store import BookingStoreError, Refused
from edge.config.secret_refs import resolve_secret
from edge.metrics.collector import registry_for
from edge.status.model import StatusSource
from edge.web import pages
from edge.web.decisions import DecisionGuard
from models.errors import ConfigurationError
from models.plant import WebSettings

COOKIE = "edge_gateway_token"
STATIC = files("edge.web") / "static"
_STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Prepare = Callable[[str | None], Awaitable[None]]
"""Brings the source up to date before a page, live update or scrape reads it (given the
machine whose page it is); the parent of `run --workers N` asks its workers there."""


NAV = (("plant", "/", "Plant"), ("bookings", "/bookings", "Bookings"),
       ("destinations", "/destinations", "Destinations"), ("gateway", "/gateway", "Gateway"),
       ("metrics", "/metrics", "Metrics"))


def _layout(title: str, body: str, page: str, *, machine: str | None, shape: str,
            refresh: float, bookings: bool = True) -> str:
    current = ' aria-current="page"'
    nav = "".join(
        f'<a href="{href}"{current if key == page else ""}>{label}</a>'
        for key, href, label in NAV if bookings or key != "bookings"
    )
    live = f' data-page="{page}" data-shape="{shape}" data-refresh="{refresh:g}"' if shape else ""
    if machine and shape:
        live += f' data-machine="{escape(machine)}"'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - edge-gateway</title>"
        '<link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        f"<body{live}><header><strong>edge-gateway</strong><nav>{nav}</nav>"
        '<span id="live" aria-live="polite">static page: reload to refresh</span></header>'
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


class StatusWeb:
    """The aiohttp application and its listener; `start()`/`stop()` from the gateway."""

    def __init__(
        self,
        source: StatusSource,
        registry: CollectorRegistry,
        *,
        bind: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        refresh: float = 2.0,
        title: str = "plant",
        prepare: Prepare | None = None,
        bookings: BookingBoard | None = None,
        allow_decisions: bool = False,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        if allow_decisions and token is None:  # the YAML refuses it too (models/plant.py)
            raise ConfigurationError("gateway.web.allow_decisions needs gateway.web.token")
        self.source = source
        self.prepare = prepare
        self.registry = registry
        self.bind = bind
        self.port = port
        self.token = token
        self.refresh = refresh
        self.title = title
        self.bookings = bookings
        self.allow_decisions = allow_decisions and bookings is not None
        self.decision_guard = DecisionGuard(bind, log)
        self.viewers = 0
        """Open live streams (pages being watched), for the gateway page and the bench."""
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        # a decision form is a few hundred bytes; nothing else is posted
        app = web.Application(middlewares=[self._guard], client_max_size=16_384)
        app.add_routes([
            web.get("/", self._plant),
            web.get("/machines/{id}", self._machine),
            web.get("/destinations", self._destinations),
            web.get("/gateway", self._gateway),
            web.get("/bookings", self._bookings),
            web.post("/bookings/{id}", self._decide),
            web.get("/metrics", self._metrics),
            web.get("/events", self._events),
            web.get("/static/{name}", self._static),
        ])
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.bind, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigurationError(
                f"status page cannot listen on {self.bind}:{self.port}: {exc.strerror or exc} "
                "(set gateway.web.port, or gateway.web.enabled: false)"
            ) from exc
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ---- access -----------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None:
            offered = request.query.get("token") if request.method == "GET" else None
            if offered is not None and hmac.compare_digest(offered, self.token):
                kept = {k: v for k, v in request.query.items() if k != "token"}
                target = request.rel_url.with_query(kept)
                redirect = web.HTTPSeeOther(str(target))
                redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
                raise redirect
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else request.cookies.get(COOKIE)
            if given is None or not hmac.compare_digest(given, self.token):
                return web.Response(status=401, text="401: give the token (?token=... once, "
                                    "or Authorization: Bearer ...)\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        if self.prepare is not None and request.path != "/events" and not (
            request.path.startswith("/static/")
        ):
            await self.prepare(request.match_info.get("id"))
        cpu = time.thread_time()  # the event loop's thread: this request's build, nothing else
        response = await handler(request)
        if not response.prepared:  # not the event stream, whose headers are already sent
            # CPU the build took, for browser devtools and bench/bench_status_page.py
            response.headers["Server-Timing"] = f"cpu;dur={1000 * (time.thread_time() - cpu):.2f}"
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    # ---- pages ------------------------------------------------------------------------
    def _html(self, title: str, body: str, page: str, live: pages.Live,
              machine: str | None = None, *, status: int = 200) -> web.Response:
        return web.Response(
            text=_layout(title, body, page, machine=machine, shape=live.shape,
                         refresh=self.refresh, bookings=self.bookings is not None),
            content_type="text/html",
            status=status,
        )

    async def _plant(self, request: web.Request) -> web.Response:
        body, live = pages.plant_page(self.source)
        return self._html(self.title, body, "plant", live)

    async def _machine(self, request: web.Request) -> web.Response:
        machine = request.match_info["id"]
        built = pages.machine_page(self.source, machine)
        if built is None:
            raise web.HTTPNotFound(text=f"no machine {machine!r}\n")
        body, live = built
        return self._html(f"machine {machine}", body, "machine", live, machine)

    async def _destinations(self, request: web.Request) -> web.Response:
        body, live = pages.destinations_page(self.source)
        return self._html("destinations", body, "destinations", live)

    async def _gateway(self, request: web.Request) -> web.Response:
        body, live = pages.gateway_page(self.source)
        return self._html("gateway", body, "gateway", live)

    # ---- bookings -----------------------------------------------------------------------
    def _form(self, machine: str | None) -> pages.DecisionForm | None:
        if not self.allow_decisions:
            return None
        return pages.DecisionForm(self.decision_guard.csrf, machine)

    async def _bookings(self, request: web.Request) -> web.Response:
        if self.bookings is None:
            raise web.HTTPNotFound(text="bookings are not served by this gateway\n")
        machine = request.query.get("machine") or None
        if machine is not None and all(m.id != machine for m in self.source.machines()):
            # as /machines/{id}: a mistyped id showed an empty page, "no request waits"
            raise web.HTTPNotFound(text=f"no machine {machine!r}\n")
        try:
            view = self.bookings.view(machine)
        except BookingStoreError as exc:
            return self._message(f"The bookings cannot be read: {exc}", 503, machine)
        notice = None
        decided = request.query.get("decided")
        if decided:  # after a decision (post/redirect/get): the store's word, not the URL's
            row = next((r for r in (*view.upcoming, *view.recent) if r.id == decided), None)
            if row is not None:
                notice = f"Booking {row.id} is {row.state}."
        body, live = pages.bookings_page(view, self._form(machine), notice)
        title = f"bookings of {machine}" if machine else "bookings"
        response = self._html(title, body, "bookings", live, machine)
        # a browser sends `Origin: null` on a POST from a no-referrer page; the decision
        # check needs the real origin, so this page (only) lets same-origin requests carry it
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def _message(self, text: str, status: int, machine: str | None) -> web.Response:
        back = "/bookings" + (f"?machine={quote(machine)}" if machine else "")
        body = (f'<p class="notice" role="alert">{escape(text)}</p>'
                f'<p><a href="{escape(back)}">Back to the bookings</a></p>')
        # no live update (empty shape): a message, not a view
        return self._html("bookings", body, "bookings", pages.Live({}, ""), status=status)

    async def _decide(self, request: web.Request) -> web.Response:
        """A person's accept/decline from the page: refused (nothing changes) unless
        decisions are allowed, the request comes from this page (origin, host) and its form
        carries this process's CSRF token; then the command line's decision, whose outcome
        (decided, already decided, expired, no longer fits) the page states."""
        booking = request.match_info["id"]
        if not self.allow_decisions or self.bookings is None:
            self.decision_guard.note_refusal(request, booking, "decisions are off")
            return self._message("This page is read-only: decisions from the status page "
                                 "are off (gateway.web.allow_decisions). Use edge-gateway "
                                 "bookings accept|decline.", 403, None)
        problem = self.decision_guard.origin_problem(request)
        form = await request.post() if problem is None else None
        if form is not None:
            problem = self.decision_guard.csrf_problem(form.get("csrf"))
        if problem is not None or form is None:
            self.decision_guard.note_refusal(request, booking, problem or "no form")
            return self._message(f"Refused: {problem}.", 403, None)
        machine = form.get("machine")
        machine = machine if isinstance(machine, str) and machine else None
        decision, reason = form.get("decision"), form.get("reason", "")
        if decision not in ("accept", "decline"):
            return self._message("Say accept or decline.", 400, machine)
        if not isinstance(reason, str) or len(reason) > pages.REASON_MAX:
            return self._message(f"The reason is at most {pages.REASON_MAX} characters.", 400,
                                 machine)
        via = f"status page from {request.remote}"
        try:
            await self.bookings.decide(booking, accept=decision == "accept",
                                       reason=reason.strip() or None, via=via)
        except KeyError:
            return self._message(f"There is no booking {booking}.", 404, machine)
        except Refused as exc:
            return self._message(f"Nothing changed: {exc}.", 409, machine)
        except BookingStoreError as exc:
            return self._message(f"Nothing changed: the bookings store failed: {exc}", 503,
                                 machine)
        query = {"decided": booking, **({"machine": machine} if machine else {})}
        raise web.HTTPSeeOther(str(URL.build(path="/bookings", query=query)))

    async def _metrics(self, request: web.Request) -> web.Response:
        data = generate_latest(self.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_TYPES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=_STATIC_TYPES[name],
                            headers={"Cache-Control": "max-age=300"})

    def _live(self, page: str, machine: str | None) -> pages.Live | None:
        if page == "machine" and machine:
            return pages.machine_live(self.source, machine)
        builders: dict[str, Callable[[StatusSource], pages.Live]] = {
            "plant": pages.plant_live,
            "destinations": pages.destinations_live,
            "gateway": pages.gateway_live,
        }
        if page == "bookings" and self.bookings is not None:
            try:
                return pages.bookings_live(self.bookings.view(machine), self._form(machine))
            except BookingStoreError:
                return None  # the page stays as it is; a reload says why
        build = builders.get(page)
        return None if build is None else build(self.source)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the page's cells every `refresh` seconds while it is open."""
        page, machine = request.query.get("page", "plant"), request.query.get("id")
        if self._live(page, machine) is None:
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        self.viewers += 1
        try:
            await response.write(f"retry: {int(self.refresh * 1000)}\n\n".encode())
            while True:
                if self.prepare is not None:
                    await self.prepare(machine)
                live = self._live(page, machine)
                if live is None:
                    break
                data: dict[str, Any] = live.as_json()
                await response.write(f"data: {json.dumps(data)}\n\n".encode())
                await asyncio.sleep(self.refresh)
        except ConnectionResetError:
            pass  # the browser left
        finally:
            self.viewers -= 1
        return response


async def start_status_web(
    settings: WebSettings, source: StatusSource, logger: FilteringBoundLogger, title: str = "plant",
    *, prepare: Prepare | None = None, bookings: BookingBoard | None = None,
) -> StatusWeb | None:
    """The status page per `gateway.web`, started; None when disabled or when it cannot be
    served. A view must never stop data collection: a busy port or a token whose secret
    cannot be read is logged as an error and the gateway runs on without the page (never
    without its token)."""
    if not settings.enabled:
        return None
    try:
        token = resolve_secret(settings.token) if settings.token is not None else None
        web_ = StatusWeb(source, registry_for(source), bind=settings.bind, port=settings.port,
                         token=token, refresh=settings.refresh_seconds, title=title,
                         prepare=prepare, bookings=bookings,
                         allow_decisions=settings.allow_decisions, log=logger)
        await web_.start()
    except ConfigurationError as exc:
        logger.error("status_page_not_served", error=str(exc))
        return None
    logger.info("status_page_started", url=web_.url, metrics=web_.url + "metrics",
                token_required=token is not None,
                decisions=web_.allow_decisions)
    return web_
