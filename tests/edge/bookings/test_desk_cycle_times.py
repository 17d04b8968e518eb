"""The bookings desk sizes a `quantity` request by the machine's ideal cycle time in wall
seconds: a simulated machine at `time_scale: 20` makes 120 parts of a 30 s program in 3 min."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from edge.bookings.desk import BookingDesk, PlantHolds
from edge.bookings.store import BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import LoadedPlant, parse_plant
from models.plant import Platform

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # the 24/7 calendar: all time is planned


def desk_at_now(loaded: LoadedPlant, store: BookingStore) -> BookingDesk:
    """A desk over `loaded` at NOW: no bookings file, nothing running."""
    return BookingDesk(lambda: loaded, store,
                       PlantHolds(lambda: loaded, BookingsFiles(structlog.get_logger())),
                       lambda machine, now: None, lambda: None, clock=lambda: NOW)


def test_quantity_takes_parts_times_the_wall_clock_cycle(tmp_path: Path) -> None:
    loaded = parse_plant("""\
gateway: {id: gw-1, site: plant-a}
machines:
  - id: real
    area: a
    line: l
    adapter: modbus
    programs: {O1000: {ideal_cycle_time: 30}}
    connection: {host: 127.0.0.1}
    points: [{name: part_count, register: holding, address: 10, data_type: uint32}]
  - id: sim
    area: a
    line: l
    adapter: modbus
    simulate: true
    simulator: {seed: 1, time_scale: 20}
    programs: {O1000: {ideal_cycle_time: 30}}
    connection: {host: 127.0.0.1, port: 5021}
    points: [{name: part_count, register: holding, address: 10, data_type: uint32}]
""", str(tmp_path / "plant.yaml"))
    platform = Platform(id="buyer", public_key_file="buyer.pem")
    with BookingStore(tmp_path / "bookings.sqlite3", durable=False) as store:
        desk = desk_at_now(loaded, store)

        def booked(asset: str) -> timedelta:
            result = asyncio.run(desk.reserve(
                platform, {"asset": asset, "reference": f"po-{asset}", "program": "O1000",
                           "quantity": 120, "earliest_start": NOW.isoformat()}))
            assert result["state"] == "accepted", result
            return (datetime.fromisoformat(result["end"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(result["start"].replace("Z", "+00:00")))

        assert booked("real") == timedelta(hours=1)  # 120 x 30 s
        assert booked("sim") == timedelta(minutes=3)  # 120 x 30 s / 20


def test_an_energy_meter_is_not_bookable(tmp_path: Path) -> None:
    """A meter (`meter_for`) makes no parts and is offered to no platform, so a request for
    it is refused as for a machine the gateway does not have, never accepted."""
    loaded = parse_plant("""\
gateway: {id: gw-1, site: plant-a}
machines:
  - id: mill
    area: a
    line: l
    adapter: modbus
    programs: {O1000: {ideal_cycle_time: 30}}
    connection: {host: 127.0.0.1}
    points: [{name: part_count, register: holding, address: 10, data_type: uint32}]
  - id: mill-meter
    area: a
    line: l
    adapter: modbus
    meter_for: mill
    connection: {host: 127.0.0.1, port: 5021}
    energy: {energy_kwh: kwh}
    points: [{name: kwh, register: input, address: 0x48, data_type: float32}]
""", str(tmp_path / "plant.yaml"))
    platform = Platform(id="buyer", public_key_file="buyer.pem")
    with BookingStore(tmp_path / "bookings.sqlite3", durable=False) as store:
        desk = desk_at_now(loaded, store)
        ask = {"reference": "po-1", "program": "O1000", "quantity": 1,
               "earliest_start": NOW.isoformat()}
        with pytest.raises(KeyError, match="unknown machine 'mill-meter'"):
            asyncio.run(desk.reserve(platform, {"asset": "mill-meter", **ask}))
        assert asyncio.run(desk.reserve(platform, {"asset": "mill", **ask}))["state"] == "accepted"
