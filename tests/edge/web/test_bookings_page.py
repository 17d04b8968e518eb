"""The bookings page and its decisions over a real socket, on a real bookings store: what it
shows, the command line's decision taken from a form, and every way a POST is refused
without changing anything (read-only, no access token, wrong origin or host, no CSRF token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from plant_status import FixedStatus

from edge.bookings.board import BookingBoard
from edge.bookings.desk import OperatorDesk, PlantHolds
from edge.bookings.store import BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import LoadedPlant, parse_plant
from edge.metrics.collector import registry_for
from edge.web import pages
from edge.web.server import StatusWeb
from models.booking import Candidate, parse_reserve
from models.errors import ConfigurationError, PlantConfigError
from models.plant import BookingRules, ShiftCalendar

TOKEN = "s3cret"
PLANT = """gateway:
  id: gw-1
  site: s
  web: {allow_decisions: true}
machines:
  - {id: m1, area: a, line: l, adapter: modbus, connection: {host: 127.0.0.1},
     points: [{name: x, register: holding, address: 0}]}
"""


def test_decisions_without_a_token_are_refused_at_validate_time() -> None:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(PLANT, "plant.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("plant.yaml", 4,
                                                          "gateway.web.allow_decisions")
    assert "needs gateway.web.token" in problem.message
    fine = PLANT.replace("{allow_decisions: true}",
                         "{allow_decisions: true, token: {env: EDGE_WEB_TOKEN}}")
    assert parse_plant(fine, "plant.yaml").plant.gateway.web.allow_decisions
    assert not parse_plant(PLANT.replace("true", "false"),
                           "plant.yaml").plant.gateway.web.allow_decisions


def test_the_server_refuses_decisions_without_a_token_too() -> None:
    with pytest.raises(ConfigurationError, match=r"needs gateway\.web\.token"):
        StatusWeb(FixedStatus(), registry_for(FixedStatus()), allow_decisions=True)


@dataclass
class Page:
    web: StatusWeb
    store: BookingStore
    waiting: str
    """A request waiting for a person."""
    published: list[int]
    """How often the board asked for a flush (the publisher, in the gateway)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _reserve(store: BookingStore, ref: str, h0: int, h1: int, auto: bool) -> str:
    now = _now()
    req = parse_reserve({"asset": "m1", "reference": ref,
                         "start": (now + timedelta(hours=h0)).isoformat(),
                         "end": (now + timedelta(hours=h1)).isoformat(), "program": "O1000"})
    row, _ = store.reserve("p1", req, [Candidate("m1")], calendar=ShiftCalendar(),
                           rules=BookingRules(auto_accept=auto), now=now)
    return row.id


async def _serve(tmp_path: Path, allow: bool) -> AsyncIterator[Page]:
    loaded: LoadedPlant = parse_plant(PLANT.replace("true", "false"), str(tmp_path / "p.yaml"))
    store = BookingStore(tmp_path / "bookings.sqlite3", durable=False)
    waiting = _reserve(store, "po-wait", 2, 3, auto=False)
    _reserve(store, "po-ok", 5, 6, auto=True)
    published: list[int] = []
    log = structlog.get_logger()
    board = BookingBoard(OperatorDesk(lambda: loaded, store,
                                      PlantHolds(lambda: loaded, BookingsFiles(log))),
                         lambda: published.append(1), log)
    source = FixedStatus()
    web = StatusWeb(source, registry_for(source), port=0, token=TOKEN, refresh=0.2,
                    bookings=board, allow_decisions=allow, log=log)
    await web.start()
    try:
        yield Page(web, store, waiting, published)
    finally:
        await web.stop()
        store.close()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async for p in _serve(tmp_path, allow=True):
        yield p


@pytest.fixture
async def read_only(tmp_path: Path) -> AsyncIterator[Page]:
    async for p in _serve(tmp_path, allow=False):
        yield p


def _session() -> aiohttp.ClientSession:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of an IP host, as browsers keep them
    return aiohttp.ClientSession(cookie_jar=jar)


async def _login(http: aiohttp.ClientSession, web: StatusWeb) -> str:
    async with http.get(web.url + f"bookings?token={TOKEN}") as r:
        assert r.status == 200
        assert r.headers["Referrer-Policy"] == "same-origin"
        return await r.text()


def _origin(web: StatusWeb) -> dict[str, str]:
    return {"Origin": web.url.rstrip("/")}


def _form(page: Page, **over: str) -> dict[str, str]:
    return {"csrf": page.web.decision_guard.csrf, "decision": "accept", "reason": "night crew",
            **over}


async def test_the_page_lists_waiting_upcoming_and_recent(page: Page) -> None:
    async with _session() as http:
        html = await _login(http, page.web)
        assert f'data-booking="{page.waiting}" data-state="requested"' in html
        assert "Waiting for a decision" in html and "po-wait" in html and "O1000" in html
        assert 'data-state="accepted"' in html and "po-ok" in html
        assert f'value="{page.web.decision_guard.csrf}"' in html and ">Accept</button>" in html
        assert '<a href="/bookings" aria-current="page">Bookings</a>' in html
        view = page.web.bookings.view() if page.web.bookings else None
        assert view is not None
        _, live = pages.bookings_page(view, pages.DecisionForm("x"))
        for key in live.cells:
            assert f'data-k="{key}"' in html, key
        async with http.get(page.web.url + "bookings?machine=lathe-01") as r:
            assert "No request waits for a decision." in await r.text()
        async with http.get(page.web.url + "bookings?machine=lathe-1") as r:  # mistyped
            assert (r.status, await r.text()) == (404, "no machine 'lathe-1'\n")
        async with http.get(page.web.url + "events?page=bookings&id=m1") as r:
            line = b""
            while not line.startswith(b"data: "):
                line = await r.content.readline()
            assert f'"{page.waiting}/left": "in '.encode() in line


