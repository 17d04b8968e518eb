"""`run --workers 2`: the parent's gateway page shows each worker's warnings and reload
outcomes, labelled with the worker, against a real Mosquitto (issues 14 and 17).

Why: with worker processes the status page is served by the parent, while a failing
device and a refused reload are logged in a worker. A plant engineer must see on the page
that the device in worker 0 keeps failing and that the reload was refused, and must not
lose that when the worker restarts (its new process starts with an empty log).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for

from edge.config.workers import worker_of

Row = tuple[str, str, str]
"""(when, from, text) of one row of the gateway page's reload or warning table."""
CELL = re.compile(r'data-k="gw/(reload|warning)/(\d+)/(when|from|text)">([^<]*)<')


def rows(url: str, kind: str) -> list[Row]:
    """The rows of the gateway page's `kind` table, newest first."""
    page = httpx.get(url + "gateway", timeout=10)
    page.raise_for_status()
    cells: dict[int, dict[str, str]] = {}
    for k, row, col, text in CELL.findall(page.text):
        if k == kind:
            cells.setdefault(int(row), {})[col] = unescape(text)
    return [(c["when"], c.get("from", ""), c["text"]) for _, c in sorted(cells.items())]


def live_cells(url: str) -> dict[str, Any]:
    """The first live update of the gateway page (its Server-Sent Events stream, JSON)."""
    with httpx.stream("GET", url + "events", params={"page": "gateway"}, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                cells: dict[str, Any] = json.loads(line[6:])["cells"]
                return cells
    raise AssertionError("the live stream ended without an update")


def dead_warnings(found: list[Row], worker: int) -> list[Row]:
    return [r for r in found if r[1] == f"worker {worker}"
            and r[2].startswith("warning: device_unavailable asset=dead ")]


@pytest.mark.slow
def test_a_workers_failing_device_and_refused_reload_show_on_the_parents_page(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
) -> None:
    dead = worker_of("dead", 2)  # the machine at a closed port
    assert worker_of("m1", 2) != dead  # the other worker has a healthy simulated machine
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(tmp_path / "state", [free_port()], mosquitto.port, dead_port=free_port())
    plant.write_text(text)
    gw = GatewayProcess(plant, "--workers", "2").start()
    try:
        wait_for(lambda: bool(gw.events("status_page_started")), 60, "the status page")
        [started] = gw.events("status_page_started")
        assert "worker" not in started  # the parent serves it
        url = started["url"]

        # the worker's warning about its device, on the parent's page, labelled
        wait_for(lambda: bool(dead_warnings(rows(url, "warning"), dead)), 60,
                 f"worker {dead}'s device_unavailable on the gateway page")
        [first] = dead_warnings(rows(url, "warning"), dead)
        assert "error=" in first[2]  # the adapter's reason comes along
        # the page's live updates (JSON) carry the same rows, labelled
        cells = live_cells(url)
        shown = [(cells[k[:-5] + "/when"], v, cells[k[:-5] + "/text"])
                 for k, v in cells.items() if k.startswith("gw/warning/") and k.endswith("/from")]
        assert first in shown

        # SIGHUP with an invalid change: the parent refuses it once, as a single process
        # would (each worker counted its own refusal, the parent's went unlisted: 2, not 1),
        # and the page says so.
        # Both running first: the warning above says only `dead`'s worker started, and a
        # worker that read the YAML after the change would refuse to start, not reload
        wait_for(lambda: {0, 1} <= {e.get("worker") for e in gw.events("gateway_started")},
                 60, "both workers started")
        plant.write_text(text.replace("poll_interval: 0.2", "poll_interval: -1", 1))
        gw.signal(signal.SIGHUP)

        def refusals() -> list[Row]:
            return [r for r in rows(url, "reload") if r[2].startswith("rejected: ")]

        wait_for(lambda: bool(refusals()), 60, "the refusal in the reload list")
        refused = refusals()
        # one row, the parent's (no worker's row yet: the table has no `from` column)
        assert len(refused) == 1 and not refused[0][1].startswith("worker"), refused
        assert all("poll_interval" in r[2] for r in refused), refused
        assert not [r for r in rows(url, "reload") if r[2] == "ok"]
        metrics = httpx.get(url + "metrics", timeout=10).text
        assert 'edge_gateway_reloads_total{result="rejected"} 1.0' in metrics
        assert not [e for e in gw.events("reload_started") if "worker" in e]  # not asked

        # the worker with the failing device restarts: what it reported stays listed
        plant.write_text(text)  # its new process reads a valid file
        [pid] = [e["pid"] for e in gw.events("worker_started") if e["worker"] == dead]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len([e for e in gw.events("worker_started") if e["worker"] == dead])
                 == 2, 60, f"worker {dead} restarted")
        # its new process warns about the device anew (a second row) ...
        wait_for(lambda: len(dead_warnings(rows(url, "warning"), dead)) == 2, 60,
                 "the restarted worker's own warning")
        # ... beside the rows its previous process reported
        assert first in rows(url, "warning")
        assert set(refused) <= set(rows(url, "reload"))
        assert any(r[1] == "parent" and "worker_exited_restarting" in r[2]
                   for r in rows(url, "warning"))
    finally:
        gw.stop()


