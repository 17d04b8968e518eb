"""Bookings on disk: every reservation, its state, and each state change's record until it is
signed, in SQLite (WAL) in the state directory (`bookings.sqlite3`).

Why SQLite, and why here: a decision must be made once, in one place, even when the running
gateway and `edge-gateway bookings accept` (another process) decide at the same moment. Each
decision runs inside one `BEGIN IMMEDIATE` transaction that reads the accepted bookings,
calls the pure rules (`models.booking.decide`/`recheck`) and writes the result, so two
requests for the same slot are serialised: the first commits its acceptance, the second
reads it and is declined with the reason. A committed acceptance survives SIGKILL (and,
because the store is opened `durable`, a power cut): the gateway commits before it replies.

The signed record of a state change is not written here (signing and chaining belong to the
egress): each change appends a row to `events` with `published = 0`, in the same
transaction as the state. The gateway hands unpublished rows to the egress (whose outbox
commits them signed) and then marks them published (`edge/bookings/publisher.py`). A crash
between the two republishes that record after the restart, never loses it; a platform may
see a record twice (same `booking`, `state` and `at`), never miss one.

File format, version 1; times are integer microseconds since the Unix epoch (UTC)::

    meta(key TEXT PRIMARY KEY, value TEXT)        'format' -> '1', 'created'
    bookings(id TEXT PRIMARY KEY, platform, reference, machine, start, end, state,
             request TEXT (the reserve params as JSON), reason, waits_for TEXT (JSON list),
             created, updated,
             salt TEXT (of the commitment), disclosed INTEGER (1: platform and reference
             shown in the clear), expires (a waiting request's hold end, else NULL))
    events(seq INTEGER PRIMARY KEY AUTOINCREMENT, booking, machine, record TEXT (JSON),
           published INTEGER)

A file written before `salt`, `disclosed` and `expires` existed gains them when opened
(a fresh salt per booking; a waiting request holds until its start).

The gateway notices decisions another process committed by polling `PRAGMA data_version`
(`changed()`), which SQLite bumps on every commit by another connection.

Where the gateway writes (issue 17, item 2): on its one store writer thread (edge/storage/
writer.py), never on the event loop, where a durable commit's fsync (and a WAL checkpoint
inside it) stalled every poll due then. The loop gathers what a decision needs (the
candidates with the plant's holds and the running job, the evidence of an ended window) and
queues one operation (`Reserve`, `Release`, `OperatorDecision`, `CloseDue`,
`MarkPublished`); the thread runs
it inside a transaction: the read of the accepted bookings, the pure decision and the
insert together, so two platforms racing for one slot are still serialised, the first
queued accepted and the second declined. Several operations queued together share one
transaction (one fsync), each inside its own savepoint, so a refusal (`Refused`,
`KeyError`) undoes only its own operation and comes back as that operation's answer.
`await BookingStore.write(op)` returns once the transaction is committed: the desk replies
after that. Reads stay on the loop, on the reader connection (committed state, indexed).
Without a writer thread (the command line, tests) `write` runs the operation inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeAlias

from edge.platform_kit.verifier import booking_commitment
from edge.storage.move import MachineRows, MachineState
from edge.storage.wal import WalStore
from edge.storage.where import Where
from edge.storage.writer import StoreWriter, WriterThread
from models.booking import (
    NOTHING_HELD,
    OPEN_STATES,
    BookingState,
    Candidate,
    Decision,
    Interval,
    MachineSeen,
    ReserveParams,
    Usage,
    booking_record,
    decide,
    every_machine,
    recheck,
)
from models.errors import EdgeError
from models.logger import Logger
from models.plant import BookingRules, ShiftCalendar
from models.sample import format_ts

__all__ = ["FILENAME", "BookingMachines", "BookingOp", "BookingRow", "BookingStore",
           "BookingStoreError", "CloseDue", "MarkPublished", "OperatorDecision", "Refused",
           "Release", "Reserve"]

FORMAT_VERSION = 1
FILENAME = "bookings.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bookings(
    id TEXT PRIMARY KEY, platform TEXT NOT NULL, reference TEXT NOT NULL,
    machine TEXT NOT NULL, start INTEGER, end INTEGER, state TEXT NOT NULL,
    request TEXT NOT NULL, reason TEXT, waits_for TEXT NOT NULL,
    created INTEGER NOT NULL, updated INTEGER NOT NULL, salt TEXT NOT NULL DEFAULT '',
    disclosed INTEGER NOT NULL DEFAULT 0, expires INTEGER) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bookings_machine ON bookings(machine, state, end);
CREATE INDEX IF NOT EXISTS bookings_platform ON bookings(platform, reference);
CREATE INDEX IF NOT EXISTS bookings_state ON bookings(state);
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, booking TEXT NOT NULL, machine TEXT NOT NULL,
    record TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_unpublished ON events(seq) WHERE published = 0;
"""

