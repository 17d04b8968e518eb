"""The gateway's local status page and `/metrics`, served from the gateway's event loop.

Why aiohttp.web in-process: the figures live in the daemon's memory, so a separate process
would need an API of its own; aiohttp runs on the same asyncio loop with no thread, and
costs nothing while nobody is connected (no timer runs unless a page is open).

Read-only by construction: only GET routes, built from `StatusSource` snapshots. Bound to
127.0.0.1 by default; with `gateway.web.token` every request needs the token (a Bearer
header, or `?token=` once, which sets an HttpOnly cookie and redirects without it). Pages
carry a Content-Security-Policy of `'self'` only: every asset ships in the package.
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

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from edge.config.secret_refs import resolve_secret
from edge.metrics.collector import registry_for
from edge.status.model import StatusSource
from edge.web import pages
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


def _layout(title: str, body: str, page: str, *, machine: str | None, shape: str,
            refresh: float) -> str:
    current = ' aria-current="page"'
    nav = "".join(
        f'<a href="{href}"{current if key == page else ""}>{label}</a>'
        for key, href, label in (("plant", "/", "Plant"), ("destinations", "/destinations",
                                 "Destinations"), ("gateway", "/gateway", "Gateway"),
                                 ("metrics", "/metrics", "Metrics"))
    )
    live = f' data-page="{page}" data-shape="{shape}" data-refresh="{refresh:g}"'
    if machine:
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
    ) -> None:
        self.source = source
        self.prepare = prepare
        self.registry = registry
        self.bind = bind
        self.port = port
        self.token = token
        self.refresh = refresh
        self.title = title
        self.viewers = 0
        """Open live streams (pages being watched), for the gateway page and the bench."""
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.add_routes([
            web.get("/", self._plant),
            web.get("/machines/{id}", self._machine),
            web.get("/destinations", self._destinations),
            web.get("/gateway", self._gateway),
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
            offered = request.query.get("token")
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
              machine: str | None = None) -> web.Response:
        return web.Response(
            text=_layout(title, body, page, machine=machine, shape=live.shape,
                         refresh=self.refresh),
            content_type="text/html",
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
    settings: WebSettings,
    source: StatusSource,
    logger: Any,
    title: str = "plant",
    prepare: Prepare | None = None,
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
                         prepare=prepare)
        await web_.start()
    except ConfigurationError as exc:
        logger.error("status_page_not_served", error=str(exc))
        return None
    logger.info("status_page_started", url=web_.url, metrics=web_.url + "metrics",
                token_required=token is not None)
    return web_