@pytest.mark.slow
def test_the_reload_that_changed_the_worker_count_is_still_listed_after_the_restart(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
) -> None:
    """A SIGHUP that changes `gateway.workers` restarts the command in the same process
    (exec): the page's history was gone with it, the very reload the plant engineer just
    sent included. Now the new parent's page lists that reload, and what the old workers
    had reported, labelled with the worker they came from."""
    dead = worker_of("dead", 2)
    state = tmp_path / "state"
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(state, [free_port()], mosquitto.port, dead_port=free_port(),
                      gateway_extra=", workers: 2")
    plant.write_text(text)
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: bool(gw.events("status_page_started")), 60, "the status page")
        url = gw.events("status_page_started")[0]["url"]
        wait_for(lambda: bool(dead_warnings(rows(url, "warning"), dead)), 60,
                 f"worker {dead}'s device_unavailable on the gateway page")

        plant.write_text(text.replace("workers: 2", "workers: 3"))
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len(gw.events("status_page_started")) == 2, 60,
                 "the restarted parent's status page")
        assert len(gw.events("workers_changed_restarting")) == 1
        url = gw.events("status_page_started")[1]["url"]
        reloads = rows(url, "reload")
        assert [r[2] for r in reloads] == ["ok: workers 2 -> 3"], reloads
        # counted once, by the parent serving `/metrics` now (the stopping one was gone
        # before any scrape): its counts go on from the previous run's
        assert reloads_total(url) == {"ok": 1, "partial": 0, "rejected": 0}
        warnings = rows(url, "warning")  # the old worker's, now kept by the parent
        assert any(r[1] in ("", "parent") and r[2].startswith(
            f"worker {dead}: warning: device_unavailable asset=dead ") for r in warnings), warnings
        assert any(r[2] == "warning: workers_changed_restarting" for r in warnings), warnings
        assert not (state / "recent-log.json").exists()  # read once
    finally:
        gw.stop()


def reloads_total(url: str) -> dict[str, float]:
    """`edge_gateway_reloads_total` by result, as `/metrics` says now."""
    text = httpx.get(url + "metrics", timeout=10).text
    return {r: float(n) for r, n in
            re.findall(r'^edge_gateway_reloads_total\{result="(\w+)"\} (\S+)$', text, re.M)}


@pytest.mark.slow
def test_one_sighup_is_one_reload_entry_and_one_count_with_two_workers(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
) -> None:
    """Each worker logged `reloaded` and the parent counted every worker's: one SIGHUP was
    2 on `/metrics` and 2 rows on the page, and a worker that kept its running
    configuration while the other applied the file was counted `ok` beside it. Now the
    parent logs one outcome per SIGHUP for the pool: `ok` when both workers applied it,
    `rejected` when the parent or both workers refused it, `partial` when one did (here a
    new state directory where worker 1's own directory cannot be created), naming them."""
    state = tmp_path / "state"
    keys = f", keys_dir: {state / 'keys'}"  # the same key whichever state_dir (below)
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(state, [free_port(), free_port()], mosquitto.port, gateway_extra=keys)
    plant.write_text(text)
    gw = GatewayProcess(plant, "--workers", "2").start()

    def reload_rows() -> list[str]:
        return [r[2] for r in reversed(rows(url, "reload"))]  # oldest first

    def sighup(new_text: str, result: str, count: float) -> None:
        plant.write_text(new_text)
        gw.signal(signal.SIGHUP)
        wait_for(lambda: reloads_total(url)[result] == count, 60,
                 f"edge_gateway_reloads_total{{result={result!r}}} {count}")

    try:
        wait_for(lambda: bool(gw.events("status_page_started")), 60, "the status page")
        url = gw.events("status_page_started")[0]["url"]
        wait_for(lambda: {0, 1} <= {e.get("worker") for e in gw.events("gateway_started")},
                 60, "both workers started")
        assert reloads_total(url) == {"ok": 0, "partial": 0, "rejected": 0}

        # the file as it is: both workers apply it, the parent counts it once
        sighup(text, "ok", 1)
        assert reload_rows() == ["ok: applied by workers 0, 1"]
        assert {e.get("worker") for e in gw.events("reloaded")} == {None, 0, 1}
        [pooled] = [e for e in gw.events("reloaded") if "worker" not in e]
        assert pooled["pool"] == ["applied by workers 0, 1"]

        # a file the parent refuses: once, the workers not asked
        sighup(text.replace("poll_interval: 0.2", "poll_interval: -1", 1), "rejected", 1)
        assert len(reload_rows()) == 2 and reload_rows()[1].startswith("rejected: ")
        assert "poll_interval" in reload_rows()[1]

        # a file the parent accepts and both workers refuse (a keys directory that is a
        # file, which only the workers' new egress reads): once, naming both
        (tmp_path / "not-a-dir").write_text("")
        sighup(text.replace(keys, f", keys_dir: {tmp_path / 'not-a-dir'}"), "rejected", 2)
        assert len(reload_rows()) == 3
        assert reload_rows()[2].startswith("rejected: workers 0, 1: "), reload_rows()

        # worker 1 cannot use the new state directory, worker 0 can: partial, once
        moved = tmp_path / "moved"
        moved.mkdir()
        (moved / "worker-1").write_text("in the way")
        sighup(text.replace(f"state_dir: {state},", f"state_dir: {moved},"), "partial", 1)
        last = reload_rows()[-1]
        assert last.startswith("partial: applied by worker 0; worker 1: rejected: "), last
        assert "worker-1" in last
        assert len(gw.events("reload_partially_applied")) == 1
        assert (moved / "worker-0").is_dir()  # worker 0 applied it

        # each SIGHUP one row and one count; the workers' own lines are theirs (worker 0
        # applied the first and the last, worker 1 the first), counted in none of them
        def applied_by(worker: int) -> int:
            return len([e for e in gw.events("reloaded") if e.get("worker") == worker])

        assert (applied_by(0), applied_by(1)) == (2, 1)
        assert reloads_total(url) == {"ok": 1, "partial": 1, "rejected": 2}
        assert len(reload_rows()) == 4
    finally:
        gw.stop()
