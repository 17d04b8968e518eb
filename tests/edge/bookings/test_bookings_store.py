"""The bookings store on a real SQLite file: one decision per slot even from two connections
at once (as the gateway and `edge-gateway bookings` are), records kept until published,
closings, a person's decisions, and release rules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.bookings.store import BookingStore, Refused
from models.booking import Candidate, parse_reserve
from models.plant import BookingRules, ShiftCalendar

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
CAL = ShiftCalendar()  # no shifts: 24/7


def window(h0: int, h1: int, **extra: Any) -> Any:
    return parse_reserve(
        {
            "asset": "m1",
            "start": (NOW + timedelta(hours=h0)).isoformat(),
            "end": (NOW + timedelta(hours=h1)).isoformat(),
            **extra,
        }
    )


def reserve(store: BookingStore, platform: str, req: Any, rules: BookingRules | None = None) -> Any:
    return store.reserve(
        platform, req, [Candidate("m1")], calendar=CAL, rules=rules or BookingRules(), now=NOW
    )


def test_two_connections_asking_for_one_slot_at_once_get_one_acceptance(tmp_path: Path) -> None:
    path = tmp_path / "bookings.sqlite3"
    stores = [BookingStore(path, durable=False) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def ask(i: int) -> None:
        start.wait()
        results[i] = reserve(stores[i], f"p{i}", window(1, 3, reference=f"r{i}"))[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    states = sorted(r.state for r in results)
    assert states == ["accepted", "declined"]
    winner = next(r for r in results if r.state == "accepted")
    loser = next(r for r in results if r.state == "declined")
    assert f"overlaps accepted booking {winner.id}" in loser.reason
    for s in stores:
        s.close()


def test_same_reference_returns_the_open_booking(tmp_path: Path) -> None:
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        first, new = reserve(store, "p", window(1, 2, reference="po-1"))
        again, new2 = reserve(store, "p", window(5, 6, reference="po-1"))
        assert (new, new2, again.id) == (True, False, first.id)
        other, _ = reserve(store, "q", window(5, 6, reference="po-1"))  # another platform's
        assert other.id != first.id and other.state == "accepted"


def test_records_wait_until_published_across_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    store = BookingStore(path)
    row, _ = reserve(store, "p", window(1, 2, reference="po-1"))
    store._conn.close()  # type: ignore[union-attr]  # as SIGKILL would: no clean close
    store._conn = None
    with BookingStore(path) as again:
        pending = again.unpublished()
        assert [(r["booking"], r["state"]) for _, _, r in pending] == [
            (row.id, "requested"),
            (row.id, "accepted"),
        ]
        again.mark_published(seq for seq, _, _ in pending)
        assert again.unpublished() == []
        assert again.get(row.id) == row


def test_expire_and_complete(tmp_path: Path) -> None:
    rules = BookingRules(max_duration_minutes=30)
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        done, _ = reserve(store, "p", window(1, 2, reference="a"))
        waits, _ = reserve(store, "p", window(3, 5, reference="b"), rules)
        assert (done.state, waits.state) == ("accepted", "requested")
        windows: list[tuple[str, datetime, datetime]] = []

        def oee(asset: str, a: datetime, b: datetime) -> dict[str, Any]:
            windows.append((asset, a, b))
            return {"oee": 0.7}

        assert store.close_due(NOW + timedelta(minutes=30), expire_after=3600, oee=oee) == []
        closed = store.close_due(NOW + timedelta(hours=2), expire_after=3600, oee=oee)
        assert sorted((r.id, r.state) for r in closed) == sorted(
            [(done.id, "completed"), (waits.id, "expired")]
        )
        assert windows == [("m1", done.start, done.end)]
        completed = [r for _, _, r in store.unpublished() if r["state"] == "completed"]
        assert completed[0]["oee"] == {"oee": 0.7}


def test_a_person_decides_and_the_hard_limits_still_hold(tmp_path: Path) -> None:
    rules = BookingRules(auto_accept=False)
    path = tmp_path / "b.sqlite3"
    with BookingStore(path, durable=False) as store, BookingStore(path, durable=False) as cli:
        a, _ = reserve(store, "p", window(1, 3, reference="a"), rules)
        b, _ = reserve(store, "q", window(2, 4, reference="b"), rules)
        version = store.changed()
        ok = cli.operator_decide(
            a.id, accept=True, reason=None, busy=lambda m: [], calendar=CAL, now=NOW
        )
        assert ok.state == "accepted"
        assert store.changed() != version  # the gateway notices the other process's commit
        with pytest.raises(Refused, match=f"overlaps accepted booking {a.id}"):
            cli.operator_decide(
                b.id, accept=True, reason=None, busy=lambda m: [], calendar=CAL, now=NOW
            )
        assert cli.get(b.id).state == "requested"  # type: ignore[union-attr]
        no = cli.operator_decide(
            b.id, accept=False, reason="full", busy=lambda m: [], calendar=CAL, now=NOW
        )
        assert (no.state, no.reason) == ("declined", "full")
        with pytest.raises(Refused, match="is declined, not waiting"):
            cli.operator_decide(
                b.id, accept=False, reason=None, busy=lambda m: [], calendar=CAL, now=NOW
            )
        with pytest.raises(KeyError):
            cli.operator_decide(
                "b-nope", accept=True, reason=None, busy=lambda m: [], calendar=CAL, now=NOW
            )


def test_release_only_own_and_open(tmp_path: Path) -> None:
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        row, _ = reserve(store, "p", window(1, 2, reference="a"))
        with pytest.raises(KeyError):
            store.release("q", row.id, NOW)
        assert store.release("p", row.id, NOW).state == "released"
        with pytest.raises(Refused, match="is released"):
            store.release("p", row.id, NOW)
        # the slot is free again
        assert reserve(store, "q", window(1, 2, reference="b"))[0].state == "accepted"
