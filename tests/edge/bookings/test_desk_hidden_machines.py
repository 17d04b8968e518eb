"""A platform's bookings on a machine the destination it asks through hides are answered
there as bookings it does not have (edge/bookings/desk.py, `seen` from edge/query/policy.py
`DestinationPolicy.sees`): nothing in the answer may reveal that the machine exists.

Why: the platform booked it through a destination that shows the machine; a second
destination (perhaps read by others) must not learn of it from `release`, `reserve` or
`bookings`, and `bookings` must still fill a page of `limit` rows it may see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge.bookings.desk import BookingDesk, PlantHolds
from edge.bookings.store import BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import parse_plant
from models.plant import Platform

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
PLANT = """\
gateway: {id: gw-1, site: plant-a}
machines:
""" + "".join(f"""\
  - id: {m}
    area: a
    line: l
    adapter: modbus
    capabilities: {{processes: [milling]}}
    connection: {{host: 127.0.0.1}}
    points: [{{name: part_count, register: holding, address: 10, data_type: uint32}}]
""" for m in ("m1", "m2"))
P = Platform(id="buyer", public_key_file="buyer.pem")


def hides_m2(machine: str) -> bool:
    """`DestinationPolicy.sees` of a destination with `machines: {deny: [m2]}`."""
    return machine != "m2"


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[BookingDesk]:
    loaded = parse_plant(PLANT, str(tmp_path / "plant.yaml"))
    ticks = (NOW + timedelta(seconds=s) for s in itertools.count())  # each booking newer
    with BookingStore(tmp_path / "bookings.sqlite3", durable=False) as store:
        yield BookingDesk(lambda: loaded, store,
                          PlantHolds(lambda: loaded, BookingsFiles(structlog.get_logger())),
                          lambda machine, now: None, lambda: None, clock=lambda: next(ticks))


def book(desk: BookingDesk, asset: str, reference: str, hour: int) -> dict[str, Any]:
    start = NOW + timedelta(hours=hour)
    return asyncio.run(desk.reserve(P, {
        "asset": asset, "reference": reference, "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat()}))


def refusal(call: Any) -> str:
    with pytest.raises(KeyError) as refused:
        asyncio.run(call)
    return str(refused.value.args[0])


def test_release_of_a_booking_on_a_hidden_machine_is_refused_as_an_unknown_one(
    desk: BookingDesk,
) -> None:
    hidden = book(desk, "m2", "po-2", 2)  # through a destination that shows m2
    by_id = refusal(desk.release(P, {"booking": hidden["booking"]}, hides_m2))
    assert by_id == refusal(desk.release(P, {"booking": "b-0000"}, hides_m2)).replace(
        "b-0000", hidden["booking"])
    by_ref = refusal(desk.release(P, {"reference": "po-2"}, hides_m2))
    assert by_ref == refusal(desk.release(P, {"reference": "po-x"}, hides_m2)).replace(
        "po-x", "po-2")
    assert "m2" not in by_id + by_ref
    # where m2 is shown, it is the platform's to release
    assert asyncio.run(desk.release(P, {"reference": "po-2"}))["state"] == "released"


def test_asking_again_with_the_reference_of_a_hidden_booking_is_refused_unnamed(
    desk: BookingDesk,
) -> None:
    """Neither the machine is named nor a second booking made under one reference: a
    platform retrying through another destination must not double-book."""
    hidden = book(desk, "m2", "po-2", 2)
    start = NOW + timedelta(hours=4)
    params = {"asset": "m1", "reference": "po-2", "start": start.isoformat(),
              "end": (start + timedelta(minutes=30)).isoformat()}
    with pytest.raises(ValueError, match="already used by another open booking") as refused:
        asyncio.run(desk.reserve(P, params, seen=hides_m2))
    assert "m2" not in str(refused.value) and hidden["booking"] not in str(refused.value)
    assert [b["booking"] for b in desk.list(P, {"reference": "po-2"})["bookings"]] == [
        hidden["booking"]]
    # where m2 is shown, asking again returns the open one, as before
    assert asyncio.run(desk.reserve(P, params))["booking"] == hidden["booking"]


def test_a_page_of_bookings_holds_limit_rows_it_may_see(desk: BookingDesk) -> None:
    older = [book(desk, "m1", f"po-1{i}", 2 + i)["booking"] for i in range(3)]
    for i in range(3):  # the newest ones, on m2
        book(desk, "m2", f"po-2{i}", 6 + i)
    page = desk.list(P, {"limit": 2}, hides_m2)["bookings"]
    assert [b["booking"] for b in page] == older[:0:-1]  # the two newest on m1
    assert len(desk.list(P, {"limit": 2})["bookings"]) == 2
    assert {b["machine"] for b in desk.list(P, {}, hides_m2)["bookings"]} == {"m1"}
