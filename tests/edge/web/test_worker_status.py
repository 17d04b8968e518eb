"""The parent of `run --workers N` serves the status page from its workers' snapshots
(edge/status/snapshot.py, edge/status/worker_source.py).

Why: the snapshot crosses a process boundary as JSON, so every figure must come back as
the same typed value (datetimes, tuples, nested mappings), and the merged view must show
every worker's machines in YAML order, add up the destinations, and keep a restarting
worker's machines on the page as down instead of dropping them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from plant_status import T0, FixedStatus, machine

from edge.config.workers import worker_of
from edge.daemon.console import status_footer, status_rows
from edge.status.log_tap import LogTap, RecentLog
from edge.status.snapshot import WorkerSnapshot, worker_snapshot
from edge.status.worker_source import RESTARTING, WorkerStatusSource
from edge.web import pages
from models.errors import EdgeError
from models.plant import Plant


def through_json(snapshot: dict[str, Any]) -> WorkerSnapshot:
    return WorkerSnapshot.parse(json.loads(json.dumps(snapshot)))


def test_a_snapshot_comes_back_as_the_same_typed_figures() -> None:
    source = FixedStatus()
    back = through_json(worker_snapshot(source, "mill-01"))
    assert list(back.machines) == list(source.machines())
    assert back.oee["mill-01"] == source.oee("mill-01") and back.oee["lathe-01"] is None
    assert back.polls["mill-01"] == source.poll_durations("mill-01")
    assert list(back.destinations) == list(source.destinations())
    assert list(back.points) == list(source.points("mill-01"))
    assert list(back.timeline) == list(source.timeline("mill-01"))
    assert back.sealed == (7, 70)
    # points and timeline only for a machine of this worker
    other = through_json(worker_snapshot(source, "elsewhere"))
    assert other.points == () and other.timeline == ()


def plant(ids: list[str]) -> Plant:
    machines = [{"id": i, "area": "a", "line": "l", "adapter": "modbus",
                 "connection": {"host": "127.0.0.1", "port": 502}} for i in ids]
    return Plant.model_validate({"gateway": {"id": "gw-1", "site": "s"}, "machines": machines})


IDS = ["m1", "m2", "m3", "m4"]  # m4 on worker 0, the others on worker 1


class Workers:
    """Two fake workers answering snapshots of their machines; `down` ones raise."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.asked: list[tuple[int, str | None]] = []

    async def fetch(self, index: int, machine: str | None) -> Mapping[str, Any]:
        self.asked.append((index, machine))
        if index in self.down:
            raise EdgeError("not running")
        mine = [i for i in IDS if worker_of(i, 2) == index]
        source = FixedStatus(rows=[machine_row(i) for i in mine])
        snap = worker_snapshot(source, machine)
        # each worker's one destination: 3 pending, 120 sent
        return json.loads(json.dumps(snap))


def machine_row(mid: str) -> Any:
    return machine(mid, last_sample=T0 + timedelta(seconds=IDS.index(mid)))


def source(workers: Workers, max_age: float = 0.0) -> WorkerStatusSource:
    return WorkerStatusSource(
        plant=lambda: plant(IDS), workers=2, fetch=workers.fetch, kid=lambda: "kid-1",
        queries=lambda: {("state", "ok"): 3}, version="1.0", started=T0, tap=LogTap(),
        max_age=max_age,
    )


