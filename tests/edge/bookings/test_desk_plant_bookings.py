"""Issue 18, item 3: "the local bookings file keeps working for plants that plan by hand".
Time the plant sold by hand (the YAML's `bookings` and a `bookings_file`) is never given to a
platform: a `reserve` over it is declined naming it, and a line added to the file counts
from the next request on, with no reload (the desk reads the file at every decision)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from edge.bookings.desk import BookingDesk, PlantHolds
from edge.bookings.store import BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import parse_plant
from models.plant import Platform

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # no shifts: all time is planned
PLANT = """\
gateway: {id: gw-1, site: plant-a}
machines:
  - id: m1
    area: a
    line: l
    adapter: modbus
    bookings: [{start: "2026-12-07T10:00:00Z", end: "2026-12-07T11:00:00Z", reference: job-7}]
    bookings_file: by-hand.yaml
    connection: {host: 127.0.0.1}
    points: [{name: part_count, register: holding, address: 10, data_type: uint32}]
"""


def test_a_platform_never_gets_time_the_plant_booked_by_hand(tmp_path: Path) -> None:
    by_hand = tmp_path / "by-hand.yaml"
    by_hand.write_text('- {start: "2026-12-07T12:00:00Z", end: "2026-12-07T13:00:00Z",'
                       ' reference: "phoned in"}\n')
    (tmp_path / "plant.yaml").write_text(PLANT)
    loaded = parse_plant(PLANT, str(tmp_path / "plant.yaml"))
    platform = Platform(id="buyer", public_key_file="buyer.pem")
    with BookingStore(tmp_path / "bookings.sqlite3", durable=False) as store:
        desk = BookingDesk(lambda: loaded, store,
                           PlantHolds(lambda: loaded, BookingsFiles(structlog.get_logger())),
                           lambda machine, now: None, lambda: None, clock=lambda: NOW)

        def reserve(reference: str, start: str, end: str) -> dict[str, Any]:
            return asyncio.run(desk.reserve(platform, {
                "asset": "m1", "reference": reference,
                "start": f"2026-12-07T{start}:00Z", "end": f"2026-12-07T{end}:00Z"}))

        yaml_clash = reserve("po-1", "10:30", "11:30")
        assert yaml_clash["state"] == "declined", yaml_clash
        assert "overlaps plant booking job-7" in yaml_clash["reason"], yaml_clash
        file_clash = reserve("po-2", "12:30", "12:45")
        assert file_clash["state"] == "declined", file_clash
        assert "overlaps plant booking phoned in" in file_clash["reason"], file_clash
        assert reserve("po-3", "14:00", "15:00")["state"] == "accepted"

        with by_hand.open("a") as f:  # the planner adds a job; no reload
            f.write('- {start: "2026-12-07T16:00:00Z", end: "2026-12-07T17:00:00Z",'
                    ' reference: "late add"}\n')
        added = reserve("po-4", "16:30", "17:30")
        assert added["state"] == "declined" and "late add" in added["reason"], added
