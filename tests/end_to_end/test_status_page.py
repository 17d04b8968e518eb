"""The demo plant's status page in a real headless browser, and its /metrics, against the
project's simulators over real sockets (gateway in a subprocess, Mosquitto, Chromium)."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browser import MISSING, Browser, driver_binary
from conftest import Mosquitto, find_free_port
from e2e import DEMO_MACHINES, DEMO_METERS, GatewayProcess, demo_plant_on_free_ports, wait_for
from prometheus_client.parser import text_string_to_metric_families

from edge.commissioning.probe import probe
from edge.config.loader import LoadedPlant, load_plant


@dataclass
class Running:
    url: str
    loaded: LoadedPlant


@pytest.fixture
def demo(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Running]:
    port = find_free_port()
    plant = demo_plant_on_free_ports(
        tmp_path, f"mqtt://127.0.0.1:{mosquitto.port}",
        {"web": {"port": port, "refresh_seconds": 0.5}, "oee": {"publish_every": 1}},
    )
    gw = GatewayProcess(plant).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        def serving() -> bool:
            try:
                return httpx.get(url + "metrics", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        # the gateway serves the page once its simulators are up: OPC UA servers take seconds
        # each, tens of seconds on a busy 2-core host (two runs timed out at 30 s)
        wait_for(serving, 90, "status page listening")
        yield Running(url, load_plant(plant))
    finally:
        gw.kill()


def _metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(url + "metrics", timeout=5).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _per_machine(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> set[str]:
    return {dict(labels)["machine"] for labels in m.get(name, {})}


POLLED = {"mill-01", "lathe-01", "mill-02", "vf2-01", "robodrill-01"}
LOCAL = (("destination", "local"),)


@pytest.mark.slow
def test_metrics_parse_with_series_for_every_demo_machine(demo: Running) -> None:
    def complete() -> bool:
        """What the checks below count on, each made by its own task: a machine up with
        OEE says nothing of a meter's reads, a poll's duration or an envelope's PUBACK."""
        m = _metrics(demo.url)
        up = {dict(k)["machine"] for k, v in m.get("edge_gateway_device_up", {}).items() if v}
        read = m.get("edge_gateway_samples_read_total", {})
        return (up >= set(DEMO_MACHINES)
                and _per_machine(m, "edge_gateway_oee_oee_ratio") >= set(DEMO_MACHINES)
                and bool(read) and all(v > 0 for v in read.values())
                and _per_machine(m, "edge_gateway_poll_duration_seconds_count") >= POLLED
                and m.get("edge_gateway_envelopes_acked_total", {}).get(LOCAL, 0) > 0)

    wait_for(complete, 60, "every demo machine up with OEE, every device read and polled, "
             "envelopes acknowledged, in /metrics")
    m = _metrics(demo.url)
    for name in ("edge_gateway_samples_read_total", "edge_gateway_samples_bad_total",
                 "edge_gateway_device_reconnects_total",
                 "edge_gateway_last_sample_timestamp_seconds",
                 "edge_gateway_oee_availability_ratio"):
        assert _per_machine(m, name) >= set(DEMO_MACHINES), name
    # a meter makes no parts: no OEE series (it would read availability 0 all shift)
    for name in ("edge_gateway_oee_oee_ratio", "edge_gateway_oee_availability_ratio"):
        assert not _per_machine(m, name) & set(DEMO_METERS), name
    assert set(DEMO_METERS) <= _per_machine(m, "edge_gateway_samples_read_total")
    assert _per_machine(m, "edge_gateway_poll_duration_seconds_count") >= POLLED
    assert all(v > 0 for v in m["edge_gateway_samples_read_total"].values())
    assert m["edge_gateway_envelopes_acked_total"][LOCAL] > 0

    # the machine page without JavaScript: every configured point with its address, the
    # raw registers and the decoded value
    html = httpx.get(demo.url + "machines/mill-01", timeout=5).text
    for point in ("execution", "part_count", "spindle_speed_cdab", "door_closed"):
        assert f"<th scope=\"row\">{point}</th>" in html, point
    assert "holding 100+2 float32 CDAB" in html
    assert re.search(r'data-k="mill-01.part_count/raw"[^>]*>0x[0-9a-f]{4} 0x[0-9a-f]{4}<', html)
    # dmc-01 has no points (profile: sinumerik): its rows name the NC variable nodes the
    # values are derived from, not "(device model)"
    html = httpx.get(demo.url + "machines/dmc-01", timeout=5).text
    assert "<th scope=\"row\">part_count</th>" in html
    assert "nsu=SinumerikVarProvider;s=/Channel/State/actParts" in html
    assert "nsu=SinumerikVarProvider;s=/Channel/State/progStatus + " in html
    # the destinations page names the payload format (the demo's: signed envelopes)
    assert "<td>envelope</td>" in httpx.get(demo.url + "destinations", timeout=5).text


