"""Moving machines' rows from one store file to another, crash-safe and idempotent.

Why: with `run --workers N` each worker keeps its machines' outbox, OEE, parts and bookings
in its own `worker-<i>/` files, and a machine's worker is a hash of its id modulo N. When N
changes, a machine's chains, pending envelopes, OEE history, part sequence and bookings must
follow it to its new worker's files (edge/daemon/repartition.py), or its chains restart at
seq 1 and what was pending is never sent.

How, for one source file and one target file: the source is locked for writing first
(`BEGIN IMMEDIATE`, so no other process, e.g. `edge-gateway bookings accept`, changes the
machine's rows between copy and delete); the machine's rows are copied into the target in one
transaction, which commits (synchronous=FULL: on disk before anything is deleted); then they
are deleted from the source in one transaction, which commits. A kill between the two
commits leaves the same rows in both files; running the move again (the gateway does before
any worker starts) copies nothing the target already holds, byte for byte, and deletes the
source's copy. So a row is never lost, and never held twice by files a running gateway
reads: no process sends until the move has finished.

What "already holds" means per table (`MachineRows`): a table with a primary key compares
the row under that key; a rowid table (the outbox's envelopes, OEE counts, booking events)
compares every copied column, as a multiset. A row the target holds *differently* under the
same key is a clash: a state directory whose worker count an earlier gateway changed, whose
new worker started the machine afresh. The target's row stays unless `newer` says the
source's is later; clashes are counted for the caller to log.

Copying goes through Python in source order (`order`), so a rowid/AUTOINCREMENT table keeps
the machine's rows in their order after the target's own: an outbox topic is never
reordered. Plain sqlite3 connections: this runs while no gateway process has the files open
(before the workers start), never on a store's writer thread.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.errors import EdgeError

CHUNK = 500
"""Values bound per `IN (...)`: below SQLite's limit of bound parameters on old builds."""
BUSY_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class MachineRows:
    """One table's rows that move: those whose `key` column is one of `values`."""

    table: str
    key: str
    values: tuple[str, ...]
    columns: tuple[str, ...]
    """Copied columns; an AUTOINCREMENT id is left out, so the target numbers the rows after
    its own, in `order`."""
    primary: tuple[str, ...] = ()
    """The table's primary key; () for a rowid table (rows compared by all `columns`)."""
    newer: str | None = None
    """With `primary`: on a clash the row with the larger value here wins (else the
    target's stays)."""
    order: str = ""
    """ORDER BY of the copy; default the primary key, else the rowid (insertion order)."""
    tally: str | None = None
    """Count copied and deleted rows per value of this column (`Moved.copied_by`)."""


@dataclass(slots=True)
class Moved:
    """What one move did: rows copied per table (0 for rows the target already held),
    clashes per table, and the `tally` counts of rows copied and deleted."""

    copied: Counter[str] = field(default_factory=Counter)
    deleted: Counter[str] = field(default_factory=Counter)
    clashes: Counter[str] = field(default_factory=Counter)
    copied_by: Counter[str] = field(default_factory=Counter)
    deleted_by: Counter[str] = field(default_factory=Counter)


