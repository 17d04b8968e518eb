"""`run --workers 2`: platforms query and book, and the status page and `/metrics` show the
whole plant, although the machines run in two processes (a real Mosquitto, the project's
Modbus simulators, a signed request from edge/platform_kit/client.py).

Why: the parent is the gateway's one query endpoint and one status page; a query about a
machine must reach the worker that owns it, a whole-plant answer must hold every worker's
machines, a booking must be decided as one process decides it (one writer per machine),
and a worker that crashed must serve again once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ROOT, GatewayProcess, plant_yaml, wait_for

from edge.config.workers import worker_of
from edge.platform_kit.client import query

MACHINES = ("m1", "m2", "m3", "m4")
GATEWAY = "edge/plant-a/gw-1"
PLATFORMS = """
platforms:
  - {id: p1, public_key_file: p1.pem, methods: [describe, state, oee, aas, capacity, health,
                                                reserve, release, bookings]}
  - {id: p2, public_key_file: p2.pem, methods: [reserve]}
booking:
  quotas: {p1: {max_bookings: 1}}
"""
MILLING = ("m1", "m4")  # m1 in worker 1, m4 in worker 0: a booking by process spans both


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cli(plant: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "bookings", *args, "-c", str(plant)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def metric_machines(text: str, name: str) -> set[str]:
    return set(re.findall(rf'^edge_gateway_{name}\{{[^}}]*machine="([^"]+)"', text, re.M))


@pytest.mark.slow
def test_two_workers_answer_queries_and_serve_the_status_page(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> None:
    key, key2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    for name, k in (("p1", key), ("p2", key2)):
        (tmp_path / f"{name}.pem").write_bytes(
            k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(tmp_path / "state", [free_port() for _ in MACHINES], mosquitto.port)
    for m in MILLING:
        text = text.replace(f"  - id: {m}\n",
                            f"  - id: {m}\n    capabilities: {{processes: [milling]}}\n")
    plant.write_text(text + PLATFORMS)
    by_worker = {w: [m for m in MACHINES if worker_of(m, 2) == w] for w in (0, 1)}
    assert by_worker[0] and by_worker[1]  # the test needs machines on both workers
    col = mqtt_collector(mosquitto.host, mosquitto.port, f"{GATEWAY}/status")

    def ask(method: str, params: dict[str, Any] | None = None,
            as_key: Ed25519PrivateKey = key) -> dict[str, Any]:
        return asyncio.run(query(mosquitto.url, as_key, GATEWAY, method, params or {}, wait=15))

    def status() -> dict[str, Any]:
        msgs = col.snapshot()
        return json.loads(msgs[-1].payload) if msgs else {}

    gw = GatewayProcess(plant, "--workers", "2").start()
    try:
        wait_for(lambda: bool(gw.events("status_page_started")), 30, "the status page")
        [started] = gw.events("status_page_started")
        assert "worker" not in started  # the parent serves it
        url = started["url"]
        wait_for(lambda: len(status().get("devices", {})) == len(MACHINES), 60,
                 "both workers reporting")

        # a whole-plant query holds the machines of both workers, in YAML order
        state = ask("state")
        assert state["ok"], state
        assert list(state["result"]["machines"]) == list(MACHINES)
        for m in (by_worker[0][0], by_worker[1][0]):  # one machine of each worker
            one = ask("state", {"asset": m})
            assert one["ok"] and list(one["result"]["machines"]) == [m], one
            oee = ask("oee", {"asset": m, "window": "hours", "hours": 1})
            assert oee["ok"], oee
        described = ask("describe")
        assert described["ok"] and list(described["result"]["machines"]) == list(MACHINES)
        health = ask("health")
        assert health["ok"] and set(health["result"]["devices"]) == set(MACHINES), health
        unknown = ask("state", {"asset": "m9"})
        assert unknown["error"]["code"] == "not_found", unknown

        # bookings: each goes to its machine's worker; the list merges both; the quota
        # (one open booking) counts the other worker's; asking again with the same
        # reference returns the open booking from the other worker
        base = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
        booked = {}
        for i, m in enumerate((by_worker[0][0], by_worker[1][0])):
            r = ask("reserve", {"asset": m, "reference": f"po-{i}", "start": ts(base),
                                "end": ts(base + timedelta(hours=1))})
            assert r["ok"] and r["result"]["machine"] == m and r["result"]["new"], r
            booked[m] = r["result"]
        assert booked[by_worker[0][0]]["state"] == "accepted"
        second = booked[by_worker[1][0]]
        assert second["state"] == "requested" and "quota" in " ".join(second["waits_for"]), second
        # the person at the plant sees it (in worker 1's store) and accepts it
        waiting = cli(plant, "list")
        assert waiting.returncode == 0 and second["booking"] in waiting.stdout, waiting
        assert booked[by_worker[0][0]]["booking"] not in waiting.stdout  # accepted already
        accepted = cli(plant, "accept", second["booking"])
        assert accepted.returncode == 0 and "accepted" in accepted.stdout, accepted
        wait_for(lambda: {b["state"] for b in ask("bookings")["result"]["bookings"]}
                 == {"accepted"}, 15, "the accept seen by the platform")
        again = ask("reserve", {"asset": by_worker[1][0], "reference": "po-0",
                                "start": ts(base), "end": ts(base + timedelta(hours=1))})
        assert again["ok"] and not again["result"]["new"], again
        assert again["result"]["booking"] == booked[by_worker[0][0]]["booking"]
        listed = ask("bookings")
        assert listed["ok"], listed
        assert {b["booking"] for b in listed["result"]["bookings"]} == {
            b["booking"] for b in booked.values()}
        released = ask("release", {"reference": "po-1"})
        assert released["ok"] and released["result"]["state"] == "released", released

        # by process over both workers: m1 (first in the YAML) is taken, so m4 of the other
        # worker gets it, as one process would decide
        later = {"start": ts(base + timedelta(hours=4)), "end": ts(base + timedelta(hours=5))}
        taken = ask("reserve", {"asset": "m1", "reference": "q-1", **later}, key2)
        assert taken["ok"] and taken["result"]["state"] == "accepted", taken
        by_process = ask("reserve", {"process": "milling", "reference": "q-2", **later}, key2)
        assert by_process["ok"], by_process
        assert (by_process["result"]["machine"], by_process["result"]["state"]) == (
            "m4", "accepted"), by_process

        # the status page and /metrics show every machine of both workers
        page = httpx.get(url, timeout=10).text
        for m in MACHINES:
            assert f'data-machine="{m}"' in page, m
        metrics = httpx.get(url + "metrics", timeout=10).text
        assert metric_machines(metrics, "device_up") == set(MACHINES)
        assert metric_machines(metrics, "samples_read_total") == set(MACHINES)
        assert 'edge_gateway_query_requests_total{method="state",result="ok"}' in metrics
        one_page = httpx.get(url + f"machines/{by_worker[0][0]}", timeout=10)
        assert one_page.status_code == 200 and "part_count" in one_page.text
        # the parent serves the bookings page from both workers' stores (read-only here:
        # decisions need gateway.web.allow_decisions, tests/end_to_end/
        # test_status_page_bookings.py decides on it with two workers)
        assert 'href="/bookings"' in page
        bookings_page = httpx.get(url + "bookings", timeout=10)
        assert bookings_page.status_code == 200, bookings_page.text
        for ref, state in (("po-0", "accepted"), ("po-1", "released"), ("q-1", "accepted"),
                           ("q-2", "accepted")):
            assert re.search(rf'data-state="{state}">(?:(?!</tr>).)*/ {ref}<',
                             bookings_page.text), (ref, state)
        assert "Read-only" in bookings_page.text

        # SIGHUP: the parent takes the new platform list at once (p2 revoked)
        plant.write_text(plant.read_text().replace(
            "  - {id: p2, public_key_file: p2.pem, methods: [reserve]}\n", ""))
        gw.signal(signal.SIGHUP)

        def revoked() -> bool:
            r = ask("reserve", {"asset": "m1", "reference": "q-3", **later}, key2)
            return not r["ok"] and r["error"]["code"] == "unauthorized"

        wait_for(revoked, 15, "p2's key unknown after the reload")
        assert ask("state", {"asset": "m1"})["ok"]  # p1 still served

        # a worker killed: restarted; queries about its machines are answered again
        victim = next(w for w in status()["workers"] if w["index"] == 0)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: bool(gw.events("worker_exited_restarting")), 15, "the exit noticed")

        def answered_again() -> bool:
            r = ask("state", {"asset": by_worker[0][0]})
            return bool(r["ok"]) or r["error"]["code"] not in ("unavailable", "not_found")

        wait_for(answered_again, 60, "the restarted worker answering")
        r = ask("state")
        assert r["ok"] and list(r["result"]["machines"]) == list(MACHINES), r
        wait_for(lambda: metric_machines(httpx.get(url + "metrics", timeout=10).text,
                                         "device_up") == set(MACHINES), 30,
                 "metrics of every machine after the restart")
    finally:
        gw.stop()
