"""The bookings store's decisions committed on the store writer thread (issue 17, item 2).

Why: the gateway's decisions moved off the event loop, and what must not move with them is
what a platform relies on: an acceptance it is told about is committed first (here: read
back by another connection, as a restarted process would, the moment `write` returns), two
platforms asking for one slot at the same moment get one acceptance and one refusal, the
first queued accepted (the check and the insert in one transaction on one thread), and a
refusal batched with another decision undoes only itself. A store that fails answers with
the store's own error. Real SQLite files, a real writer thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.bookings.store import (
    BookingStore,
    BookingStoreError,
    OperatorDecision,
    Refused,
    Release,
    Reserve,
)
from edge.storage.writer import WriterThread
from models.booking import Candidate, parse_reserve
from models.plant import BookingRules, ShiftCalendar

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


def ask(platform: str, reference: str, h0: int = 1, h1: int = 3) -> Reserve:
    req = parse_reserve({"asset": "m1", "reference": reference,
                         "start": (NOW + timedelta(hours=h0)).isoformat(),
                         "end": (NOW + timedelta(hours=h1)).isoformat()})
    return Reserve(platform, req, [Candidate("m1")], ShiftCalendar(), BookingRules(), NOW)


def committed(path: Path) -> dict[str, str]:
    """booking id -> state, read by a connection of its own."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        return {str(i): str(s) for i, s in conn.execute("SELECT id, state FROM bookings")}
    finally:
        conn.close()


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    writes = WriterThread(name="store-writer", linger=0.005)
    s = BookingStore(tmp_path / "bookings.sqlite3", writes=writes)
    yield s
    await writes.close()
    s.close()


async def test_a_decision_is_committed_when_write_returns(store: BookingStore) -> None:
    row, new = await store.decide(ask("p1", "po-1"))
    assert new and row.state == "accepted"
    assert committed(store.path) == {row.id: "accepted"}, "answered before it was committed"
    released = await store.withdraw(Release("p1", row.id, NOW))
    assert released.state == "released"
    assert committed(store.path) == {row.id: "released"}


async def test_two_platforms_racing_for_one_slot_first_queued_wins(store: BookingStore) -> None:
    for round_ in range(5):  # the same outcome every time: the order they were queued
        first, second = await asyncio.gather(
            store.decide(ask("p1", f"a-{round_}", 10 * round_ + 1, 10 * round_ + 3)),
            store.decide(ask("p2", f"b-{round_}", 10 * round_ + 2, 10 * round_ + 4)))
        assert (first[0].state, second[0].state) == ("accepted", "declined")
        assert f"overlaps accepted booking {first[0].id}" in (second[0].reason or "")
    stats = store._writer.stats if store._writer is not None else None
    assert stats is not None and stats.commits < stats.ops, "decisions shared transactions"


async def test_a_refusal_batched_with_a_decision_undoes_only_itself(store: BookingStore
                                                                   ) -> None:
    row, _ = await store.decide(ask("p1", "po-1"))
    other = await store.withdraw(Release("p1", row.id, NOW))
    results = await asyncio.gather(
        store.withdraw(Release("p1", "b-unknown", NOW)),
        store.decide(ask("p2", "po-2")),
        store.withdraw(Release("p1", other.id, NOW)),
        return_exceptions=True)
    assert isinstance(results[0], KeyError)
    assert isinstance(results[2], Refused) and "nothing to release" in str(results[2])
    decided = results[1]
    assert isinstance(decided, tuple) and decided[0].state == "accepted"
    assert committed(store.path)[decided[0].id] == "accepted"


async def test_an_operators_decision_is_committed_on_the_thread(store: BookingStore) -> None:
    waiting = Reserve("p1", ask("p1", "po-1").req, [Candidate("m1")], ShiftCalendar(),
                      BookingRules(auto_accept=False), NOW)
    row, _ = await store.decide(waiting)
    assert row.state == "requested"
    taken = (((NOW + timedelta(hours=2), NOW + timedelta(hours=4)), "maintenance"),)
    with pytest.raises(Refused, match="maintenance"):  # the limits checked in the transaction
        await store.withdraw(OperatorDecision(row.id, True, None, taken, ShiftCalendar(), NOW))
    assert committed(store.path) == {row.id: "requested"}
    accepted = await store.withdraw(OperatorDecision(row.id, True, "ok", (), ShiftCalendar(),
                                                     NOW))
    assert accepted.state == "accepted"
    assert committed(store.path) == {row.id: "accepted"}


async def test_a_failing_store_answers_with_its_own_error(store: BookingStore) -> None:
    await store.decide(ask("p1", "po-1"))
    conn, store._conn = store._conn, None  # the write connection gone: every write fails
    try:
        with pytest.raises(BookingStoreError, match="closed"):
            await store.decide(ask("p2", "po-2", 5, 6))
    finally:
        store._conn = conn