async def test_accept_from_the_page_is_the_command_lines_decision(page: Page) -> None:
    async with _session() as http:
        await _login(http, page.web)
        async with http.post(page.web.url + f"bookings/{page.waiting}", data=_form(page),
                             headers=_origin(page.web), allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            assert r.headers["Location"] == f"/bookings?decided={page.waiting}"
        row = page.store.get(page.waiting)
        assert row is not None and (row.state, row.reason) == ("accepted", "night crew")
        assert page.published == [1]  # the signed record and the offer leave at once
        events = [r for _, _, r in page.store.unpublished() if r["booking"] == page.waiting]
        assert [(e["state"], e["by"]) for e in events][-1] == ("accepted", "operator")
        async with http.get(page.web.url + f"bookings?decided={page.waiting}") as r:
            assert f"Booking {page.waiting} is accepted." in await r.text()
        # decided already: a clear message, nothing changes
        async with http.post(page.web.url + f"bookings/{page.waiting}",
                             data=_form(page, decision="decline"),
                             headers=_origin(page.web)) as r:
            assert r.status == 409
            assert "is accepted, not waiting for a decision" in await r.text()
        async with http.post(page.web.url + "bookings/b-nope", data=_form(page),
                             headers=_origin(page.web)) as r:
            assert r.status == 404 and "There is no booking b-nope" in await r.text()
    row = page.store.get(page.waiting)
    assert row is not None and row.state == "accepted" and page.published == [1]


async def test_an_expired_request_says_so(page: Page) -> None:
    row = page.store.get(page.waiting)
    assert row is not None and row.expires is not None
    board = page.web.bookings
    assert board is not None
    late = row.expires + timedelta(seconds=1)
    board.desks()[0].clock = lambda: late  # the hold ended before the gateway closed it
    async with _session() as http:
        await _login(http, page.web)
        async with http.post(page.web.url + f"bookings/{page.waiting}", data=_form(page),
                             headers=_origin(page.web)) as r:
            assert r.status == 409 and "is expired, not waiting" in await r.text()


def _unchanged(page: Page) -> None:
    row = page.store.get(page.waiting)
    assert row is not None and row.state == "requested" and page.published == []


@pytest.mark.parametrize(
    ("what", "headers", "form", "status", "says"),
    [
        ("no Origin", {}, {}, 403, "no Origin header"),
        ("another site", {"Origin": "http://evil.example"}, {}, 403, "is not this page"),
        ("a null origin", {"Origin": "null"}, {}, 403, "is not this page"),
        ("no CSRF token", None, {"csrf": ""}, 403, "the form is stale"),
        ("a wrong CSRF token", None, {"csrf": "guess"}, 403, "the form is stale"),
        ("no decision", None, {"decision": "maybe"}, 400, "Say accept or decline"),
        ("a reason too long", None, {"reason": "x" * 501}, 400, "at most 500"),
    ],
)
async def test_a_post_that_fails_a_check_changes_nothing(
    page: Page, what: str, headers: dict[str, str] | None, form: dict[str, str], status: int,
    says: str,
) -> None:
    async with _session() as http:
        await _login(http, page.web)
        async with http.post(page.web.url + f"bookings/{page.waiting}",
                             data=_form(page, **form),
                             headers=_origin(page.web) if headers is None else headers) as r:
            assert r.status == status, what
            assert says in await r.text(), what
    _unchanged(page)


async def test_dns_rebinding_a_hostile_name_to_loopback_is_refused(page: Page) -> None:
    rebound = {"Host": f"evil.example:{page.web.port}",
               "Origin": f"http://evil.example:{page.web.port}",
               "Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.post(
        page.web.url + f"bookings/{page.waiting}", data=_form(page), headers=rebound
    ) as r:
        assert r.status == 403 and "not a loopback name" in await r.text()
    _unchanged(page)


async def test_without_the_access_token_nothing_changes(page: Page) -> None:
    async with aiohttp.ClientSession() as http:
        for url in (f"bookings/{page.waiting}", f"bookings/{page.waiting}?token={TOKEN}"):
            async with http.post(page.web.url + url, data=_form(page),
                                 headers=_origin(page.web), allow_redirects=False) as r:
                assert r.status == 401, url  # ?token= works on a GET only
    _unchanged(page)
    assert page.web.decision_guard.refused == 0  # refused before the form was looked at


async def test_read_only_page_has_no_buttons_and_refuses_posts(read_only: Page) -> None:
    page = read_only
    async with _session() as http:
        html = await _login(http, page.web)
        assert page.waiting in html and "<form" not in html and "Read-only" in html
        async with http.post(page.web.url + f"bookings/{page.waiting}", data=_form(page),
                             headers=_origin(page.web)) as r:
            assert r.status == 403 and "read-only" in await r.text()
    _unchanged(page)


def test_the_refusal_log_is_rate_limited() -> None:
    from edge.web.decisions import DecisionGuard

    lines: list[dict[str, Any]] = []

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append({"event": event, **kw})

    clock = [0.0]
    guard = DecisionGuard("127.0.0.1", Log(), clock=lambda: clock[0])  # type: ignore[arg-type]

    class Req:
        remote = "127.0.0.1"

    for _ in range(5):
        guard.note_refusal(Req(), "b-1", "no Origin header")  # type: ignore[arg-type]
    clock[0] = 61.0
    guard.note_refusal(Req(), "b-1", "no Origin header")  # type: ignore[arg-type]
    assert [x["refused_since_last_line"] for x in lines] == [0, 4] and guard.refused == 6
