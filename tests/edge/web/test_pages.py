"""The status pages: every figure in the HTML and in the live cells, escaped, no external
asset; the server's routes, token and SSE over a real socket."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from e2e import until
from plant_status import FixedStatus

from edge.metrics.collector import registry_for
from edge.status.model import DestinationStatus
from edge.web import pages
from edge.web.server import StatusWeb
from edge.web.timeline import timeline_svg


def test_plant_page_shows_every_machine_and_escapes() -> None:
    html, live = pages.plant_page(FixedStatus())
    assert 'data-machine="mill-01"' in html and 'data-machine="lathe-01"' in html
    assert "68.4 %" in html and "10 / 2" in html
    assert "E1042: Spindle &lt;overload&gt;" in html
    assert "down (connection refused)" in html
    for key, value in live.cells.items():  # the live map fills exactly the page's cells
        assert f'data-k="{key}"' in html, key
        assert value in html.replace("&lt;", "<").replace("&gt;", ">")


def test_observed_share_of_the_planned_time_explains_a_low_availability() -> None:
    html, live = pages.plant_page(FixedStatus())
    assert "<th>observed</th>" in html and live.cells["mill-01/observed"] == "100.0 %"
    assert live.cells["lathe-01/observed"] == "-"  # no shift figures
    # started 45 min into an hour of planned time, down 5 min since: 10 min observed
    figures = FixedStatus().oee("mill-01")
    assert figures is not None
    late = replace(figures, planned_seconds=3600.0, gap_seconds=300.0,
                   downtime={"no_data": 2700.0, "unavailable": 300.0, "waiting": 60.0})
    assert late.observed == pytest.approx(1 / 6)
    assert pages.loss_tree(late)["loss/observed"] == "10 min 00 s of 1 h 00 min (16.7 %)"
    source = FixedStatus()
    source.oee = lambda machine_id: late  # type: ignore[method-assign]
    built = pages.machine_page(source, "mill-01")
    assert built is not None
    assert "The gateway observed" in built[0] and "10 min 00 s of 1 h 00 min (16.7 %)" in built[0]


def test_a_negative_speed_loss_keeps_its_sign_and_size() -> None:
    """Parts made faster than their ideal cycle (effectiveness above 100 %, e.g. the first
    minutes after a start, docs/oee.md) give a speed loss below zero: -5 s read
    `-1 h 59 min` on the machine page (divmod of a negative number)."""
    figures = FixedStatus().oee("mill-01")
    assert figures is not None
    fast = replace(figures, speed_loss_seconds=-5.2)
    assert pages.loss_tree(fast)["loss/speed"] == "-0 min 05 s"
    assert pages.duration(-4000.0) == "-1 h 06 min" and pages.duration(-0.4) == "0 min 00 s"
    assert pages.duration(3725.0) == "1 h 02 min" and pages.duration(65.0) == "1 min 05 s"


def test_machine_page_points_timeline_loss_tree() -> None:
    built = pages.machine_page(FixedStatus(), "mill-01")
    assert built is not None
    html, live = built
    assert "holding 20+2 float32" in html and "3030.5" in html and "1/min" in html
    assert "0x453d 0x6000" in html
    assert "<svg" in html and 'data-state="running"' in html and 'data-state="alarm"' in html
    assert "planned busy time" in html and "1 h 00 min" in html
    assert live.svg is not None and live.svg.startswith("<svg")
    assert pages.machine_page(FixedStatus(), "nope") is None


def test_the_shifts_first_and_last_hour_labels_stay_inside_the_timeline() -> None:
    """Centred on the view box's edges, the night shift's "22:00" showed as ":00" and its
    "06:00" as "06." in Chromium."""
    start = datetime(2026, 12, 6, 21, tzinfo=UTC)
    svg = timeline_svg([], start, start + timedelta(hours=8), start, ZoneInfo("Europe/Berlin"))
    ticks = re.findall(r'<text x="([\d.]+)"[^>]*text-anchor="(\w+)"[^>]*>([\d:]+)<', svg)
    assert ticks[0] == ("0.0", "start", "22:00") and ticks[-1] == ("1000.0", "end", "06:00")
    assert {anchor for _, anchor, _ in ticks[1:-1]} == {"middle"}


@pytest.fixture
async def web() -> AsyncIterator[StatusWeb]:
    source = FixedStatus()
    server = StatusWeb(source, registry_for(source), port=0, token="s3cret", refresh=0.2)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def test_destinations_page_names_each_payload_format() -> None:
    """Issue 14 asked for the format beside link, backlog, drops and last PUBACK: a
    Sparkplug destination looked like an envelope one."""

    class Sparkplug(FixedStatus):
        def destinations(self) -> list[DestinationStatus]:
            return [replace(d, format="sparkplug_b") for d in super().destinations()]

    html, _ = pages.destinations_page(Sparkplug())
    head = re.findall(r"<th>([^<]*)</th>", html)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells[head.index("format") - 1] == "sparkplug_b"  # the row's first cell is a <th>


async def test_routes_token_and_live_stream(web: StatusWeb) -> None:
    # unsafe: accept cookies from an IP address host, as browsers do for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(web.url) as r:
            assert r.status == 401
        async with http.get(web.url + "?token=wrong") as r:
            assert r.status == 401
        async with http.get(web.url + "?token=s3cret") as r:  # cookie set, then redirected
            assert r.status == 200 and str(r.url) == web.url
            html = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["Server-Timing"].startswith("cpu;dur=")
        assert not re.search(r'(src|href)="(https?:)?//', html), "no external asset"
        for path in ("machines/mill-01", "destinations", "gateway", "static/app.js",
                     "static/style.css"):
            async with http.get(web.url + path) as r:
                assert r.status == 200, path
        async with http.get(web.url + "machines/nope") as r:
            assert r.status == 404
        async with http.get(web.url + "events?page=plant") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            line = b""
            while not line.startswith(b"data: "):
                line = await r.content.readline()
            assert b'"mill-01/oee": "68.4 %"' in line
    async with aiohttp.ClientSession() as other, other.get(web.url + "metrics",
                         headers={"Authorization": "Bearer s3cret"}) as r:
        assert r.status == 200
        assert "edge_gateway_device_up" in await r.text()


class CountingStatus(FixedStatus):
    """Counts every read of the gateway's figures."""

    READS = frozenset({"machines", "points", "oee", "timeline", "destinations", "gateway",
                       "poll_durations", "queries"})
    reads = 0

    def __getattribute__(self, name: str) -> Any:
        if name in CountingStatus.READS:
            object.__setattr__(self, "reads", object.__getattribute__(self, "reads") + 1)
        return super().__getattribute__(name)


