"""Durable OEE state: each machine's engine records and its closed windows, in SQLite (WAL).

    KpiService.tick (every few seconds) --save(deltas, closed windows, last_tick)--> one commit
    KpiService start  <--load(asset)-- head + segments + counts --> OeeEngine.from_state_dict

Why incremental rows rather than a periodic `state_dict()` snapshot: the engine keeps weeks
of state intervals, so rewriting them all every few seconds would cost O(history) per save
and wear flash. Its records are append-only and committed at strictly increasing instants
(`OeeEngine.export_since`), so each save appends only the records closed since the previous
one plus a small JSON "head" (current state, counter baselines, pending same-instant events)
and the `alive` heartbeat, all in one transaction: O(change) per save, never a torn state.

Crash bound (tested with SIGKILL): a commit survives a process crash, so after SIGKILL the
store holds the engine as of the last `save`, i.e. at most one save interval old (the
gateway saves on every tick, every few seconds). Nothing is silently lost: the restarted
gateway calls `on_gap(alive, now)`, so time from the last save to the restart counts as
`unavailable` (also `losses.gap`), and because the gap re-baselines the counters, parts
made in that time count in neither PQ nor GQ (their run time is not in APT either, so E
stays honest). After a power cut (not a process crash) `synchronous=NORMAL` may also lose
the last commits since the previous WAL sync; `durable=True` selects `synchronous=FULL`.

File format, version 1 (`oee.sqlite3` in the state directory); times are integer
microseconds since the Unix epoch (UTC), as in the engine::

    meta(key TEXT PRIMARY KEY, value TEXT)     'format' -> '1', 'created', 'last_tick'
    engines(asset PRIMARY KEY, head TEXT,       head = state_dict() without segments/counts;
            cursor INTEGER, alive INTEGER,      cursor = export_since cursor of the last save;
            saved REAL)                         alive = the gateway's time at the last save
    segments(asset, end_us, start_us, class, program)   PRIMARY KEY(asset, end_us)
    counts(asset, t_us, program, total, bad)             INDEX(asset, t_us)
    windows(asset, kind, start_us, end_us, record TEXT, closed_at REAL)
                                                PRIMARY KEY(asset, kind, start_us);
                                                kind = 'shift:<name>'; record = the published
                                                JSON, served again to queries for past shifts

A save deletes the asset's rows after the cursor it exported from before inserting, so a
save repeated after an ambiguous failure never duplicates a record. Closed windows are
`INSERT OR IGNORE`: `save` reports which ones are new, which is what makes a shift end
publish exactly once, across restarts too.

Retention: `prune(now)` deletes raw records (segments, counts, engines not seen) older than
`raw_retention_days` (default 35) and closed windows older than `window_retention_days`
(default 400). Recovery mirrors edge/egress/outbox.py: a file SQLite calls corrupt (or that fails
`PRAGMA quick_check`) is renamed `oee.sqlite3.corrupt-<UTC time>` (with its WAL), an error
is logged and a fresh store starts (history restarts; nothing to apply a gap to). A busy,
read-only or unreadable file is never moved aside; sqlite3 errors leave this module as
`OeeStoreError` or `ConfigurationError`.

Threading: the API is synchronous and thread-safe. In the gateway the writes (`save`,
`prune`) go as `SaveOp`/`PruneOp` to the writer thread it shares with the outbox
(edge/storage/writer.py), which commits what is queued in one transaction (`apply`), so a
commit or a WAL checkpoint never holds the event loop, and commits the two stores' writes
in the order they were queued (a part count's save before the envelope showing it);
reads (`load`, `closed_window(s)`, `last_tick`) use a second, read-only connection, which
in WAL mode never waits for the writer. Saves queued back to back are idempotent in
sequence (each deletes after the cursor it exported from), which is what lets
`KpiService` advance its cursors only once a save is committed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.storage.wal import (
    WalStore,
)
from models.errors import ConfigurationError, EdgeError
from models.logger import Logger

__all__ = [
    "FILENAME",
    "FORMAT_VERSION",
    "ClosedWindow",
    "EngineDelta",
    "OeeOp",
    "OeeStore",
    "OeeStoreError",
    "OeeStoreResult",
    "PruneOp",
    "SaveOp",
    "SavedEngine",
]

FORMAT_VERSION = 1
FILENAME = "oee.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS engines(
    asset TEXT PRIMARY KEY, head TEXT NOT NULL, cursor INTEGER, alive INTEGER NOT NULL,
    saved REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments(
    asset TEXT NOT NULL, end_us INTEGER NOT NULL, start_us INTEGER NOT NULL,
    class TEXT NOT NULL, program TEXT, PRIMARY KEY(asset, end_us)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts(
    asset TEXT NOT NULL, t_us INTEGER NOT NULL, program TEXT,
    total INTEGER NOT NULL, bad INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS counts_asset_t ON counts(asset, t_us);
CREATE TABLE IF NOT EXISTS windows(
    asset TEXT NOT NULL, kind TEXT NOT NULL, start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL, record TEXT NOT NULL, closed_at REAL NOT NULL,
    PRIMARY KEY(asset, kind, start_us)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_end ON windows(end_us);
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class OeeStoreError(EdgeError):
    """The OEE database failed (disk full, I/O error, locked, closed, malformed row).

    From `save` it means nothing was written; the caller keeps its cursors and retries.
    """


def to_us(t: datetime) -> int:
    """Microseconds since the epoch, as the engine counts (naive datetimes are refused)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {t.isoformat()}")
    return (t - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + us * _US


@dataclass(frozen=True, slots=True)
class SavedEngine:
    """What `load` found: a full `state_dict()`, its export cursor and the last heartbeat."""

    state: dict[str, Any]
    cursor: int | None
    alive: datetime


@dataclass(frozen=True, slots=True)
class EngineDelta:
    """One asset's `export_since(after)` result, stamped with the heartbeat `alive`."""

    asset: str
    after: int | None  # the cursor the export started from
    cursor: int | None  # the cursor it returned
    state: dict[str, Any]
    alive: datetime


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    asset: str
    kind: str  # "shift:<name>"
    start: datetime
    end: datetime
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SaveOp:
    """One `OeeStore.save` as data, so several share a transaction (`OeeStore.apply`)."""

    deltas: tuple[EngineDelta, ...]
    windows: tuple[ClosedWindow, ...] = ()
    last_tick: datetime | None = None


@dataclass(frozen=True, slots=True)
class PruneOp:
    """One `OeeStore.prune` as data."""

    now: datetime


OeeOp = SaveOp | PruneOp
OeeStoreResult = list[ClosedWindow] | dict[str, int]
"""The new windows of a save, or what a prune deleted per table."""


class OeeStore(WalStore):
    """The OEE database at `path` (its directory is created 0700 if missing)."""

    label = "OEE store"
    schema = _SCHEMA
    format_version = FORMAT_VERSION
    error_class = OeeStoreError
    corrupt_event = "oee_store_corrupt_moved_aside"
    corrupt_consequence = "OEE history and shift windows start afresh"

    def __init__(self, path: str | os.PathLike[str], *, raw_retention_days: float = 35,
                 window_retention_days: float = 400, durable: bool = False,
                 busy_timeout: float = 5.0, logger: Logger | None = None) -> None:
        if raw_retention_days <= 0 or window_retention_days <= 0:
            raise ConfigurationError("OEE retention must be a positive number of days")
        self.raw_retention = timedelta(days=raw_retention_days)
        self.window_retention = timedelta(days=window_retention_days)
        self._start(path, durable=durable, busy_timeout=busy_timeout, logger=logger,
                    component="oee_store")

    # --- opening and recovery (as edge/egress/outbox.py) -------------------------------------

    # --- public API -------------------------------------------------------------------

    def load(self, asset: str) -> SavedEngine | None:
        """The asset's engine as last saved (a full `state_dict()`), or None if never saved.
        Read on the reader connection in one read transaction (a consistent snapshot that
        never waits for the writer thread)."""
        with self._snapshot(f"load {asset}") as conn:
            row = conn.execute("SELECT head, cursor, alive FROM engines WHERE asset = ?",
                               (asset,)).fetchone()
            if row is None:
                return None
            segs = conn.execute("SELECT start_us, end_us, class, program FROM segments "
                                "WHERE asset = ? ORDER BY end_us", (asset,)).fetchall()
            counts = conn.execute("SELECT t_us, program, total, bad FROM counts "
                                  "WHERE asset = ? ORDER BY t_us, rowid", (asset,)).fetchall()
        try:
            state = json.loads(row[0])
            if not isinstance(state, dict):
                raise TypeError("head is not an object")
        except (ValueError, TypeError) as exc:
            raise OeeStoreError(f"OEE store {self.path}: head of {asset!r} malformed: "
                                f"{exc}") from exc
        state["segments"] = [list(s) for s in segs]
        state["counts"] = [list(c) for c in counts]
        return SavedEngine(state, row[1], from_us(int(row[2])))

    def last_tick(self) -> datetime | None:
        """The time of the last save that closed windows up to it (None on a new store)."""
        rows = self._read("read last_tick", "SELECT value FROM meta WHERE key = 'last_tick'", ())
        return from_us(int(rows[0][0])) if rows else None

    def save(self, deltas: Iterable[EngineDelta], windows: Iterable[ClosedWindow] = (), *,
             last_tick: datetime | None = None) -> list[ClosedWindow]:
        """Append engine deltas, store closed windows and `last_tick`, in one transaction.

        Returns the windows that were not stored before (publish those: this is what makes
        a shift end publish once). On `OeeStoreError` nothing was written.
        """
        [new] = self.apply([SaveOp(tuple(deltas), tuple(windows), last_tick)])
        assert isinstance(new, list)
        return new

    def submit(self, op: OeeOp, done: Callable[[OeeStoreResult | Exception], None]) -> None:
        """`apply` of one operation with its outcome handed to `done` at once; the gateway's
        `StoreWriter` (edge/storage/writer.py) has the same `submit`, queued."""
        try:
            [result] = self.apply([op])
        except (EdgeError, ValueError) as exc:
            done(exc)
            return
        done(result)

    def apply(self, ops: Sequence[OeeOp]) -> list[OeeStoreResult]:
        """Saves and prunes in order, in ONE transaction (what the writer thread groups);
        one result per op: the new windows of a save, the counts of a prune."""
        results: list[OeeStoreResult] = []
        pruned: list[dict[str, int]] = []
        with self._tx("save" if ops and isinstance(ops[0], SaveOp) else "prune") as conn:
            for op in ops:
                if isinstance(op, SaveOp):
                    results.append(self._save_in(conn, op))
                else:
                    gone = self._prune_in(conn, op.now)
                    results.append(gone)
                    pruned.append(gone)
        for gone in pruned:
            if any(gone.values()):
                self._log.info("oee_store_pruned", **gone)
        return results

    def _save_in(self, conn: sqlite3.Connection, op: SaveOp) -> list[ClosedWindow]:
        now = time.time()
        new: list[ClosedWindow] = []
        for d in op.deltas:
            segs, counts = d.state["segments"], d.state["counts"]
            floor = d.after
            if floor is None and (segs or counts):  # first save of a fresh engine
                floor = min([s[1] for s in segs[:1]] + [c[0] for c in counts[:1]]) - 1
            if floor is not None:
                conn.execute("DELETE FROM segments WHERE asset = ? AND end_us > ?",
                             (d.asset, floor))
                conn.execute("DELETE FROM counts WHERE asset = ? AND t_us > ?",
                             (d.asset, floor))
            conn.executemany(
                "INSERT INTO segments(asset, start_us, end_us, class, program) "
                "VALUES (?, ?, ?, ?, ?)", [(d.asset, *s) for s in segs])
            conn.executemany(
                "INSERT INTO counts(asset, t_us, program, total, bad) VALUES (?, ?, ?, ?, ?)",
                [(d.asset, *c) for c in counts])
            head = {k: v for k, v in d.state.items() if k not in ("segments", "counts")}
            conn.execute(
                "INSERT INTO engines(asset, head, cursor, alive, saved) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(asset) DO UPDATE SET head = excluded.head, "
                "cursor = excluded.cursor, alive = excluded.alive, saved = excluded.saved",
                (d.asset, json.dumps(head, separators=(",", ":")), d.cursor,
                 to_us(d.alive), now))
        for w in op.windows:
            cur = conn.execute(
                "INSERT OR IGNORE INTO windows(asset, kind, start_us, end_us, record, "
                "closed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (w.asset, w.kind, to_us(w.start), to_us(w.end),
                 json.dumps(w.record, separators=(",", ":")), now))
            if cur.rowcount == 1:
                new.append(w)
        if op.last_tick is not None:
            conn.execute("INSERT INTO meta(key, value) VALUES ('last_tick', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (str(to_us(op.last_tick)),))
        return new

    def closed_window(self, asset: str, kind: str, start: datetime) -> dict[str, Any] | None:
        """The stored record of one closed window, e.g. ("m1", "shift:early", its start)."""
        rows = self._read("read window", "SELECT record FROM windows WHERE asset = ? AND "
                          "kind = ? AND start_us = ?", (asset, kind, to_us(start)))
        return self._decode(rows[0][0]) if rows else None

    def closed_windows(self, asset: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Stored records of the asset's windows starting in [start, end), oldest first."""
        rows = self._read("read windows", "SELECT record FROM windows WHERE asset = ? AND "
                          "start_us >= ? AND start_us < ? ORDER BY start_us, kind",
                          (asset, to_us(start), to_us(end)))
        return [self._decode(r[0]) for r in rows]

    def _decode(self, text: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise OeeStoreError(f"OEE store {self.path}: window record malformed") from exc
        if not isinstance(record, dict):
            raise OeeStoreError(f"OEE store {self.path}: window record malformed")
        return record

    def forget(self, assets: Iterable[str]) -> dict[str, int]:
        """Delete every row of `assets` (engine, raw history, closed windows) in one
        transaction; returns how many rows went from each table. For machines that can
        have no OEE, e.g. energy meters rated by gateways before they were left out."""
        ids = sorted(set(assets))
        gone = dict.fromkeys(("engines", "segments", "counts", "windows"), 0)
        if not ids:
            return gone
        with self._tx("forget") as conn:
            for table in gone:
                gone[table] = sum(
                    conn.execute(f"DELETE FROM {table} WHERE asset = ?", (a,)).rowcount
                    for a in ids)
        return gone

    def prune(self, now: datetime) -> dict[str, int]:
        """Apply retention; returns how many rows went from each table.

        Raw records fully before `now - raw_retention` go (a segment still running across
        the cutoff stays whole), as do engines last alive before it (machines removed from
        the YAML); closed windows that ended before `now - window_retention` go.
        """
        [gone] = self.apply([PruneOp(now)])
        assert isinstance(gone, dict)
        return gone

    def _prune_in(self, conn: sqlite3.Connection, now: datetime) -> dict[str, int]:
        raw, win = to_us(now - self.raw_retention), to_us(now - self.window_retention)
        gone = dict.fromkeys(("segments", "counts", "engines", "windows"), 0)
        assets = [r[0] for r in conn.execute("SELECT asset FROM engines")]
        for asset in assets:  # per asset, so every delete walks an index
            gone["segments"] += conn.execute(
                "DELETE FROM segments WHERE asset = ? AND end_us <= ?", (asset, raw)).rowcount
            gone["counts"] += conn.execute(
                "DELETE FROM counts WHERE asset = ? AND t_us <= ?", (asset, raw)).rowcount
        gone["engines"] = conn.execute("DELETE FROM engines WHERE alive <= ?", (raw,)).rowcount
        gone["windows"] = conn.execute("DELETE FROM windows WHERE end_us <= ?", (win,)).rowcount
        return gone


# --- a machine's rows, moved to another worker's OEE store (edge/storage/move.py) --------
# Self-contained on purpose (its own imports): the writer-thread work on this module above
# and this addition merge without touching each other.

from collections.abc import Collection as _Collection  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

from edge.storage.move import MachineRows as _MachineRows  # noqa: E402
from edge.storage.move import MachineState as _MachineState  # noqa: E402
from edge.storage.move import Moved as _Moved  # noqa: E402


class OeeMachines(_MachineState):
    """A machine's OEE engine (head, segments, counts) and closed windows in an OEE store
    file, to move them when the worker count changes. On a clash (the target started the
    machine afresh under an earlier gateway) the engine saved later wins. The target's
    `last_tick` becomes the earlier of the two, so shifts that ended while the gateway was
    down close for the moved machines too (a window already stored is not published again:
    `save` reports only new windows)."""

    filename = FILENAME
    label = "OEE store"
    error = OeeStoreError
    _TABLES = ("engines", "segments", "counts", "windows")

    def prepare(self, path: _Path) -> None:
        OeeStore(path).close()

    def machines(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for t in self._TABLES
                for r in conn.execute(f"SELECT DISTINCT asset FROM {t}")}

    def rows(self, conn: sqlite3.Connection, machines: _Collection[str]
             ) -> list[_MachineRows]:
        ids = tuple(sorted(machines))
        return [
            _MachineRows("engines", "asset", ids, ("asset", "head", "cursor", "alive", "saved"),
                         primary=("asset",), newer="alive"),
            _MachineRows("segments", "asset", ids,
                         ("asset", "end_us", "start_us", "class", "program"),
                         primary=("asset", "end_us")),
            _MachineRows("counts", "asset", ids, ("asset", "t_us", "program", "total", "bad"),
                         order="asset, t_us, rowid"),
            _MachineRows("windows", "asset", ids,
                         ("asset", "kind", "start_us", "end_us", "record", "closed_at"),
                         primary=("asset", "kind", "start_us")),
        ]

    def after_copy(self, source: sqlite3.Connection, target: sqlite3.Connection,
                   moved: _Moved) -> None:
        row = source.execute("SELECT value FROM meta WHERE key = 'last_tick'").fetchone()
        if row is None:
            return
        target.execute("INSERT INTO meta(key, value) VALUES ('last_tick', ?) ON CONFLICT(key) "
                       "DO UPDATE SET value = min(CAST(value AS INTEGER), "
                       "CAST(excluded.value AS INTEGER))", (row[0],))