By = Literal["rules", "operator", "platform", "gateway"]
BusyFor = Callable[[str], list[tuple[Interval, str]]]
"""machine -> what blocks its time besides the store's own accepted bookings."""



@dataclass(frozen=True)
class Evidence:
    """What a `completed` record carries: the booked window's OEE record and its part range
    (models.booking.part_range); either None when the machine has none."""

    oee: Mapping[str, Any] | None
    parts: Mapping[str, Any] | None


EvidenceFor = Callable[[str, datetime, datetime, datetime], Evidence | None]
"""machine, start, end, now -> the window's evidence, or None while parts made in it may
still be on their way (a part waits for its meter reading); asked again next round."""


class BookingStoreError(EdgeError):
    """The bookings database failed (disk full, I/O error, locked, closed)."""


class Refused(EdgeError):
    """A change the booking's state or the hard limits do not allow; the message says why."""


@dataclass(frozen=True)
class Reserve:
    """Decide one platform request and (unless `commit` is False) commit it: see
    `BookingStore.reserve`."""

    platform: str
    req: ReserveParams
    candidates: list[Candidate]
    calendar: ShiftCalendar
    rules: BookingRules
    now: datetime
    disclosed: bool = False
    elsewhere: Usage = NOTHING_HELD
    commit: bool = True
    seen: MachineSeen = every_machine


@dataclass(frozen=True)
class Release:
    """The platform withdraws its own open booking: see `BookingStore.release`."""

    platform: str
    booking: str
    now: datetime


@dataclass(frozen=True)
class OperatorDecision:
    """A person accepts or declines a waiting request (`BookingStore.operator_decide`);
    `busy`: what else holds the booking's machine, gathered on the loop."""

    booking: str
    accept: bool
    reason: str | None
    busy: tuple[tuple[Interval, str], ...]
    calendar: ShiftCalendar
    now: datetime


@dataclass(frozen=True)
class CloseDue:
    """Expire and complete what is due at `now` (`BookingStore.close_due`), with the
    evidence the loop gathered for each ended booking by id: a booking it has none for yet
    (absent, or None) stays accepted until a later round."""

    now: datetime
    evidence: Mapping[str, Evidence | None]


@dataclass(frozen=True)
class MarkPublished:
    """The egress took these records (`BookingStore.mark_published`)."""

    seqs: tuple[int, ...]


