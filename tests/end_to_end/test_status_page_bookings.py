"""A person accepts a platform's booking request on the status page (issue 18): a gateway
subprocess at a real Mosquitto, a platform asking over signed queries, Debian's headless
Chromium on the page. The request appears on the open page, the Accept button decides it,
and the signed `accepted` record arrives on the bookings stream and verifies. A hostile page
served from another port of 127.0.0.1 in the same browser (which holds the access cookie)
cannot decide, even knowing the CSRF token; nor can a POST without the CSRF token, from
another origin, or without the access token; a read-only page has no buttons and refuses."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import MISSING, Browser, driver_binary
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import GatewayProcess, plant_yaml, verified_body, wait_for

from edge.config.workers import worker_of
from edge.platform_kit.client import query

GATEWAY = "edge/plant-a/gw-1"
TOPIC = "edge/plant-a/hall-1/line-1/m1/bookings"
TOKEN = "page-token-1234"
RULES = """
platforms:
  - {id: p1, public_key_file: p1.pem, methods: [reserve, bookings]}
booking: {auto_accept: false, poll_seconds: 0.2}
"""


class Plant:
    def __init__(self, tmp: Path, broker: Mosquitto, ports: Callable[[], int], allow: bool,
                 machines: int = 1) -> None:
        self.key = Ed25519PrivateKey.generate()
        (tmp / "p1.pem").write_bytes(
            self.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        (tmp / "token").write_text(TOKEN + "\n")
        port = ports()
        web = (f"web: {{port: {port}, refresh_seconds: 0.5, token: {{file: {tmp / 'token'}}}, "
               f"allow_decisions: {'true' if allow else 'false'}}}")
        text = plant_yaml(tmp / "state", [ports() for _ in range(machines)],
                          broker.port).replace("web: {port: 0}", web)
        self.path = tmp / "plant.yaml"
        self.path.write_text(text + RULES)
        self.broker = broker
        self.url = f"http://127.0.0.1:{port}/"

    def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(query(self.broker.url, self.key, GATEWAY, method, params, wait=15))

    def request(self, reference: str, hours: int, asset: str = "m1") -> dict[str, Any]:
        """A request that waits for a person (auto_accept: false)."""
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
        reply = self.ask("reserve", {"asset": asset, "reference": reference,
                                     "start": start.isoformat(),
                                     "end": (start + timedelta(hours=1)).isoformat()})
        assert reply["ok"] and reply["result"]["state"] == "requested", reply
        return reply["result"]  # type: ignore[no-any-return]

    def state(self, booking: str) -> str:
        mine = self.ask("bookings", {})["result"]["bookings"]
        return next(b["state"] for b in mine if b["booking"] == booking)  # type: ignore[no-any-return]


def _serving(url: str) -> bool:
    try:
        return httpx.get(url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _start(plant: Plant) -> GatewayProcess:
    gw = GatewayProcess(plant.path).start()
    wait_for(lambda: bool(gw.events("gateway_started")), 30, "gateway started")
    wait_for(lambda: _serving(plant.url), 30, "status page listening")
    return gw


def _records(collector: Collector, jwks: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in collector.snapshot():
        body = verified_body(m.payload, jwks, m.topic)  # raises unless the signature holds
        assert body["stream"] == "bookings"
        out.extend(body["records"])
    return out



class Hostile:
    """Another web site the engineer has open: 127.0.0.1 on another port (the same *site*
    for the browser's SameSite rules, so the access cookie goes along), whose page posts a
    decision form to the gateway as soon as it loads."""

    def __init__(self, port: int, action: str, csrf: str) -> None:
        page = (f'<!doctype html><form method="post" action="{action}">'
                f'<input name="csrf" value="{csrf}"><input name="decision" value="accept">'
                '</form><script>document.forms[0].submit()</script>').encode()

        class Serve(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Serve)
        self.url = f"http://127.0.0.1:{port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hostile:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _text(browser: Browser) -> str:
    try:
        return str(browser.run("return document.body ? document.body.innerText : ''"))
    except RuntimeError:  # navigating
        return ""


@pytest.fixture
def browser() -> Iterator[Browser]:
    if driver_binary() is None:
        pytest.skip(MISSING)
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(Path(profile))
        try:
            yield b
        finally:
            b.close()


@pytest.mark.slow
def test_a_person_accepts_a_waiting_request_on_the_page(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int], browser: Browser,
) -> None:
    plant = Plant(tmp_path, mosquitto, free_port, allow=True)
    booked = mqtt_collector(mosquitto.host, mosquitto.port, TOPIC)
    keys = mqtt_collector(mosquitto.host, mosquitto.port, f"{GATEWAY}/keys")
    gw = _start(plant)
    try:
        browser.get(plant.url + f"bookings?token={TOKEN}")  # the cookie, then the page
        wait_for(lambda: "No request waits for a decision." in _text(browser), 20,
                 "the empty bookings page")
        wait_for(lambda: browser.run("return document.body.dataset.live") == "on", 20,
                 "the page live")

        # 1. a platform's request appears on the open page by itself
        waiting = plant.request("po-page", 3)
        row = f"tr[data-booking='{waiting['booking']}']"
        wait_for(lambda: bool(browser.run(f"return document.querySelector(\"{row}\") !== null")
                              if _text(browser) else False), 20, "the request on the page")
        assert "po-page" in _text(browser) and "in " in str(browser.run(
            f"return document.querySelector(\"{row} [data-k$='/left']\").textContent"))
        csrf = str(browser.run("return document.querySelector('input[name=csrf]').value"))

        # 2. a hostile page in the same browser, knowing even the CSRF token: refused
        action = plant.url + f"bookings/{waiting['booking']}"
        with Hostile(free_port(), action, csrf) as hostile:
            browser.get(hostile.url)
            wait_for(lambda: "Refused" in _text(browser), 20, "the hostile post answered")
            assert f"Origin 'http://127.0.0.1:{hostile.server.server_port}' is not this page" \
                in _text(browser)
        assert plant.state(waiting["booking"]) == "requested"

        # 3. POSTs with the access token but without the CSRF token, or from another
        # origin; and one without the access token: each refused, nothing changes
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        own = {"Origin": plant.url.rstrip("/")}
        for headers, form, status in (
            ({**bearer, **own}, {"decision": "accept"}, 403),
            ({**bearer, "Origin": "http://evil.example"}, {"decision": "accept", "csrf": csrf},
             403),
            (own, {"decision": "accept", "csrf": csrf}, 401),
        ):
            r = httpx.post(action, data=form, headers=headers, timeout=10)
            assert r.status_code == status, (headers, form, r.text)
        assert plant.state(waiting["booking"]) == "requested"

        # 4. the person accepts on the page, with a reason
        browser.get(plant.url + "bookings")
        wait_for(lambda: bool(browser.run(f"return document.querySelector(\"{row} form\") !== null")
                              if _text(browser) else False), 20, "the decision form")
        browser.run(f"const f = document.querySelector(\"{row} form\");"
                    "f.querySelector('input[name=reason]').value = 'night crew confirmed';"
                    "f.querySelector('button[value=accept]').click();")
        wait_for(lambda: f"Booking {waiting['booking']} is accepted." in _text(browser), 20,
                 "the page says accepted")
        assert plant.state(waiting["booking"]) == "accepted"

        # 5. the signed record: on the stream, verified with the gateway's published key
        def accepted() -> list[dict[str, Any]]:
            jwks = json.loads(keys.snapshot()[-1].payload) if keys.snapshot() else None
            return [] if jwks is None else [
                r for r in _records(booked, jwks)
                if r["booking"] == waiting["booking"] and r["state"] == "accepted"]

        wait_for(lambda: bool(accepted()), 10, "the signed acceptance on the bookings stream")
        record = accepted()[0]
        assert (record["by"], record["reason"]) == ("operator", "night crew confirmed")
        decided = gw.events("booking_decided")
        assert [(e["booking"], e["state"], e["via"]) for e in decided] == [
            (waiting["booking"], "accepted", "status page from 127.0.0.1")]
        refused = gw.events("booking_post_refused")
        assert refused and "Origin" in refused[0]["error"]  # logged, at most once a minute

        # 6. decided already: the page says so, nothing changes
        browser.get(plant.url + "bookings")
        wait_for(lambda: "Accepted, upcoming" in _text(browser), 20, "the page again")
        assert browser.run(f"return document.querySelector(\"{row}[data-state=requested]\")") \
            is None
        r = httpx.post(action, data={"decision": "decline", "csrf": csrf},
                       headers={**bearer, **own}, timeout=10)
        assert r.status_code == 409 and "is accepted, not waiting for a decision" in r.text
        assert plant.state(waiting["booking"]) == "accepted"
    finally:
        gw.kill()


@pytest.mark.slow
def test_a_read_only_page_shows_requests_without_buttons_and_refuses_posts(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int], browser: Browser,
) -> None:
    plant = Plant(tmp_path, mosquitto, free_port, allow=False)
    gw = _start(plant)
    try:
        waiting = plant.request("po-ro", 3)
        browser.get(plant.url + f"bookings?token={TOKEN}")
        wait_for(lambda: waiting["booking"] in _text(browser), 20, "the request on the page")
        assert browser.run("return document.querySelectorAll('form, button').length") == 0
        assert "Read-only" in _text(browser)
        r = httpx.post(plant.url + f"bookings/{waiting['booking']}",
                       data={"decision": "accept", "csrf": "x"},
                       headers={"Authorization": f"Bearer {TOKEN}",
                                "Origin": plant.url.rstrip("/")}, timeout=10)
        assert r.status_code == 403 and "read-only" in r.text
        assert plant.state(waiting["booking"]) == "requested"
    finally:
        gw.kill()


def _reason(booking: str) -> str:
    return f"tr[data-booking='{booking}'][data-state=requested] input[name=reason]"


def _js(browser: Browser, script: str) -> Any:
    try:
        return browser.run(script)
    except RuntimeError:  # navigating
        return None


@pytest.mark.slow
def test_a_half_typed_reason_survives_the_live_updates(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int], browser: Browser,
) -> None:
    """The page rebuilds itself when bookings come or go; a reload would wipe the reason a
    person is typing. It is kept (the same field: text, caret, focus), the live counters run
    on, and the decision taken afterwards carries it. When the row being typed in leaves its
    section (decided on the command line meanwhile) the page holds still and says so."""
    plant = Plant(tmp_path, mosquitto, free_port, allow=True)
    gw = _start(plant)
    try:
        first = plant.request("po-first", 3)["booking"]
        browser.get(plant.url + f"bookings?token={TOKEN}")
        wait_for(lambda: _js(browser, "return document.body.dataset.live") == "on", 20,
                 "the page live")
        browser.type(_reason(first), "half a reas")

        # another request arrives: new rows, so the page is rebuilt around the typing
        second = plant.request("po-second", 5)["booking"]
        wait_for(lambda: bool(_js(browser, f"return document.querySelector("
                                           f"\"tr[data-booking='{second}']\") !== null")),
                 20, "the new request on the page")
        assert _js(browser, "return document.body.dataset.rebuilt") == "1"  # not a reload
        assert _js(browser, f"return document.querySelector(\"{_reason(first)}\").value") \
            == "half a reas"
        assert _js(browser, "return document.activeElement.closest('tr').dataset.booking") \
            == first
        browser.type(_reason(first), "on")  # the caret stayed at the end
        updates = int(_js(browser, "return document.body.dataset.updates"))
        wait_for(lambda: int(_js(browser, "return document.body.dataset.updates")) >= updates + 2,
                 20, "live updates after the rebuild")
        assert _js(browser, f"return document.querySelector(\"{_reason(first)}\").value") \
            == "half a reason"

        # the decision sent from the kept form carries the reason
        browser.run(f"document.querySelector(\"{_reason(first)}\").form"
                    ".querySelector('button[value=accept]').click()")
        wait_for(lambda: f"Booking {first} is accepted." in _text(browser), 20,
                 "the page says accepted")
        assert plant.state(first) == "accepted"
        assert gw.events("booking_decided")[-1]["reason"] == "half a reason"

        # typing into the second while the command line declines it: the row leaves its
        # section, so the page holds still (the text stays) and says why
        wait_for(lambda: _js(browser, "return document.body.dataset.live") == "on", 20,
                 "the page live again")
        browser.type(_reason(second), "second shift")
        done = subprocess.run(
            [sys.executable, "-m", "edge.cli", "bookings", "decline", second, "-c",
             str(plant.path)], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: "updates once your decision is sent" in (
            _js(browser, "return document.getElementById('live').textContent") or ""),
            20, "the page holding for the typing")
        assert _js(browser, f"return document.querySelector(\"{_reason(second)}\").value") \
            == "second shift"
        # cleared and left: the next update rebuilds the page, now with the decision
        browser.run(f"const f = document.querySelector(\"{_reason(second)}\");"
                    "f.value = ''; f.blur();")
        wait_for(lambda: bool(_js(browser, f"return document.querySelector(\"tr[data-booking="
                                           f"'{second}'][data-state=declined]\") !== null")),
                 20, "the declined request on the page")
    finally:
        gw.kill()


@pytest.mark.slow
def test_the_parent_of_two_workers_serves_the_bookings_page_and_its_decisions(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    """`run --workers 2`: each worker keeps its machines' bookings; the parent's page lists
    both workers' requests, and an accept there is written to the store holding the booking,
    whose worker signs and publishes it."""
    plant = Plant(tmp_path, mosquitto, free_port, allow=True, machines=4)
    by_worker: dict[int, str] = {}
    for m in ("m1", "m2", "m3", "m4"):
        by_worker.setdefault(worker_of(m, 2), m)
    assert set(by_worker) == {0, 1}, by_worker  # a request on each worker
    booked = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/hall-1/line-1/+/bookings")
    keys = mqtt_collector(mosquitto.host, mosquitto.port, f"{GATEWAY}/keys")
    gw = GatewayProcess(plant.path, "--workers", "2").start()
    try:
        wait_for(lambda: _serving(plant.url), 30, "status page listening")
        wait_for(lambda: len(gw.events("worker_started")) == 2, 30, "both workers")
        waiting = {w: plant.request(f"po-w{w}", 3 + w, m)["booking"] for w, m in by_worker.items()}
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        page = httpx.get(plant.url + "bookings", headers=bearer, timeout=10)
        assert page.status_code == 200, page.text
        for booking in waiting.values():
            assert f'data-booking="{booking}" data-state="requested"' in page.text
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match is not None
        form = {"csrf": match.group(1), "decision": "accept", "reason": "from the parent"}
        for w in (1, 0):
            r = httpx.post(plant.url + f"bookings/{waiting[w]}", data=form, timeout=10,
                           headers={**bearer, "Origin": plant.url.rstrip("/")})
            assert r.status_code == 303, r.text
        assert {plant.state(b) for b in waiting.values()} == {"accepted"}

        def accepted() -> set[str]:
            jwks = json.loads(keys.snapshot()[-1].payload) if keys.snapshot() else None
            return set() if jwks is None else {
                r["booking"] for r in _records(booked, jwks)
                if r["state"] == "accepted" and r["reason"] == "from the parent"}

        # each worker notices the commit in its store, signs and publishes it
        wait_for(lambda: accepted() == set(waiting.values()), 15,
                 "both acceptances signed on the bookings streams")
        decided = gw.events("booking_decided")
        assert sorted((e["booking"], e["via"]) for e in decided) == sorted(
            (b, "status page from 127.0.0.1") for b in waiting.values())
        again = httpx.get(plant.url + "bookings", headers=bearer, timeout=10).text
        assert "No request waits for a decision." in again
    finally:
        gw.kill()
