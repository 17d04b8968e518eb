"""Durable part records: each machine's tracker state and every published part record.

    PartRecorder (on every state change, part and tick) --save--> one commit
    PartRecorder start <--load(asset)-- tracker state + `alive`
    Sealer (after signing) --attach_envelope--> the envelope the record was published in
    QueryBackend `parts` <--page(...)-- records with their signed envelopes

Why the tracker state is saved with the records in one transaction: the gateway part
sequence number lives in that state, so a record is stored exactly when its number is
spent; after a crash between closing a part and saving, the restored tracker still holds
the open cycle and the counter's old value, so the part is recorded again (as partial)
from the first read after the restart, never lost and never numbered twice.

File format, version 1 (`parts.sqlite3` in the state directory); times are integer
microseconds since the Unix epoch (UTC)::

    meta(key TEXT PRIMARY KEY, value TEXT)      'format' -> '1', 'created'
    trackers(asset PRIMARY KEY, state TEXT,     state = PartTracker.to_dict() as JSON;
             alive INTEGER)                     alive = the gateway's time of the save
    parts(asset, part_seq, end_us, program,     PRIMARY KEY(asset, part_seq);
          verdict, parts, kwh, co2e,            copies of the record's fields, for queries
          record TEXT,                          record = the published record (JSON);
          envelope TEXT)                        envelope = the flattened JWS it went out in
                                                (NULL until sealed, or when no
                                                destination takes the stream)
    energy(asset, minute_us, category, kwh)     PRIMARY KEY(asset, minute_us, category);
                                                metered kWh per minute by what the machine
                                                did: producing, idle, stopped (energy windows)

Retention: `prune(before)` deletes part records that ended before `before`; the recorder
keeps them as long as closed OEE windows (`gateway.oee.window_retention_days`). Opening,
`quick_check`, format version and corrupt-file handling are edge/storage/wal.py's.

Where the gateway writes (issue 17, item 2): on its one store writer thread (edge/storage/
writer.py), never on the event loop, with the OEE store's and the outbox's writes in one
queue. A machine's save (`SaveTracker`) is queued before its part records are handed to
the egress, so it commits before their envelope's outbox append: a part the platform has
seen always has its number saved, and the numbers stay monotonic across a SIGKILL. Until
a save has committed, the recorder keeps it (`PartRecorder.unsaved`) and what reads a
window (energy figures, a booking's evidence) adds it; each save carries a number, and
`meta('saved')`, written in the same transaction, says which saves a read already sees.
Without a writer thread (the command line, tests) `submit` applies inline.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.kpi.store import from_us, to_us
from edge.storage.move import MachineRows, MachineState
from edge.storage.wal import WalStore
from edge.storage.where import Where
from edge.storage.writer import StoreWriter, WriterThread
from models.errors import EdgeError
from models.logger import Logger
from models.parts import ProgramEnergy

FORMAT_VERSION = 1
FILENAME = "parts.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trackers(
    asset TEXT PRIMARY KEY, state TEXT NOT NULL, alive INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts(
    asset TEXT NOT NULL, part_seq INTEGER NOT NULL, end_us INTEGER NOT NULL, program TEXT,
    verdict TEXT NOT NULL, parts INTEGER NOT NULL, kwh REAL, co2e REAL,
    record TEXT NOT NULL, envelope TEXT, PRIMARY KEY(asset, part_seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parts_end ON parts(asset, end_us);
CREATE TABLE IF NOT EXISTS energy(
    asset TEXT NOT NULL, minute_us INTEGER NOT NULL, category TEXT NOT NULL,
    kwh REAL NOT NULL, PRIMARY KEY(asset, minute_us, category)) WITHOUT ROWID;
"""


_GOOD_AND_SCRAP = (
    "SELECT COALESCE(SUM(CASE WHEN verdict = 'scrap' THEN 0 ELSE parts END), 0), "
    "COALESCE(SUM(CASE WHEN verdict = 'scrap' THEN parts ELSE 0 END), 0) FROM parts "
    "WHERE asset = ? AND end_us >= ? AND end_us < ?")