async def test_the_parent_shows_every_workers_machines_and_sums_destinations() -> None:
    assert {worker_of(i, 2) for i in IDS} == {0, 1}
    workers = Workers()
    src = source(workers)
    await src.refresh("m4")
    assert [m.id for m in src.machines()] == IDS  # YAML order, across workers
    assert [p.name for p in src.points("m4")] == ["spindle_speed", "execution"]
    assert src.points("m1") == ()  # not asked for: only the machine of the page
    [dest] = src.destinations()
    assert (dest.pending, dest.sent, dest.acked, dest.connected) == (6, 240, 236, True)
    g = src.gateway()
    assert (g.kid, g.envelopes_sealed, g.records_sealed) == ("kid-1", 14, 140)
    body, _ = pages.plant_page(src)
    assert all(f'data-machine="{i}"' in body for i in IDS)

    workers.down.add(0)  # worker 0 restarting: its machine stays, shown down
    await src.refresh()
    rows = {m.id: m for m in src.machines()}
    assert set(rows) == set(IDS)
    assert rows["m4"].link == "down" and rows["m4"].link_reason == RESTARTING
    assert rows["m1"].link == "up"
    assert not src.destinations()[0].connected


async def test_snapshots_are_asked_for_at_most_once_per_max_age() -> None:
    workers = Workers()
    src = source(workers, max_age=60.0)
    await src.refresh()
    await src.refresh()
    assert sorted(workers.asked) == [(0, None), (1, None)]
    await src.refresh("m1")  # a machine page: its worker is asked for its points
    assert workers.asked[-1] == (1, "m1")
    assert len(workers.asked) == 3


def test_a_snapshot_that_is_not_one_is_refused() -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        WorkerSnapshot.parse({"machines": [{"id": "m1"}]})
    assert dataclasses.asdict(WorkerSnapshot.parse({})) == dataclasses.asdict(WorkerSnapshot())


def test_the_parents_console_table_comes_from_the_status_source() -> None:
    source = FixedStatus()
    rows = {r.asset: r for r in status_rows(source)}
    assert rows["mill-01"].oee == "68% (90/80/95)" and rows["mill-01"].parts == "12/2 bad"
    assert rows["lathe-01"].status == "down"
    assert rows["lathe-01"].alarms == "E1042 Spindle <overload>"
    footer = status_footer(source)
    assert footer == ("local: connected, sent 120, outbox 3, dropped 1 | "
                      "envelopes 7, records 70")


def test_a_meter_row_shows_its_reading_not_an_oee_in_every_view() -> None:
    """A meter has no OEE (edge/kpi/service.py `producing`): the page's OEE cell and the
    console's say whose meter it is and what it reads, also from a worker's snapshot."""
    meter = machine("mill-01-meter", execution=None, mode=None, program=None, part_count=None,
                    bad_part_count=None, meter_for="mill-01", power_w=3420.0,
                    energy_kwh=1234.56)
    source = FixedStatus(rows=[machine("mill-01"), meter])
    (back,) = [m for m in through_json(worker_snapshot(source, None)).machines
               if m.meter_for]
    assert back == meter
    cells = pages.plant_live(source).cells
    assert cells["mill-01-meter/oee"] == "meter of mill-01: 3.42 kW, 1234.6 kWh"
    assert cells["mill-01-meter/aeq"] == cells["mill-01-meter/observed"] == "\u2014"
    assert cells["mill-01/oee"] == "68.4 %"
    rows = {r.asset: r for r in status_rows(source)}
    assert rows["mill-01-meter"].oee == "meter of mill-01: 3.42 kW, 1234.6 kWh"
    assert rows["mill-01"].oee == "68% (90/80/95)"
    page = pages.machine_live(source, "mill-01-meter")
    assert page is not None and page.cells["loss/shift"].startswith(
        "meter of mill-01: 3.42 kW, 1234.6 kWh; an energy meter makes no parts")
    built = pages.machine_page(source, "mill-01-meter")  # no "No shift is running" in a shift
    assert built is not None and "shift is running" not in built[0] and page.svg is None
    unread = dataclasses.replace(meter, power_w=None, energy_kwh=None)
    assert unread.meter_reading == "meter of mill-01"