class MachineState(ABC):
    """A store's per-machine rows, as the move sees them; each store module has one.

    Subclasses name the file, the words for errors, which machines a file holds, which rows
    are a machine's, how to create and check a file (through the store's own class:
    schema, format version, corrupt-file recovery), and anything to adjust beside the rows
    (`after_copy`, `after_delete`: hooks most stores leave empty)."""

    filename: ClassVar[str]
    label: ClassVar[str]
    error: ClassVar[type[EdgeError]]

    def __init__(self) -> None:
        self._prepared: set[Path] = set()  # `prepare` reads the whole file: once is enough

    @abstractmethod
    def prepare(self, path: Path) -> None:
        """Create `path` if missing, else check and upgrade it, as the store opens it."""

    @abstractmethod
    def machines(self, conn: sqlite3.Connection) -> set[str]:
        """Every machine with a row in the file."""

    @abstractmethod
    def rows(self, conn: sqlite3.Connection, machines: Collection[str]) -> list[MachineRows]:
        """The tables' rows of `machines`, in the order they are copied."""

    def after_copy(self, source: sqlite3.Connection, target: sqlite3.Connection,  # noqa: B027
                   moved: Moved) -> None:
        """Inside the target's transaction, after the rows were copied."""

    def after_delete(self, source: sqlite3.Connection, moved: Moved) -> None:  # noqa: B027
        """Inside the source's transaction, after the rows were deleted."""

    def stored_machines(self, path: Path) -> set[str]:
        """`machines` of the file at `path`; a file SQLite cannot read is recovered by
        `prepare` (moved aside as the store would) and read again."""
        try:
            with closing(_connect(path)) as conn:
                return self.machines(conn)
        except sqlite3.Error:
            self.prepare(path)
        try:
            with closing(_connect(path)) as conn:
                return self.machines(conn)
        except sqlite3.Error as exc:
            raise self.error(f"{self.label} {path}: read machines: {exc}") from exc

    def holds_rows(self, path: Path) -> bool:
        """Whether the file still holds any row of a table the move empties (what is left
        in a store no process opens any more)."""
        try:
            with closing(_connect(path)) as conn:
                return any(conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
                           for t in self.tables(conn))
        except sqlite3.Error as exc:
            raise self.error(f"{self.label} {path}: read: {exc}") from exc

    def tables(self, conn: sqlite3.Connection) -> list[str]:
        """The tables whose rows belong to machines (or are left behind when they do not)."""
        return sorted({spec.table for spec in self.rows(conn, ())})

    def move(self, source: Path, target: Path, machines: Collection[str]) -> Moved:
        """Move `machines`' rows from `source` to `target` (see the module docstring)."""
        for path in (source, target):
            if path not in self._prepared or not path.exists():
                self.prepare(path)
                self._prepared.add(path)
        moved = Moved()
        try:
            src = _connect(source)
        except sqlite3.Error as exc:
            raise self.error(f"{self.label} {source}: open: {exc}") from exc
        try:
            dst = _connect(target)
        except sqlite3.Error as exc:
            src.close()
            raise self.error(f"{self.label} {target}: open: {exc}") from exc
        try:
            src.execute("BEGIN IMMEDIATE")
            specs = self.rows(src, machines)
            dst.execute("BEGIN IMMEDIATE")
            for spec in specs:
                _copy(src, dst, spec, moved)
            self.after_copy(src, dst, moved)
            dst.execute("COMMIT")
            for spec in specs:
                _delete(src, spec, moved)
            self.after_delete(src, moved)
            src.execute("COMMIT")
        except sqlite3.Error as exc:
            for conn in (dst, src):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise self.error(f"{self.label}: move of {sorted(machines)} from {source} to "
                             f"{target}: {exc}") from exc
        finally:
            src.close()
            dst.close()
        return moved


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise sqlite3.OperationalError(f"{path}: no such file")
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    conn.execute("PRAGMA synchronous=FULL")  # the copy is on disk before the delete
    return conn


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def _select(conn: sqlite3.Connection, spec: MachineRows, chunk: Sequence[str]
            ) -> sqlite3.Cursor:
    marks = ",".join("?" * len(chunk))
    return conn.execute(f"SELECT {', '.join(spec.columns)} FROM {spec.table} "
                        f"WHERE {spec.key} IN ({marks}) ORDER BY "
                        f"{spec.order or ', '.join(spec.primary) or 'rowid'}", tuple(chunk))


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, spec: MachineRows,
          moved: Moved) -> None:
    cols = ", ".join(spec.columns)
    insert = (f"INSERT OR REPLACE INTO {spec.table}({cols}) "
              f"VALUES ({','.join('?' * len(spec.columns))})")
    tally = spec.columns.index(spec.tally) if spec.tally else None
    for chunk in _chunks(spec.values):
        if spec.primary:
            rows = _new_by_key(dst, spec, _select(src, spec, chunk), moved)
        else:
            held = Counter(tuple(r) for r in _select(dst, spec, chunk))
            rows = _new_rows(_select(src, spec, chunk), held)
        for row in rows:
            dst.execute(insert, row)
            moved.copied[spec.table] += 1
            if tally is not None:
                moved.copied_by[str(row[tally])] += 1


def _new_rows(rows: Iterator[Any], held: Counter[tuple[Any, ...]]
              ) -> Iterator[tuple[Any, ...]]:
    """Rows of a rowid table the target does not hold yet (a multiset difference)."""
    for r in rows:
        row = tuple(r)
        if held[row]:
            held[row] -= 1
            continue
        yield row


def _new_by_key(dst: sqlite3.Connection, spec: MachineRows, rows: Iterator[Any],
                moved: Moved) -> Iterator[tuple[Any, ...]]:
    """Rows of a keyed table to write: absent from the target, or (on a clash) newer."""
    at = [spec.columns.index(c) for c in spec.primary]
    where = " AND ".join(f"{c} = ?" for c in spec.primary)
    newer = spec.columns.index(spec.newer) if spec.newer else None
    for r in rows:
        row = tuple(r)
        have = dst.execute(f"SELECT {', '.join(spec.columns)} FROM {spec.table} WHERE {where}",
                           tuple(row[i] for i in at)).fetchone()
        if have is None:
            yield row
        elif tuple(have) != row:
            moved.clashes[spec.table] += 1
            if newer is not None and row[newer] > have[newer]:
                yield row


def _delete(src: sqlite3.Connection, spec: MachineRows, moved: Moved) -> None:
    for chunk in _chunks(spec.values):
        marks = ",".join("?" * len(chunk))
        where = f"{spec.key} IN ({marks})"
        if spec.tally:
            for value, n in src.execute(f"SELECT {spec.tally}, count(*) FROM {spec.table} "
                                        f"WHERE {where} GROUP BY {spec.tally}", tuple(chunk)):
                moved.deleted_by[str(value)] += int(n)
        moved.deleted[spec.table] += src.execute(
            f"DELETE FROM {spec.table} WHERE {where}", tuple(chunk)).rowcount


__all__ = ["BUSY_TIMEOUT", "CHUNK", "MachineRows", "MachineState", "Moved"]