def _timers() -> set[asyncio.TimerHandle]:
    """The event loop's pending timers (asyncio keeps them in `_scheduled`)."""
    loop: Any = asyncio.get_running_loop()
    return set(loop._scheduled)


def _other_tasks() -> set[asyncio.Task[Any]]:
    """The loop's tasks besides the test's own."""
    mine = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not mine}


async def test_nobody_looking_costs_nothing() -> None:
    """Served but unwatched, the page reads no figure and keeps no timer; a live stream
    reads only while it is open (issue 14: < 5 % of the gateway's CPU with nobody looking,
    bench/bench_status_page.py)."""
    source = CountingStatus()
    before = _timers()
    server = StatusWeb(source, registry_for(source), port=0, refresh=0.05)
    await server.start()
    try:
        # what could read the figures later is a task or a timer: the start left neither
        assert _other_tasks() == set(), "no task while nobody is connected"
        assert source.reads == 0
        assert _timers() <= before, "no timer while nobody is connected"
        async with aiohttp.ClientSession() as http, http.get(server.url + "events") as r:
            for _ in range(3):  # three updates: the stream re-reads the figures each time
                line = b""
                while not line.startswith(b"data: "):
                    line = await r.content.readline()
            assert source.reads >= 3 and server.viewers == 1
        await until(lambda: server.viewers == 0, what="the stream to notice the browser left")
        # the stream stops reading when it ends: no task and no timer is left that could
        await until(lambda: not _other_tasks(), what="the stream's tasks to end")
        assert not {t for t in _timers() - before if not t.cancelled()}, "no timer left behind"
    finally:
        await server.stop()


def test_a_token_whose_secret_is_missing_is_located_before_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.config.loader import parse_plant
    from edge.daemon.preflight import check_references

    monkeypatch.delenv("EDGE_WEB_TOKEN", raising=False)
    text = """gateway:
  id: gw-1
  site: s
  web: {token: {env: EDGE_WEB_TOKEN}}
machines:
  - {id: m, area: a, line: l, adapter: modbus, connection: {host: 127.0.0.1},
     points: [{name: x, register: holding, address: 0}]}
"""
    problems = check_references(parse_plant(text, str(tmp_path / "p.yaml")))
    assert [(p.line, p.path) for p in problems] == [(4, "gateway.web.token")]
    assert "EDGE_WEB_TOKEN" in problems[0].message