BookingOp = Reserve | Release | OperatorDecision | CloseDue | MarkPublished


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _t(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _US


def _s(t: datetime | None) -> int | None:
    return None if t is None else (t - _EPOCH) // _US


@dataclass(frozen=True)
class BookingRow:
    id: str
    platform: str
    reference: str
    machine: str
    start: datetime | None
    end: datetime | None
    state: BookingState
    request: dict[str, Any]
    reason: str | None
    waits_for: list[str]
    created: datetime
    updated: datetime
    salt: str
    disclosed: bool
    expires: datetime | None

    @property
    def commitment(self) -> str:
        return booking_commitment(self.id, self.platform, self.reference, self.salt)

    def owner(self) -> dict[str, Any]:
        """Who booked, as every subscriber of the streams may see it."""
        return {
            "platform": self.platform if self.disclosed else None,
            "reference": self.reference if self.disclosed else None,
            "commitment": self.commitment,
        }

    def link(self) -> dict[str, Any]:
        """A `part` record's `booking`: this booking's id and owner."""
        return {"id": self.id, **self.owner()}

    def result(self) -> dict[str, Any]:
        """The booking as query replies to its own platform show it (with the salt that
        opens the commitment on the streams)."""
        return {
            "booking": self.id,
            "reference": self.reference,
            "salt": self.salt,
            "commitment": self.commitment,
            "machine": self.machine,
            "state": self.state,
            "start": None if self.start is None else format_ts(self.start),
            "end": None if self.end is None else format_ts(self.end),
            "program": self.request.get("program"),
            "process": self.request.get("process"),
            "quantity": self.request.get("quantity"),
            "reason": self.reason,
            "waits_for": self.waits_for,
            "hold_until": None if self.expires is None or self.state != "requested"
            else format_ts(self.expires),
            "created": format_ts(self.created),
            "updated": format_ts(self.updated),
        }


_COLUMNS = (
    "id, platform, reference, machine, start, end, state, request, reason, waits_for, "
    "created, updated, salt, disclosed, expires"
)


def _seen_rows(
    rows: Iterable[tuple[Any, ...]], seen: MachineSeen, limit: int
) -> Iterator[BookingRow]:
    """The first `limit` of `rows` (a cursor, read no further) whose machine `seen` shows;
    a booking placed on no machine (declined before one was chosen) names none."""
    if limit <= 0:
        return
    for r in rows:
        row = _row(r)
        if not row.machine or seen(row.machine):
            yield row
            limit -= 1
            if limit == 0:
                return


def _row(r: tuple[Any, ...]) -> BookingRow:
    created, updated = _t(r[10]), _t(r[11])
    assert created is not None and updated is not None
    return BookingRow(
        r[0],
        r[1],
        r[2],
        r[3],
        _t(r[4]),
        _t(r[5]),
        r[6],
        json.loads(r[7]),
        r[8],
        json.loads(r[9]),
        created,
        updated,
        r[12],
        bool(r[13]),
        _t(r[14]),
    )


def new_booking_id() -> str:
    """A fresh booking id: 8 random bytes, so one platform cannot guess another's."""
    return f"b-{secrets.token_hex(8)}"


def new_salt() -> str:
    """A fresh commitment salt (16 random bytes): see `BookingRow.commitment`."""
    return secrets.token_urlsafe(16)


BookingOutcome: TypeAlias = (
    tuple[BookingRow, bool] | BookingRow | list[BookingRow] | Exception | None)
"""What one operation came to: its result, or the refusal (`Refused`, `KeyError`) that left
the store as it was."""


class BookingStore(WalStore):
    """The bookings database at `path`; `durable` by default (an acceptance is a promise)."""

    label = "bookings store"
    schema = _SCHEMA
    format_version = FORMAT_VERSION
    error_class = BookingStoreError
    corrupt_event = "bookings_store_corrupt_moved_aside"
    corrupt_consequence = (
        "bookings start afresh; the signed bookings records already sent remain the evidence"
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        busy_timeout: float = 10.0,
        logger: Logger | None = None,
        writes: WriterThread | None = None,
        new_id: Callable[[], str] = new_booking_id,
        salt: Callable[[], str] = new_salt,
    ) -> None:
        """`writes`: the thread that commits `write`'s operations (the gateway's store
        writer); None runs them inline. `new_id` and `salt` make a booking's id and its
        commitment's salt: random in the gateway, fixed by docs/vectors/generate.py, whose
        reply vectors must come out the same on every run."""
        self.new_id = new_id
        self.salt = salt
        self._start(path, durable=durable, busy_timeout=busy_timeout, logger=logger,
                    component="bookings_store")
        self._upgrade()
        self._writer: StoreWriter[BookingOp, BookingOutcome] | None = (
            None if writes is None else StoreWriter(self, writes))

    # --- the writer thread's side ---------------------------------------------------------

    def apply(self, ops: Sequence[BookingOp]) -> list[BookingOutcome]:
        """Several operations in one transaction, in order, each in a savepoint (`Batched`):
        a refusal undoes its own operation only and is its answer; an SQLite error undoes
        all of them (BookingStoreError; the writer then tries each alone)."""
        # see `mark_published`: no fsync for marks alone; switched under the lock, so no
        # decision committed inline meanwhile (the status page's) goes without one
        quick = self.durable and all(isinstance(op, MarkPublished) for op in ops)
        with self._lock:
            try:
                if quick:
                    self._require().execute("PRAGMA synchronous=NORMAL")
                with self._transaction("write") as conn:
                    out: list[BookingOutcome] = []
                    for op in ops:
                        conn.execute("SAVEPOINT op")
                        try:
                            result = self._run(conn, op)
                        except (Refused, KeyError) as exc:
                            conn.execute("ROLLBACK TO op")
                            result = exc
                        conn.execute("RELEASE op")
                        out.append(result)
                    return out
            except sqlite3.Error as exc:
                raise self._error(exc, "write") from exc
            finally:
                if quick and self._conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("PRAGMA synchronous=FULL")

    def _run(self, conn: sqlite3.Connection, op: BookingOp) -> BookingOutcome:
        if isinstance(op, Reserve):
            return self._reserve(conn, op)
        if isinstance(op, Release):
            return self._release(conn, op.platform, op.booking, op.now)
        if isinstance(op, OperatorDecision):
            return self._operator_decide(conn, op, lambda _machine: list(op.busy))
        if isinstance(op, CloseDue):
            return self._close_due(conn, op.now, lambda row: op.evidence.get(row.id))
        conn.executemany("UPDATE events SET published = 1 WHERE seq = ?",
                         [(s,) for s in op.seqs])
        return None

    async def write(self, op: BookingOp) -> BookingOutcome:
        """Run `op` in a transaction (on the writer thread when there is one) and return
        once it is committed; a refusal is raised (`Refused`, `KeyError`), and so is a
        failed store (BookingStoreError)."""
        if self._writer is None:
            [result] = self.apply([op])
        else:
            answered: asyncio.Future[BookingOutcome] = (
                asyncio.get_running_loop().create_future())
            self._writer.submit(op, partial(_settle, answered))
            result = await answered
        if isinstance(result, Exception):
            raise result
        return result

    async def decide(self, op: Reserve) -> tuple[BookingRow, bool]:
        """`write` for a `Reserve`: (booking, new), committed (or a proposal)."""
        result = await self.write(op)
        assert isinstance(result, tuple)
        return result

    async def withdraw(self, op: Release | OperatorDecision) -> BookingRow:
        """`write` for a `Release` or an `OperatorDecision`: the booking as it now is,
        committed."""
        result = await self.write(op)
        assert isinstance(result, BookingRow)
        return result

    async def settle_due(self, op: CloseDue) -> list[BookingRow]:
        """`write` for a `CloseDue`: the bookings that changed, committed."""
        result = await self.write(op)
        assert isinstance(result, list)
        return result

    def _upgrade(self) -> None:
        """Add the columns a file from before commitments and holds lacks."""
        with self._tx("upgrade") as conn:
            have = {r[1] for r in conn.execute("PRAGMA table_info(bookings)")}
            if "salt" in have:
                return
            conn.execute("ALTER TABLE bookings ADD COLUMN salt TEXT NOT NULL DEFAULT ''")
            conn.execute("ALTER TABLE bookings ADD COLUMN disclosed INTEGER NOT NULL DEFAULT 0")
            conn.execute("ALTER TABLE bookings ADD COLUMN expires INTEGER")
            ids = [r[0] for r in conn.execute("SELECT id FROM bookings")]
            conn.executemany("UPDATE bookings SET salt = ? WHERE id = ?",
                             [(self.salt(), i) for i in ids])
            conn.execute("UPDATE bookings SET expires = start WHERE state = 'requested'")

    # --- inside a transaction -------------------------------------------------------

    def _holding(
        self, conn: sqlite3.Connection, machine: str, now: datetime, exclude: str = ""
    ) -> list[tuple[Interval, str]]:
        """Time of `machine` taken by bookings ending after `now`: accepted ones, and
        waiting requests whose hold has not ended (with the hold's end in the reason)."""
        rows = conn.execute(
            "SELECT id, start, end, state, expires FROM bookings WHERE machine = ? AND end > ? "
            "AND id != ? AND (state = 'accepted' OR (state = 'requested' AND expires > ?)) "
            "ORDER BY start, id",
            (machine, _s(now), exclude, _s(now)),
        ).fetchall()
        out: list[tuple[Interval, str]] = []
        for bid, a, b, state, hold in rows:
            start, end, until = _t(a), _t(b), _t(hold)
            assert start is not None and end is not None
            if state == "accepted":
                out.append(((start, end), f"accepted booking {bid}"))
            else:
                assert until is not None
                why = f"booking {bid} held for a decision until {format_ts(until)}"
                out.append(((start, end), why))
        return out

    def _expire_due(self, conn: sqlite3.Connection, now: datetime) -> list[BookingRow]:
        """Waiting requests whose hold ended (or whose start passed) expire, before anything
        is decided in the same transaction: the order of the records is the order of time."""
        rows = [
            _row(r)
            for r in conn.execute(
                f"SELECT {_COLUMNS} FROM bookings WHERE state = 'requested' AND "
                "(expires IS NULL OR expires <= ? OR start <= ?) ORDER BY expires, id",
                (_s(now), _s(now)),
            ).fetchall()
        ]
        return [
            self._set_state(conn, row, "expired", now, "gateway", reason="no decision in time")
            for row in rows
        ]

    def _event(
        self,
        conn: sqlite3.Connection,
        row: BookingRow,
        state: BookingState,
        at: datetime,
        by: By,
        *,
        reason: str | None = None,
        waits_for: Iterable[str] = (),
        evidence: Evidence | None = None,
    ) -> None:
        record = booking_record(
            booking=row.id,
            state=state,
            owner=row.owner(),
            machine=row.machine,
            start=row.start,
            end=row.end,
            at=at,
            by=by,
            request=row.request,
            reason=reason,
            waits_for=waits_for,
            hold_until=row.expires if state == "requested" else None,
            oee=None if evidence is None else evidence.oee,
            parts=None if evidence is None else evidence.parts,
        )
        conn.execute(
            "INSERT INTO events(booking, machine, record) VALUES (?, ?, ?)",
            (row.id, row.machine, json.dumps(record, separators=(",", ":"))),
        )

    def _set_state(
        self,
        conn: sqlite3.Connection,
        row: BookingRow,
        state: BookingState,
        at: datetime,
        by: By,
        *,
        reason: str | None = None,
        evidence: Evidence | None = None,
    ) -> BookingRow:
        conn.execute(
            "UPDATE bookings SET state = ?, reason = ?, updated = ? WHERE id = ?",
            (state, reason, _s(at), row.id),
        )
        self._event(conn, row, state, at, by, reason=reason, evidence=evidence)
        return replace(row, state=state, reason=reason, updated=at)

    @staticmethod
    def _get(conn: sqlite3.Connection, booking: str) -> BookingRow | None:
        r = conn.execute(f"SELECT {_COLUMNS} FROM bookings WHERE id = ?", (booking,)).fetchone()
        return None if r is None else _row(r)

    # --- decisions --------------------------------------------------------------------

    def reserve(
        self,
        platform: str,
        req: ReserveParams,
        candidates: list[Candidate],
        *,
        calendar: ShiftCalendar,
        rules: BookingRules,
        now: datetime,
        disclosed: bool = False,
        elsewhere: Usage = NOTHING_HELD,
        commit: bool = True,
        seen: MachineSeen = every_machine,
    ) -> tuple[BookingRow, bool]:
        """Decide one request and commit it (with its `requested` record, and the
        `accepted`/`declined` one when decided at once). Returns (booking, new); an open
        booking of this platform with the same reference is returned as it is (new=False),
        so a platform that lost a reply can ask again without booking twice. A request left
        to a person holds its slot until `rules.hold` has passed (never past its start).
        `disclosed`: the platform shows its id and reference on the streams. `elsewhere`:
        what the platform holds in the other stores of the gateway (`run --workers N`: one
        store per worker), counted against its quota with this store's. `commit=False`: a
        proposal, the booking as it would be decided, the request recorded nowhere (`run
        --workers N`: the parent compares the workers' proposals for a `reserve` by process,
        then commits the best one's machine in its worker, which decides again). `seen`: the
        asking destination's machines; an open booking with the same reference on a machine it
        hides is not returned (that would name the machine), nor is a second one booked under
        the reference (a retry through another destination must not double-book): ValueError,
        naming the reference only."""
        with self._tx("reserve") as conn:
            return self._reserve(conn, Reserve(platform, req, candidates, calendar, rules, now,
                                               disclosed, elsewhere, commit, seen))

    def _reserve(self, conn: sqlite3.Connection, op: Reserve) -> tuple[BookingRow, bool]:
        """`reserve` inside the caller's transaction."""
        platform, req, candidates, now = op.platform, op.req, op.candidates, op.now
        calendar, rules, disclosed, elsewhere = op.calendar, op.rules, op.disclosed, op.elsewhere
        request = req.model_dump(mode="json", exclude_none=True)
        self._expire_due(conn, now)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM bookings WHERE platform = ? AND reference = ? "
            "AND state IN ('requested', 'accepted') ORDER BY created DESC",
            (platform, req.reference),
        )
        held = [_row(r) for r in rows]  # a reference's open bookings: one, rarely more
        asked_again = next((b for b in held if not b.machine or op.seen(b.machine)), None)
        if asked_again is not None:
            return asked_again, False
        if held:  # open, on a machine this destination hides: neither name it nor book twice
            raise ValueError(f"reference {req.reference!r} is already used by another open "
                             "booking of this platform: release it where it was made, or use "
                             "another reference")
        full = [
            Candidate(
                c.machine, (*c.busy, *self._holding(conn, c.machine, now)), c.ideal_cycle_s
            )
            for c in candidates
        ]
        usage = self._usage(conn, platform, now)
        decision: Decision = decide(
            req,
            full,
            platform=platform,
            calendar=calendar,
            rules=rules,
            usage=Usage(usage.hours + elsewhere.hours, usage.bookings + elsewhere.bookings),
            now=now,
        )
        expires = None
        if decision.state == "requested":
            assert decision.start is not None
            expires = min(now + rules.hold, decision.start)
        row = BookingRow(
            self.new_id(),
            platform,
            req.reference,
            decision.machine,
            decision.start,
            decision.end,
            "requested",
            request,
            None,
            list(decision.waits_for),
            now,
            now,
            self.salt(),
            disclosed,
            expires,
        )
        if not op.commit:
            return dataclasses.replace(row, state=decision.state, reason=decision.reason), True
        conn.execute(
            f"INSERT INTO bookings({_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                platform,
                req.reference,
                row.machine,
                _s(row.start),
                _s(row.end),
                "requested",
                json.dumps(request),
                None,
                json.dumps(row.waits_for),
                _s(now),
                _s(now),
                row.salt,
                int(disclosed),
                _s(expires),
            ),
        )
        self._event(conn, row, "requested", now, "platform", waits_for=decision.waits_for)
        if decision.state != "requested":
            row = self._set_state(
                conn, row, decision.state, now, "rules", reason=decision.reason
            )
        return row, True

    def release(self, platform: str, booking: str, now: datetime) -> BookingRow:
        """The platform withdraws its own open booking. KeyError: no such booking of
        this platform (another platform's is not found either); Refused: already closed."""
        with self._tx("release") as conn:
            return self._release(conn, platform, booking, now)

    def _release(self, conn: sqlite3.Connection, platform: str, booking: str, now: datetime
                 ) -> BookingRow:
        self._expire_due(conn, now)
        row = self._get(conn, booking)
        if row is None or row.platform != platform:
            raise KeyError(booking)
        if row.state not in OPEN_STATES:
            raise Refused(f"booking {booking} is {row.state}, nothing to release")
        return self._set_state(conn, row, "released", now, "platform")

    def operator_decide(
        self,
        booking: str,
        *,
        accept: bool,
        reason: str | None,
        busy: BusyFor,
        calendar: ShiftCalendar,
        now: datetime,
    ) -> BookingRow:
        """A person accepts or declines a waiting request. Accepting checks the hard
        limits again inside the transaction (Refused, state unchanged, when they fail). A
        request whose hold has ended has expired (and says so), even if the gateway has not
        closed it yet."""
        with self._tx("decide") as conn:
            return self._operator_decide(
                conn, OperatorDecision(booking, accept, reason, (), calendar, now), busy)

    def _operator_decide(self, conn: sqlite3.Connection, op: OperatorDecision, busy: BusyFor
                         ) -> BookingRow:
        """`operator_decide` inside the caller's transaction (`op.busy` is not read here:
        `busy` says what else holds the machine)."""
        booking, accept, reason, calendar, now = (op.booking, op.accept, op.reason,
                                                  op.calendar, op.now)
        self._expire_due(conn, now)
        row = self._get(conn, booking)
        if row is None:
            raise KeyError(booking)
        if row.state != "requested":
            raise Refused(f"booking {booking} is {row.state}, not waiting for a decision")
        if not accept:
            return self._set_state(
                conn, row, "declined", now, "operator", reason=reason or "declined by the plant"
            )
        assert row.start is not None and row.end is not None
        blocked = recheck(
            row.machine,
            row.start,
            row.end,
            [*busy(row.machine), *self._holding(conn, row.machine, now, exclude=row.id)],
            calendar=calendar,
            now=now,
        )
        if blocked is not None:
            raise Refused(f"cannot accept {booking}: {blocked}")
        return self._set_state(conn, row, "accepted", now, "operator", reason=reason)

    def close_due(self, now: datetime, *, evidence: EvidenceFor) -> list[BookingRow]:
        """Waiting requests whose hold ended or whose start passed expire; accepted bookings
        whose window ended complete, carrying that window's evidence, once `evidence` has
        it (a booking whose evidence is not settled stays accepted until a later round)."""
        def of(row: BookingRow) -> Evidence | None:
            assert row.start is not None and row.end is not None
            return evidence(row.machine, row.start, row.end, now)

        with self._tx("close due") as conn:
            return self._close_due(conn, now, of)

    def _close_due(self, conn: sqlite3.Connection, now: datetime,
                   evidence: Callable[[BookingRow], Evidence | None]) -> list[BookingRow]:
        changed = self._expire_due(conn, now)
        for row in self._ended(conn, now):
            found = evidence(row)
            if found is None:
                continue
            changed.append(self._set_state(conn, row, "completed", now, "gateway",
                                           evidence=found))
        return changed

    @staticmethod
    def _ended(conn: sqlite3.Connection, now: datetime) -> list[BookingRow]:
        return [_row(r) for r in conn.execute(
            f"SELECT {_COLUMNS} FROM bookings WHERE state = 'accepted' AND end <= ? "
            "ORDER BY end, id", (_s(now),)).fetchall()]

    def ended(self, now: datetime) -> list[BookingRow]:
        """Accepted bookings whose window has ended by `now` (committed state): those
        `CloseDue` completes once it has their evidence."""
        with self._snapshot("read ended") as conn:
            return self._ended(conn, now)

    # --- reads --------------------------------------------------------------------------

    def get(self, booking: str) -> BookingRow | None:
        rows = self._read("read", f"SELECT {_COLUMNS} FROM bookings WHERE id = ?", (booking,))
        return _row(rows[0]) if rows else None

    def bookings(
        self,
        *,
        platform: str | None = None,
        states: Iterable[str] | None = None,
        reference: str | None = None,
        machine: str | None = None,
        limit: int = 1000,
        by_update: bool = False,
        seen: MachineSeen = every_machine,
    ) -> list[BookingRow]:
        """Newest first: created, or (`by_update`) last changed. `seen`: only bookings on
        machines the asking destination shows, left out before `limit` is counted, so a page
        holds `limit` rows whenever there are that many it may see."""
        where = Where()
        where.equals("platform", platform)
        where.equals("machine", machine)
        where.equals("reference", reference)
        where.any_of("state", states or ())
        with self._snapshot("list") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM bookings WHERE {where.sql} "
                f"ORDER BY {'updated' if by_update else 'created'} DESC, id",
                where.args,
            )
            return list(_seen_rows(rows, seen, limit))

    @staticmethod
    def _usage(conn: sqlite3.Connection, platform: str, now: datetime) -> Usage:
        hours, count = conn.execute(
            "SELECT COALESCE(SUM(end - start), 0), COUNT(*) FROM bookings WHERE platform = ? "
            "AND state IN ('requested', 'accepted') AND end > ?",
            (platform, _s(now)),
        ).fetchone()
        return Usage(float(hours) / 3.6e9, int(count))

    def usage(self, platform: str, now: datetime) -> Usage:
        """What `platform` holds in this store (open bookings ending after `now`); read on
        the reader connection, never waiting for a decision being committed."""
        with self._snapshot("read usage") as conn:
            return self._usage(conn, platform, now)

    def holding(self, machine: str, now: datetime) -> list[tuple[Interval, str]]:
        """Time of `machine` taken by platforms (accepted bookings, waiting requests within
        their hold) ending after `now`: time no longer offered."""
        with self._snapshot("read holding") as conn:
            return self._holding(conn, machine, now)

    def covering(self, machine: str, at: datetime) -> BookingRow | None:
        """The accepted (or since completed) booking of `machine` whose window holds `at`:
        the booking a part made at `at` was made under."""
        rows = self._read(
            "covering",
            f"SELECT {_COLUMNS} FROM bookings WHERE machine = ? AND state IN "
            "('accepted', 'completed') AND start <= ? AND end > ? ORDER BY start LIMIT 1",
            (machine, _s(at), _s(at)),
        )
        return _row(rows[0]) if rows else None

    def unpublished(self, limit: int = 500, after: int = 0
                    ) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, machine, record) of state changes not yet handed to the egress, in order
        (`after`: only those with a greater seq)."""
        rows = self._read(
            "read events",
            "SELECT seq, machine, record FROM events WHERE published = 0 AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [(int(s), str(m), json.loads(r)) for s, m, r in rows]

    def mark_published(self, seqs: Iterable[int]) -> None:
        """Committed without waiting for the disk even in a `durable` store: losing this
        mark to a power cut only sends the record once more, while an fsync here would
        double the cost of every decision (bench/bench_bookings.py)."""
        ids = [(s,) for s in seqs]
        if not ids:
            return
        if self._writer is not None:  # queued: nothing waits for it (module docstring)
            self._writer.submit(MarkPublished(tuple(i for (i,) in ids)), None)
            return
        self._synchronous("NORMAL")
        try:
            with self._tx("mark published") as conn:
                conn.executemany("UPDATE events SET published = 1 WHERE seq = ?", ids)
        finally:
            self._synchronous("FULL" if self.durable else "NORMAL")

    def _synchronous(self, level: str) -> None:
        with self._lock:
            try:
                self._require().execute(f"PRAGMA synchronous={level}")
            except sqlite3.Error as exc:
                raise self._error(exc, "set synchronous") from exc

    def changed(self) -> int:
        """`PRAGMA data_version`: changes when another process commits to the file."""
        rows = self._read("data_version", "PRAGMA data_version", ())
        return int(rows[0][0])


class BookingMachines(MachineState):
    """A machine's bookings and their state-change records (the unpublished ones in their
    order) in a bookings file, to move them when the worker count changes: each machine's
    bookings keep one writer, its worker. On a clash the booking updated later wins."""

    filename = FILENAME
    label = "bookings store"
    error = BookingStoreError

    def prepare(self, path: Path) -> None:
        BookingStore(path).close()

    def machines(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for t in ("bookings", "events")
                for r in conn.execute(f"SELECT DISTINCT machine FROM {t}")}

    def rows(self, conn: sqlite3.Connection, machines: Collection[str]) -> list[MachineRows]:
        ids = tuple(sorted(machines))
        return [
            MachineRows("bookings", "machine", ids, tuple(_COLUMNS.split(", ")),
                        primary=("id",), newer="updated"),
            MachineRows("events", "machine", ids, ("booking", "machine", "record", "published"),
                        order="seq"),
        ]


def _settle(answered: asyncio.Future[BookingOutcome], result: BookingOutcome) -> None:
    """The writer's answer to one `write` (on the loop): its waiter may have gone (a
    cancelled query), the operation is committed or refused all the same."""
    if not answered.done():
        answered.set_result(result)
