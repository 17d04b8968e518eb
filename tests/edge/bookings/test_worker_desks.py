"""The bookings board over every worker's store (`run --workers N`): the parent's page lists
the bookings of all of them, a decision lands in the store holding the booking, and a
worker's store that does not exist yet (the worker has not started) is simply not there
until it does, on real SQLite files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from e2e import plant_yaml

from edge.bookings.board import BookingBoard, WorkerDesks
from edge.bookings.desk import OperatorDesk, PlantHolds
from edge.bookings.store import FILENAME, BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import parse_plant
from models.booking import Candidate, parse_reserve
from models.plant import BookingRules, ShiftCalendar


def _request(path: Path, machine: str, reference: str) -> str:
    now = datetime.now(UTC)
    with BookingStore(path) as store:
        req = parse_reserve({"asset": machine, "reference": reference,
                             "start": (now + timedelta(hours=2)).isoformat(),
                             "end": (now + timedelta(hours=3)).isoformat()})
        row, _ = store.reserve("p1", req, [Candidate(machine)], calendar=ShiftCalendar(),
                               rules=BookingRules(auto_accept=False), now=now)
    return row.id


def test_the_board_spans_the_workers_stores(tmp_path: Path) -> None:
    loaded = parse_plant(plant_yaml(tmp_path / "state", [5020, 5021], 1883),
                         str(tmp_path / "plant.yaml"))
    log = structlog.get_logger()
    holds = PlantHolds(lambda: loaded, BookingsFiles(log))
    paths = [tmp_path / f"worker-{i}" / FILENAME for i in (0, 1)]
    desks = WorkerDesks(paths, lambda store: OperatorDesk(lambda: loaded, store, holds), log)
    board = BookingBoard(desks, lambda: None, log)
    try:
        assert board.view().waiting == []  # no worker has a store yet: nothing, no error
        paths[1].parent.mkdir()
        second = _request(paths[1], "m2", "po-2")
        assert [r.id for r in board.view().waiting] == [second]
        paths[0].parent.mkdir()
        first = _request(paths[0], "m1", "po-1")
        assert {r.id for r in board.view().waiting} == {first, second}
        row = asyncio.run(board.decide(second, accept=False, reason="no tooling", via="test"))
        assert (row.id, row.state) == (second, "declined")
        with BookingStore(paths[1]) as store:  # written where the booking lives
            stored = store.get(second)
            assert stored is not None and stored.reason == "no tooling"
        view = board.view()
        assert [r.id for r in view.waiting] == [first]
        assert [r.id for r in view.recent] == [second]
    finally:
        desks.close()