class PartStoreError(EdgeError):
    """The part database failed (disk full, I/O error, locked, closed)."""


@dataclass(frozen=True, slots=True)
class SavedTracker:
    state: dict[str, Any]
    alive: datetime


@dataclass(frozen=True, slots=True)
class StoredPart:
    asset: str
    record: dict[str, Any]
    envelope: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SaveTracker:
    """A machine's tracker state, the records it just closed and its drained energy, to
    commit in one transaction; `number` counts this process's saves (see the module
    docstring)."""

    asset: str
    state: dict[str, Any]
    alive: datetime
    records: tuple[dict[str, Any], ...] = ()
    energy: Mapping[tuple[str, str], float] | None = None
    number: int = 0


@dataclass(frozen=True, slots=True)
class AttachEnvelope:
    asset: str
    part_seq: int
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Prune:
    before: datetime


PartOp = SaveTracker | AttachEnvelope | Prune
PartDone = Callable[[int | Exception], None]


@dataclass(frozen=True, slots=True)
class WindowRead:
    """One window of one machine as committed: kWh per (minute, category), good and scrap
    parts, and the number of the last save it includes."""

    energy: list[tuple[datetime, str, float]]
    good: int
    scrap: int
    saved: int


class PartStore(WalStore):
    label = "part store"
    schema = _SCHEMA
    format_version = FORMAT_VERSION
    error_class = PartStoreError
    corrupt_event = "part_store_corrupt_moved_aside"
    corrupt_consequence = "part records and sequence numbers start afresh"

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = False,
                 busy_timeout: float = 5.0, logger: Logger | None = None,
                 writes: WriterThread | None = None) -> None:
        """`writes`: the thread that commits `submit`'s operations (the gateway's store
        writer); None applies them inline."""
        self._start(path, durable=durable, busy_timeout=busy_timeout, logger=logger,
                    component="part_store")
        self._writer: StoreWriter[PartOp, int] | None = (
            None if writes is None else StoreWriter(self, writes))

    # --- the writer thread's side ---------------------------------------------------------

    def apply(self, ops: Sequence[PartOp]) -> list[int]:
        """Several operations in one transaction, in order (`Batched`); PartStoreError when
        it failed, nothing of it written. Each answers how many rows it touched."""
        with self._tx("write") as conn:
            out: list[int] = []
            for op in ops:
                if isinstance(op, SaveTracker):
                    self._save(conn, op)
                    out.append(len(op.records))
                elif isinstance(op, AttachEnvelope):
                    out.append(conn.execute(
                        "UPDATE parts SET envelope = ? WHERE asset = ? AND part_seq = ?",
                        (json.dumps(op.envelope, separators=(",", ":")), op.asset,
                         op.part_seq)).rowcount)
                else:
                    out.append(self._prune(conn, op.before))
            return out

    def submit(self, op: PartOp, done: PartDone | None = None) -> None:
        """Queue `op` on the writer thread (`done` runs on the event loop once it is
        committed or failed), or apply it now when there is none."""
        if self._writer is not None:
            self._writer.submit(op, done)
            return
        try:
            [result] = self.apply([op])
        except EdgeError as exc:
            if done is None:
                raise
            done(exc)
            return
        if done is not None:
            done(result)

    def last_save(self) -> int:
        """The number of the last `SaveTracker` committed (0: none numbered yet)."""
        rows = self._read("read saves", "SELECT value FROM meta WHERE key = 'saved'", ())
        return int(rows[0][0]) if rows else 0

    def window(self, asset: str, start: datetime, end: datetime) -> WindowRead:
        """The energy and part counts of [start, end) in one read (one committed state)."""
        with self._snapshot("read window") as conn:
            energy = [(from_us(m), str(c), float(k)) for m, c, k in conn.execute(
                "SELECT minute_us, category, kwh FROM energy WHERE asset = ? AND "
                "minute_us >= ? AND minute_us < ? ORDER BY minute_us",
                (asset, to_us(start), to_us(end)))]
            good, scrap = conn.execute(_GOOD_AND_SCRAP, (asset, to_us(start),
                                                         to_us(end))).fetchone()
            saved = conn.execute("SELECT value FROM meta WHERE key = 'saved'").fetchone()
        return WindowRead(energy, int(good), int(scrap), int(saved[0]) if saved else 0)

    def load(self, asset: str) -> SavedTracker | None:
        rows = self._read("load", "SELECT state, alive FROM trackers WHERE asset = ?", (asset,))
        if not rows:
            return None
        return SavedTracker(json.loads(rows[0][0]), from_us(rows[0][1]))

    def save(self, asset: str, state: dict[str, Any], alive: datetime,
             records: Iterable[dict[str, Any]] = (),
             energy: Mapping[tuple[str, str], float] | None = None) -> None:
        """The tracker's state, the records it just closed and its drained energy, in one
        commit."""
        with self._tx("save") as conn:
            self._save(conn, SaveTracker(asset, state, alive, tuple(records), energy))

    @staticmethod
    def _save(conn: sqlite3.Connection, op: SaveTracker) -> None:
        asset, state, alive, records, energy = (op.asset, op.state, op.alive, op.records,
                                                op.energy)
        conn.execute(
            "INSERT INTO trackers(asset, state, alive) VALUES (?, ?, ?) ON CONFLICT(asset) "
            "DO UPDATE SET state = excluded.state, alive = excluded.alive",
            (asset, json.dumps(state, separators=(",", ":")), to_us(alive)))
        if op.number:
            conn.execute("INSERT INTO meta(key, value) VALUES ('saved', ?) ON CONFLICT(key)"
                         " DO UPDATE SET value = excluded.value", (str(op.number),))
        conn.executemany(
            "INSERT OR REPLACE INTO parts(asset, part_seq, end_us, program, verdict, parts, "
            "kwh, co2e, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(asset, r["part_seq"], to_us(datetime.fromisoformat(r["end"])), r["program"],
              r["verdict"], r["parts"], r["energy_kwh"], r["co2e_kg"],
              json.dumps(r, separators=(",", ":"))) for r in records])
        conn.executemany(
            "INSERT INTO energy(asset, minute_us, category, kwh) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(asset, minute_us, category) DO UPDATE SET kwh = kwh + excluded.kwh",
            [(asset, to_us(datetime.fromisoformat(minute)), category, kwh)
             for (minute, category), kwh in (energy or {}).items()])

    def energy(self, asset: str, start: datetime, end: datetime) -> list[tuple[datetime, str,
                                                                                 float]]:
        """(minute, category, kWh) of the minutes starting in [start, end)."""
        rows = self._read(
            "energy", "SELECT minute_us, category, kwh FROM energy WHERE asset = ? AND "
            "minute_us >= ? AND minute_us < ? ORDER BY minute_us", (asset, to_us(start),
                                                                    to_us(end)))
        return [(from_us(m), c, k) for m, c, k in rows]

    def attach_envelope(self, asset: str, part_seq: int, envelope: dict[str, Any]) -> None:
        with self._tx("attach envelope") as conn:
            conn.execute("UPDATE parts SET envelope = ? WHERE asset = ? AND part_seq = ?",
                         (json.dumps(envelope, separators=(",", ":")), asset, part_seq))

    def page(self, assets: list[str], *, start: datetime | None = None,
             end: datetime | None = None, program: str | None = None,
             verdict: str | None = None, after: tuple[str, int] | None = None,
             limit: int = 100) -> list[StoredPart]:
        """Records ordered by (asset, part_seq), after the cursor `after`, at most `limit`."""
        if not assets:
            return []
        where = Where()
        where.any_of("asset", assets)
        where.compare("end_us", ">=", None if start is None else to_us(start))
        where.compare("end_us", "<", None if end is None else to_us(end))
        where.equals("program", program)
        where.equals("verdict", verdict)
        if after is not None:
            where.add("(asset > ? OR (asset = ? AND part_seq > ?))", after[0], after[0],
                      after[1])
        rows = self._read(
            "page",
            f"SELECT asset, record, envelope FROM parts WHERE {where.sql} "
            "ORDER BY asset, part_seq LIMIT ?",
            (*where.args, limit))
        return [StoredPart(a, json.loads(r), None if e is None else json.loads(e))
                for a, r, e in rows]

    def program_energy(self, asset: str, start: datetime, end: datetime
                       ) -> list[ProgramEnergy]:
        """Per program, the metered parts that ended in [start, end): good parts, kWh of
        all of them (scrap included), CO2e (None if no record had a factor)."""
        rows = self._read(
            "program energy",
            "SELECT program, SUM(CASE WHEN verdict = 'scrap' THEN 0 ELSE parts END), SUM(kwh),"
            " SUM(co2e) FROM parts WHERE asset = ? AND end_us >= ? AND end_us < ? AND kwh IS"
            " NOT NULL GROUP BY program", (asset, to_us(start), to_us(end)))
        return [ProgramEnergy(str(p), int(g), float(k), None if c is None else float(c))
                for p, g, k, c in rows]

    def good_and_scrap(self, asset: str, start: datetime, end: datetime) -> tuple[int, int]:
        """Parts that ended in [start, end): (good or unknown, scrap)."""
        rows = self._read("count parts", _GOOD_AND_SCRAP, (asset, to_us(start), to_us(end)))
        return int(rows[0][0]), int(rows[0][1])

    def records(self, asset: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Part records of one machine that ended in [start, end), oldest first."""
        return [p.record for p in self._all(asset, start, end)]

    def _all(self, asset: str, start: datetime, end: datetime) -> list[StoredPart]:
        out: list[StoredPart] = []
        cursor: tuple[str, int] | None = None
        while True:
            batch = self.page([asset], start=start, end=end, after=cursor, limit=1000)
            out += batch
            if len(batch) < 1000:
                return out
            cursor = (asset, int(batch[-1].record["part_seq"]))

    def prune(self, before: datetime) -> int:
        with self._tx("prune") as conn:
            return self._prune(conn, before)

    @staticmethod
    def _prune(conn: sqlite3.Connection, before: datetime) -> int:
        conn.execute("DELETE FROM energy WHERE minute_us < ?", (to_us(before),))
        return int(conn.execute("DELETE FROM parts WHERE end_us < ?",
                                (to_us(before),)).rowcount)


class PartMachines(MachineState):
    """A machine's part tracker (its part sequence, the open part), part records and metered
    energy in a part store file, to move them when the worker count changes, so the part
    sequence continues where it was. On a clash (the target started the machine afresh
    under an earlier gateway) the tracker saved later wins and the target's records stay."""

    filename = FILENAME
    label = "part store"
    error = PartStoreError
    _TABLES = ("trackers", "parts", "energy")

    def prepare(self, path: Path) -> None:
        PartStore(path).close()

    def machines(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for t in self._TABLES
                for r in conn.execute(f"SELECT DISTINCT asset FROM {t}")}

    def rows(self, conn: sqlite3.Connection, machines: Collection[str]) -> list[MachineRows]:
        ids = tuple(sorted(machines))
        return [
            MachineRows("trackers", "asset", ids, ("asset", "state", "alive"),
                        primary=("asset",), newer="alive"),
            MachineRows("parts", "asset", ids,
                        ("asset", "part_seq", "end_us", "program", "verdict", "parts", "kwh",
                         "co2e", "record", "envelope"), primary=("asset", "part_seq")),
            MachineRows("energy", "asset", ids, ("asset", "minute_us", "category", "kwh"),
                        primary=("asset", "minute_us", "category")),
        ]