def _parts_on_page(browser: Browser, machine: str) -> int | None:
    cell = browser.run(
        "const c = document.querySelector(`[data-k='${arguments[0]}/parts']`);"
        "return c ? c.textContent : null;", machine)
    if not cell or "/" not in cell:
        return None
    good, bad = (int(x) for x in cell.split("/"))
    return good + bad


def _simulator_parts(loaded: LoadedPlant, machine: str) -> int:
    """What the simulator serves, read over a connection of our own (not the gateway's)."""
    result = asyncio.run(probe(loaded, machine, within=10))
    rows = {r.point: r for r in result.rows}
    value = rows["part_count"].value
    assert isinstance(value, int), result
    return value


@pytest.mark.slow
@pytest.mark.skipif(driver_binary() is None, reason=MISSING)
def test_plant_page_in_chromium_shows_live_values_of_the_simulators(demo: Running) -> None:
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(Path(profile))
        try:
            browser.get(demo.url)
            rows = browser.run("return [...document.querySelectorAll('tr[data-machine]')]"
                               ".map(r => r.dataset.machine)")
            assert sorted(rows) == sorted(DEMO_MACHINES + DEMO_METERS)

            def live_and_complete() -> bool:
                states = browser.run(
                    "return document.body.dataset.live === 'on' ? [...document.querySelectorAll("
                    "'tr[data-machine]')].map(r => [r.dataset.machine, "
                    "r.querySelector('.link').textContent, "
                    "r.querySelector('.execution').textContent, "
                    "r.querySelector('.oee').textContent, "
                    "r.querySelector('.aeq').textContent]) : null")
                # a meter is up but has no execution state nor OEE of its own: its cell
                # shows its reading (`meter of mill-01: 3.42 kW, 1234.5 kWh`), no A/E/Q
                return bool(states) and all(
                    link == "up" and (
                        re.fullmatch(r"meter of \S+: [\d.]+ kW, [\d.]+ kWh", oee) is not None
                        and aeq == "\u2014" if machine in DEMO_METERS else
                        execution != "-" and oee.endswith("%"))
                    for machine, link, execution, oee, aeq in states)

            wait_for(live_and_complete, 60, "live state and OEE on every row")
            # every row's part counter is what the simulator serves: read the simulator,
            # the page, the simulator again; the page must lie between (the count only rises)
            for machine in DEMO_MACHINES:
                def matches(machine: str = machine) -> bool:
                    before = _simulator_parts(demo.loaded, machine)
                    shown = _parts_on_page(browser, machine)
                    after = _simulator_parts(demo.loaded, machine)
                    # the page lags the device by a poll and a refresh, in which the
                    # simulator (time_scale 20) may finish a part or two
                    return shown is not None and before - 2 <= shown <= after

                wait_for(matches, 30, f"{machine}: page's part count matches the simulator")
            shot = browser.screenshot()
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
            target = os.environ.get("EDGE_STATUS_SCREENSHOT")
            if target:  # regenerate docs/status-page.png: EDGE_STATUS_SCREENSHOT=docs/...
                def rated() -> bool:  # every machine's effectiveness shown (OEE is cached)
                    cells = browser.run("return [...document.querySelectorAll("
                                        "'tr[data-machine] .aeq')].map(c => c.textContent)")
                    # a meter's cell is a dash, not A / E / Q (it has no OEE)
                    factors = [c.split(" / ") for c in cells]
                    return sum(len(f) == 3 and f[1] != "-" for f in factors) >= len(DEMO_MACHINES)

                wait_for(rated, 90, "effectiveness on every machine row")
                browser.resize(1500, 900)  # every row in the picture, the names unwrapped
                height = browser.run("return document.documentElement.scrollHeight")
                browser.resize(1500, int(height) + 20)
                browser.run("document.querySelectorAll('.changed')"
                            ".forEach(e => e.classList.remove('changed'))")
                Path(target).write_bytes(browser.screenshot())
        finally:
            browser.close()
