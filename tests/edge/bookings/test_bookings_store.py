"""The bookings store on a real SQLite file: one decision per slot even from two connections
at once (as the gateway and `edge-gateway bookings` are), records kept until published,
closings, holds of waiting requests, a person's decisions, commitments instead of other
platforms' references, and release rules."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.bookings.store import BookingStore, Evidence, Refused
from edge.platform_kit.verifier import booking_commitment
from models.booking import Candidate, Usage, parse_reserve
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


def race(path: Path, rules: BookingRules | None = None) -> dict[str, Any]:
    """Two platforms, each on its own connection to one file (as the gateway and
    `edge-gateway bookings` are), asking for the same slot at the same moment: the
    bookings by state."""
    stores = [BookingStore(path, durable=False) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def ask(i: int) -> None:
        start.wait()
        results[i] = reserve(stores[i], f"p{i}", window(1, 3, reference=f"r{i}"), rules)[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for s in stores:
            s.close()
    return {r.state: r for r in results}


def test_two_connections_asking_for_one_slot_at_once_get_one_acceptance(tmp_path: Path) -> None:
    got = race(tmp_path / "bookings.sqlite3")
    assert sorted(got) == ["accepted", "declined"]
    assert f"overlaps accepted booking {got['accepted'].id}" in got["declined"].reason


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


def evidence_of(
    windows: list[tuple[str, datetime, datetime]], ready: bool = True
) -> Callable[[str, datetime, datetime, datetime], Evidence | None]:
    def evidence(asset: str, a: datetime, b: datetime, now: datetime) -> Evidence | None:
        windows.append((asset, a, b))
        return Evidence({"oee": 0.7}, {"records": 2}) if ready else None

    return evidence


def test_expire_and_complete(tmp_path: Path) -> None:
    rules = BookingRules(max_duration_minutes=30, hold_minutes=90)
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        done, _ = reserve(store, "p", window(1, 2, reference="a"))
        waits, _ = reserve(store, "p", window(3, 5, reference="b"), rules)
        assert (done.state, waits.state) == ("accepted", "requested")
        assert waits.result()["hold_until"] == "2026-12-07T06:30:00.000Z"  # now + 90 min
        windows: list[tuple[str, datetime, datetime]] = []
        assert store.close_due(NOW + timedelta(minutes=30), evidence=evidence_of(windows)) == []
        # the window ended, but its parts are not settled yet: stays accepted
        later = NOW + timedelta(hours=2)
        closed = store.close_due(later, evidence=evidence_of(windows, ready=False))
        assert [(r.id, r.state) for r in closed] == [(waits.id, "expired")]
        assert store.get(done.id).state == "accepted"  # type: ignore[union-attr]
        closed = store.close_due(later, evidence=evidence_of(windows))
        assert [(r.id, r.state) for r in closed] == [(done.id, "completed")]
        assert windows == [("m1", done.start, done.end)] * 2
        completed = [r for _, _, r in store.unpublished() if r["state"] == "completed"]
        assert completed[0]["oee"] == {"oee": 0.7} and completed[0]["parts"] == {"records": 2}
        expired = [r for _, _, r in store.unpublished() if r["state"] == "expired"]
        assert expired[0]["at"] == "2026-12-07T07:00:00.000Z"


def test_a_waiting_request_holds_its_slot_until_its_hold_ends(tmp_path: Path) -> None:
    rules = BookingRules(auto_accept=False, hold_minutes=30)
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        held, _ = reserve(store, "p", window(2, 4, reference="a"), rules)
        assert held.state == "requested" and store.holding("m1", NOW) == [
            ((held.start, held.end), f"booking {held.id} held for a decision until "
             "2026-12-07T05:30:00.000Z")
        ]
        # a second platform, even one the rules would accept at once, does not overtake it
        late, _ = reserve(store, "q", window(3, 5, reference="b"))
        assert late.state == "declined"
        assert f"overlaps booking {held.id} held for a decision until" in (late.reason or "")
        # after the hold, the first request has expired (signed) and the slot is free
        after = NOW + timedelta(minutes=31)
        again, _ = store.reserve(
            "q", window(3, 5, reference="c"), [Candidate("m1")], calendar=CAL,
            rules=BookingRules(), now=after,
        )
        assert again.state == "accepted"
        assert store.get(held.id).state == "expired"  # type: ignore[union-attr]
        states = [(r["booking"], r["state"]) for _, _, r in store.unpublished()]
        expired_at = states.index((held.id, "expired"))
        assert expired_at < states.index((again.id, "requested"))  # in the order of time
        with pytest.raises(Refused, match="is expired"):
            store.operator_decide(
                held.id, accept=True, reason=None, busy=lambda m: [], calendar=CAL, now=after
            )


def test_a_hold_never_outlasts_the_start(tmp_path: Path) -> None:
    rules = BookingRules(auto_accept=False, hold_minutes=600)
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        row, _ = reserve(store, "p", window(1, 2, reference="a"), rules)
        assert row.expires == row.start
        requested = [r for _, _, r in store.unpublished() if r["state"] == "requested"]
        assert requested[0]["hold_until"] == "2026-12-07T06:00:00.000Z"


def test_two_waiting_requests_for_one_slot_at_once_one_holds(tmp_path: Path) -> None:
    got = race(tmp_path / "bookings.sqlite3", BookingRules(auto_accept=False))
    assert sorted(got) == ["declined", "requested"]
    assert f"overlaps booking {got['requested'].id} held for a decision" in got["declined"].reason


def test_a_person_decides_and_the_hard_limits_still_hold(tmp_path: Path) -> None:
    rules = BookingRules(auto_accept=False)
    path = tmp_path / "b.sqlite3"
    with BookingStore(path, durable=False) as store, BookingStore(path, durable=False) as cli:
        a, _ = reserve(store, "p", window(1, 3, reference="a"), rules)
        b, _ = reserve(store, "q", window(4, 6, reference="b"), rules)
        version = store.changed()
        ok = cli.operator_decide(
            a.id, accept=True, reason=None, busy=lambda m: [], calendar=CAL, now=NOW
        )
        assert ok.state == "accepted"
        assert store.changed() != version  # the gateway notices the other process's commit
        # maintenance entered in the YAML since the request: accepting is refused
        maintenance = [((NOW + timedelta(hours=5), NOW + timedelta(hours=7)), "maintenance")]
        with pytest.raises(Refused, match="overlaps maintenance"):
            cli.operator_decide(
                b.id, accept=True, reason=None, busy=lambda m: maintenance, calendar=CAL, now=NOW
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


def test_the_streams_show_a_commitment_only_the_owner_can_open(tmp_path: Path) -> None:
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        hidden, _ = reserve(store, "p", window(1, 2, reference="PO-4711"))
        shown, _ = store.reserve(
            "erp", window(3, 4, reference="WO-1"), [Candidate("m1")], calendar=CAL,
            rules=BookingRules(), now=NOW, disclosed=True,
        )
        records = {(r["booking"], r["state"]): r for _, _, r in store.unpublished()}
        rec = records[(hidden.id, "accepted")]
        assert (rec["platform"], rec["reference"]) == (None, None)
        assert "PO-4711" not in json.dumps(list(records.values()))
        mine = hidden.result()  # the platform's own reply carries the salt
        assert rec["commitment"] == mine["commitment"] == booking_commitment(
            hidden.id, "p", "PO-4711", mine["salt"]
        )
        assert rec["commitment"] != booking_commitment(hidden.id, "q", "PO-4711", mine["salt"])
        assert len(mine["salt"]) >= 22 and mine["salt"] != shown.salt  # 16 bytes, per booking
        open_rec = records[(shown.id, "accepted")]
        assert (open_rec["platform"], open_rec["reference"]) == ("erp", "WO-1")
        assert open_rec["commitment"] == shown.commitment
        # a part made inside the window names the booking the same way
        assert store.covering("m1", NOW + timedelta(hours=1, minutes=5)) == hidden
        assert store.covering("m1", NOW + timedelta(hours=2)) is None  # the end is outside
        assert hidden.link() == {"id": hidden.id, "platform": None, "reference": None,
                                 "commitment": rec["commitment"]}


def test_a_file_from_before_commitments_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    start, end = (NOW + timedelta(hours=1)).timestamp(), (NOW + timedelta(hours=2)).timestamp()
    old.execute(
        "INSERT INTO bookings VALUES ('b-old', 'p', 'r', 'm1', ?, ?, 'requested', '{}', NULL, "
        "'[]', 0, 0)", (int(start * 1e6), int(end * 1e6)))
    old.commit()
    old.close()
    with BookingStore(path, durable=False) as store:
        row = store.get("b-old")
        assert row is not None and row.salt and not row.disclosed and row.expires == row.start


OLD_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('format', '1');
CREATE TABLE bookings(
    id TEXT PRIMARY KEY, platform TEXT NOT NULL, reference TEXT NOT NULL,
    machine TEXT NOT NULL, start INTEGER, end INTEGER, state TEXT NOT NULL,
    request TEXT NOT NULL, reason TEXT, waits_for TEXT NOT NULL,
    created INTEGER NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
"""


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


