"""The `oee` publisher and the capacity round are O(machines): at 500 machines either one
in a single event-loop step held every device's poll and seal for 0.2-0.7 s (issue 17).
Both now let other tasks run every few machines, and skip a machine a reload stopped
meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog

from edge.capacity.bookings import BookingsFiles
from edge.capacity.publisher import PLANNED_REUSE, CapacityPublisher, CapacityRecords
from edge.config.loader import LoadedPlant, parse_plant
from edge.devices.fleet import FleetView
from edge.egress.stack import RecordSink
from edge.kpi.publisher import OeePublisher
from edge.kpi.service import KpiService
from models.plant import Machine
from models.shift_calendar import planned_intervals

MACHINES = 40


def plant() -> LoadedPlant:
    rows = "".join(
        f"  - {{id: m{i:02d}, area: a, line: l, adapter: modbus,\n"
        "     connection: {host: 127.0.0.1, port: 502},\n"
        "     points: [{name: x, register: holding, address: 0, data_type: uint16}]}\n"
        for i in range(MACHINES)
    )
    return parse_plant(f"gateway: {{id: gw, site: s}}\nmachines:\n{rows}", "plant.yaml")


@dataclass
class FakeDevice:
    machine: Machine


class Fleet:
    """The running machines; `stop` is what a reload does between two steps."""

    def __init__(self, loaded: LoadedPlant) -> None:
        self.devices = {m.id: FakeDevice(m) for m in loaded.plant.machines}

    def assets(self) -> list[str]:
        return list(self.devices)

    def device(self, asset: str) -> FakeDevice:
        return self.devices[asset]


class Sink:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str | None, str]] = []

    def emit(self, topic: str, asset: str | None, stream: str,
             records: list[dict[str, Any]]) -> None:
        self.emitted.append((topic, asset, stream))


class Kpi:
    """`tick` as at a `publish_every`: one record per machine."""

    def __init__(self, assets: list[str]) -> None:
        self.assets = assets

    async def tick_in_steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(a, {"availability": 1.0}) for a in self.assets]


def watch(sink: Sink, fleet: Fleet, seen: list[int], done: asyncio.Event) -> None:
    """A device's poll, ready at every turn of the loop (a callback that schedules itself
    again): notes how many records were out each time it ran, and stops one machine the
    first time it runs in the middle of the round (a reload). `done`: every record is out."""
    seen.append(len(sink.emitted))
    if sink.emitted and "m30" in fleet.devices:
        del fleet.devices["m30"]
    if len(sink.emitted) < MACHINES - 1:
        asyncio.get_running_loop().call_soon(watch, sink, fleet, seen, done)
    else:
        done.set()


async def test_oee_records_let_polls_in_and_skip_a_stopped_machine() -> None:
    loaded = plant()
    fleet, sink, seen = Fleet(loaded), Sink(), list[int]()
    pub = OeePublisher(cast(KpiService, Kpi(fleet.assets())), cast(FleetView, fleet),
                       cast(RecordSink, sink), lambda: loaded)
    done = asyncio.Event()
    asyncio.get_running_loop().call_soon(watch, sink, fleet, seen, done)  # before the round
    await pub.publish_due()
    await asyncio.wait_for(done.wait(), 5)
    assert any(0 < n < MACHINES - 1 for n in seen), f"no poll during the round: {seen}"
    assets = [a for _, a, _ in sink.emitted]
    assert "m30" not in assets and len(assets) == MACHINES - 1
    assert all(s == "oee" and t.endswith(f"/{a}/oee") for t, a, s in sink.emitted)


class Offers:
    """`CapacityRecords.record` for any running machine."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def record(self, asset: str) -> dict[str, Any]:
        self.fleet.device(asset)
        return {"asset": asset, "freshness": {"last_sample": None}, "free_slots": [],
                "at": datetime.now().isoformat()}


async def test_capacity_round_lets_polls_in_and_skips_a_stopped_machine() -> None:
    loaded = plant()
    fleet, sink, seen = Fleet(loaded), Sink(), list[int]()
    pub = CapacityPublisher(cast(CapacityRecords, Offers(fleet)), cast(FleetView, fleet),
                            cast(RecordSink, sink), lambda: loaded, structlog.get_logger())
    done = asyncio.Event()
    asyncio.get_running_loop().call_soon(watch, sink, fleet, seen, done)  # before the round
    rounds = asyncio.create_task(pub.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        rounds.cancel()
    assert any(0 < n < MACHINES - 1 for n in seen), f"no poll during the round: {seen}"
    assets = [a for _, a, _ in sink.emitted]
    assert "m30" not in assets and len(assets) == MACHINES - 1
    assert {s for _, _, s in sink.emitted} == {"capacity"}


def test_capacity_planned_time_is_computed_once_per_calendar_and_span() -> None:
    loaded = plant()
    records = CapacityRecords(lambda: loaded, cast(FleetView, Fleet(loaded)),
                              cast(KpiService, None), cast(BookingsFiles, None))
    cal, now, horizon = loaded.plant.shifts, datetime(2026, 3, 2, 8, tzinfo=UTC), timedelta(days=14)
    first = records.planned(cal, now, horizon)
    assert records.planned(cal, now + PLANNED_REUSE / 2, horizon) is first  # the next round
    assert records.planned(cal, now + PLANNED_REUSE * 2, horizon) is not first  # time moved on
    again = records.planned(cal, now + PLANNED_REUSE * 2, horizon)
    reloaded = plant().plant.shifts  # a reload: an equal calendar, a new object
    assert records.planned(reloaded, now + PLANNED_REUSE * 2, horizon) is not again
    assert first == planned_intervals(cal, now, now + horizon + PLANNED_REUSE)
