"""The SQLite WAL database under both of the gateway's stores (outbox, OEE store).

One way to open, check and recover: WAL mode, `quick_check` at open, a format version in a
`meta` table (a newer file is refused, never discarded), and a corrupt file moved aside with
its WAL (never silently deleted) so the gateway starts afresh and the evidence stays. sqlite3
errors leave as the store's own EdgeError, or ConfigurationError when the directory is not
writable. Subclasses give the schema and the words for their logs and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import structlog

from models.errors import ConfigurationError, EdgeError
from models.logger import Logger

CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
NOT_WRITABLE_CODES = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY,
                      sqlite3.SQLITE_AUTH}
SQLITE_HEADER = b"SQLite format 3\x00"
WAL_AUTOCHECKPOINT = 256  # pages (1 MiB at SQLite's default 4 KiB page): SQLite's 1000 was 4 MiB
JOURNAL_SIZE_LIMIT = 2 * 2**20  # bytes the WAL file keeps after a checkpoint
CHECKPOINT_EVERY = 60.0  # seconds between WAL truncations by `checkpoint_loop`


def sqlite_code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF  # primary result code


class CorruptError(Exception):
    """quick_check or the file header found damage that did not raise by itself."""


class WalStore:
    label: ClassVar[str]  # "outbox", "OEE store": starts every message
    schema: ClassVar[str]  # CREATE ... IF NOT EXISTS statements, incl. a `meta` table
    format_version: ClassVar[int]
    error_class: ClassVar[type[EdgeError]]
    corrupt_event: ClassVar[str]  # log event when a corrupt file is moved aside
    corrupt_consequence: ClassVar[str]

    path: Path
    durable: bool
    _busy_timeout: float
    _log: Logger
    _conn: sqlite3.Connection | None
    _lock: threading.Lock
    _reader: sqlite3.Connection | None
    _read_lock: threading.Lock

    def _start(self, path: str | os.PathLike[str], *, durable: bool, busy_timeout: float,
               logger: Logger | None, component: str) -> None:
        """What every store's constructor does: remember the settings, create the directory
        (0700), open (checking, recovering) the database."""
        self.path = Path(path)
        self.durable = durable
        self._busy_timeout = busy_timeout
        self._log = logger or structlog.get_logger().bind(component=component)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigurationError(f"{self.label} {self.path}: cannot create its directory: "
                                     f"{exc.strerror or exc}") from exc
        self._conn = self._open()
        self._reader = self._open_reader()

    def _open_reader(self) -> sqlite3.Connection:
        """A second, read-only connection for `_read`: in WAL mode a reader never waits for
        the writer, so reads on the event loop do not queue behind a transaction or a
        checkpoint running on the store's writer thread (edge/storage/writer.py)."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self._busy_timeout)
            conn.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc, "open reader") from exc
        return conn

    def _error(self, exc: sqlite3.Error, doing: str) -> EdgeError:
        msg = f"{self.label} {self.path}: {doing}: {exc}"
        if sqlite_code(exc) in NOT_WRITABLE_CODES:
            return ConfigurationError(msg + " (is the state directory writable?)")
        return self.error_class(msg)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self.error_class(f"{self.label} {self.path}: WAL mode unavailable ({mode})")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            # WAL growth bounded (small eMMC/SD disks): checkpoint every WAL_AUTOCHECKPOINT
            # pages, truncate the file back to JOURNAL_SIZE_LIMIT after each checkpoint, and
            # to zero when idle (`truncate_wal`, run by `checkpoint_loop`).
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise CorruptError("; ".join(problems[:5]))
            conn.executescript(f"BEGIN IMMEDIATE; {self.schema} COMMIT;")
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('format', ?), ('created', ?)",
                             (str(self.format_version), str(time.time())))
            elif row[0] != str(self.format_version):
                raise ConfigurationError(
                    f"{self.label} {self.path}: format {row[0]!r}, this gateway reads "
                    f"{self.format_version}; refusing to discard it (was the gateway downgraded?)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            # Checked before SQLite sees the file: closing a connection to a file that is
            # not a database deletes the `-wal` beside it, which we keep for forensics.
            with self.path.open("rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
            if head and head != SQLITE_HEADER:
                raise CorruptError("not an SQLite database (bad header)")
            return self._connect()
        except FileNotFoundError:
            return self._open_fresh()
        except OSError as exc:
            raise ConfigurationError(f"{self.label} {self.path}: cannot read it: "
                                     f"{exc.strerror or exc}") from exc
        except CorruptError as exc:
            reason = str(exc)
        except sqlite3.Error as exc:
            if sqlite_code(exc) not in CORRUPT_CODES:
                raise self._error(exc, "open") from exc
            reason = str(exc)
        aside = self._move_aside()
        self._log.error(self.corrupt_event, path=str(self.path), moved_to=str(aside),
                        reason=reason, consequence=self.corrupt_consequence)
        return self._open_fresh()

    def _open_fresh(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except CorruptError as exc:
            raise self.error_class(
                f"{self.label} {self.path}: fresh database unusable: {exc}") from exc
        except sqlite3.Error as exc:
            raise self._error(exc, "create") from exc

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}")
        try:
            self.path.replace(aside)
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists():
                wal.replace(aside.with_name(aside.name + "-wal"))
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + "-shm").unlink()
        except OSError as exc:
            raise ConfigurationError(f"{self.label} {self.path}: corrupt, and cannot move it "
                                     f"aside: {exc.strerror or exc}") from exc
        return aside

    def truncate_wal(self) -> bool:
        """Checkpoint the whole WAL into the database and truncate the `-wal` file to zero
        bytes; False when SQLite could not finish (busy) or the store is closed.

        Auto-checkpoints only ever truncate down to `JOURNAL_SIZE_LIMIT`; on a small disk
        those megabytes matter, and the counter and chain updates made even while nothing
        is stored would otherwise keep a WAL of that size around for good."""
        with self._lock:
            if self._conn is None:
                return False
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                return False  # e.g. disk full; the next round tries again
            return not busy

    def close(self) -> None:
        """Close the database (idempotent); the last connection checkpoints the WAL."""
        with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA optimize")
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; sqlite3 errors leave as the store's
        EdgeError, everything rolled back."""
        with self._lock, self._transaction(doing) as conn:
            yield conn

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """`_tx` for a caller that already holds `_lock` (the outbox, which reads and
        decides under the same lock)."""
        conn = self._require()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, doing) from exc
            raise

    def _read(self, doing: str, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Rows of one query on the reader connection: committed data only, never waiting
        for a write transaction."""
        with self._read_lock:
            if self._reader is None:
                raise self.error_class(f"{self.label} {self.path}: closed")
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc

    @contextlib.contextmanager
    def _snapshot(self, doing: str) -> Iterator[sqlite3.Connection]:
        """The reader connection inside one read transaction: several queries that see the
        same committed state."""
        with self._read_lock:
            if self._reader is None:
                raise self.error_class(f"{self.label} {self.path}: closed")
            conn = self._reader
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self.error_class(f"{self.label} {self.path}: closed")
        return self._conn


async def checkpoint_loop(
    stores: Callable[[], Iterable[WalStore]], every: float = CHECKPOINT_EVERY
) -> None:
    """Truncate every store's WAL once per `every` seconds. `stores` is asked each round,
    since a reload may replace a store. A checkpoint of a WAL that is at most
    `JOURNAL_SIZE_LIMIT` long holds the calling thread for milliseconds (with its fsyncs:
    tens of ms on flash), so it runs in a worker thread, never on the event loop."""
    while True:
        await asyncio.sleep(every)
        for store in stores():
            await asyncio.to_thread(store.truncate_wal)