def test_propose_decides_as_reserve_commits_nothing_and_counts_other_stores(
    tmp_path: Path,
) -> None:
    """`run --workers N`: a worker's proposal is the decision `reserve` would take, with
    the platform's bookings in the other workers' stores counted against its quota."""
    rules = BookingRules.model_validate({"quota": {"max_bookings": 1}})
    with BookingStore(tmp_path / "b.sqlite3", durable=False) as store:
        req = window(1, 2, reference="po-1")
        alone, _ = store.reserve("p", req, [Candidate("m1")], calendar=CAL, rules=rules,
                                 now=NOW, commit=False)
        assert (alone.state, alone.machine) == ("accepted", "m1")
        assert store.bookings() == []  # nothing committed
        full, _ = store.reserve("p", req, [Candidate("m1")], calendar=CAL, rules=rules,
                                now=NOW, elsewhere=Usage(1.0, 1), commit=False)
        assert full.state == "requested" and any("quota" in w for w in full.waits_for)
        row, _ = store.reserve("p", req, [Candidate("m1")], calendar=CAL, rules=rules,
                               now=NOW, elsewhere=Usage(1.0, 1))
        assert (row.state, row.waits_for) == ("requested", list(full.waits_for))
        assert store.usage("p", NOW) == Usage(1.0, 1)