async def test_the_gateway_view_merges_each_workers_warnings_by_time() -> None:
    """With `run --workers N` the gateway page, its live cells and the shape show each
    worker's recent warnings (kept by the parent from the workers' reports) beside the
    parent's own, newest first, labelled with the worker. Reloads are the parent's one
    outcome per SIGHUP for the pool: a worker's copy holds none, and adds none."""
    parent_tap, logs = LogTap(), [RecentLog(), RecentLog()]
    parent_tap.recent.warnings.add(T0 + timedelta(seconds=2), "error: worker_exited_restarting")
    logs[1].warnings.add(T0 + timedelta(seconds=1), "warning: device_link_down asset=dead")
    logs[1].warnings.add(T0 + timedelta(seconds=3), "warning: device_link_down asset=dead2")
    parent_tap.recent.add_reload(T0 + timedelta(seconds=4), "partial",
                                 "applied by worker 0; worker 1: rejected: bad")
    logs[1].reloads.add(T0 + timedelta(seconds=5), "rejected: bad")  # never so (log_tap.py)
    src = WorkerStatusSource(
        plant=lambda: plant(IDS), workers=2, fetch=Workers().fetch, kid=lambda: "kid-1",
        queries=dict, version="1.0", started=T0, tap=parent_tap, worker_logs=logs,
    )
    g = src.gateway()
    assert [(e.origin, e.text) for e in g.warnings] == [
        ("worker 1", "warning: device_link_down asset=dead"),
        ("parent", "error: worker_exited_restarting"),
        ("worker 1", "warning: device_link_down asset=dead2")]
    assert [(e.worker, e.text) for e in g.reloads] == [
        (None, "partial: applied by worker 0; worker 1: rejected: bad")]
    assert g.reload_counts == {"ok": 0, "rejected": 0, "partial": 1}
    body, live = pages.gateway_page(src)
    assert "<th>from</th>" in body
    cells = live.cells
    assert (cells["gw/warning/0/from"], cells["gw/warning/0/text"]) == (
        "worker 1", "warning: device_link_down asset=dead2")  # newest first
    assert cells["gw/warning/1/from"] == "parent"
    assert "gw/reload/0/from" not in cells and "gw/reload/1/text" not in cells
    assert 'data-k="gw/warning/0/from">worker 1<' in body
    # a new entry of a worker changes the page's rows: the live shape says so
    before = live.shape
    logs[0].warnings.add(T0 + timedelta(seconds=6), "warning: x")
    assert pages.gateway_live(src).shape != before
    # a worker's copy outlives its process: nothing here is cleared by a restart, and a
    # restarted worker's first report adds to it
    logs[0].absorb({"warnings": [[(T0 + timedelta(seconds=7)).isoformat(), "warning: y"]]})
    assert [e.text for e in src.gateway().warnings][-2:] == ["warning: x", "warning: y"]


def test_one_process_shows_no_from_column() -> None:
    """The single process's gateway page is as before: no worker, no `from` column
    (both sources describe the gateway through edge/status/identity.py; no worker logs
    is what the single process has)."""
    tap = LogTap()
    tap(None, "warning", {"event": "device_link_down", "asset": "m1"})
    tap(None, "info", {"event": "reloaded"})
    src = WorkerStatusSource(
        plant=lambda: plant(IDS), workers=1, fetch=Workers().fetch, kid=lambda: None,
        queries=dict, version="1.0", started=T0, tap=tap,
    )
    body, live = pages.gateway_page(src)
    assert "<th>from</th>" not in body and not any(k.endswith("/from") for k in live.cells)
    assert live.cells["gw/warning/0/text"] == "warning: device_link_down asset=m1"
    assert live.cells["gw/reload/0/text"] == "ok"
    assert "<th>warning</th>" in body and "<th>outcome</th>" in body
    # a full list (the ring keeps 50) updates in place: same shape, newest row's cells new
    for i in range(60):
        tap(None, "warning", {"event": f"w{i}"})
    full = pages.gateway_live(src)
    tap(None, "warning", {"event": "newest"})
    after = pages.gateway_live(src)
    assert after.shape == full.shape
    assert (full.cells["gw/warning/0/text"], after.cells["gw/warning/0/text"]) == (
        "warning: w59", "warning: newest")
