"""The nonces of accepted query requests, remembered until their `ts` leaves the window.

A request is accepted when its `ts` is within `max_skew_seconds` of the gateway's clock and
its nonce has not been seen; so a nonce must be remembered until `ts + max_skew_seconds`
(after that the `ts` check refuses a replay by itself) and no longer. `NonceMemory` keeps
them in memory; `NonceStore` also writes them to a small SQLite file in the state directory,
so that a request captured before a restart is still refused after it (issue 12, item 11;
the alternative, refusing every `ts` before the process start, would also refuse honest
requests from a platform whose clock is a few seconds behind, for one window after every
restart). The file uses synchronous=NORMAL: a process crash loses nothing, a power cut may
lose the last second of nonces (see docs/protocol.md).

Where the writes happen (issue 17, item 2): in the gateway, on its one store writer thread
(edge/storage/writer.py), never on the event loop. A signed query flood used to commit one
transaction per request on the loop that also polls the machines, and a WAL checkpoint
inside one of them stalled every poll due then. Now the check (`seen`) and the memory
(`remember`) stay on the loop, synchronous, so a replay arriving a microsecond later is
refused; the row is queued, several requests' rows share one transaction, and the reply
waits for it (`QueryHandler` awaits `NonceMemory.written()` before publishing), so a
request that was answered is refused after a SIGKILL. Without a writer thread (tools,
tests) the row is written inline, as before.

The memory is bounded: at most `limit` nonces per platform. A platform that reaches it gets
`rate_limited` until old nonces expire; nothing is ever forgotten early, which would reopen
the replay window.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from edge.storage.wal import WalStore
from edge.storage.writer import StoreWriter, WriterStats, WriterThread
from models.errors import EdgeError
from models.logger import Logger

NONCE_FILE = "query-nonces.sqlite"
DEFAULT_LIMIT = 100_000  # per platform; the default rate (5/s) over a 120 s window needs 620


class NonceMemory:
    """Per platform: nonce -> expiry (unix seconds), with a heap to drop the expired ones."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._expiry: dict[str, dict[str, float]] = {}
        self._heap: dict[str, list[tuple[float, str]]] = {}

    def seen(self, platform: str, nonce: str, now: float) -> bool:
        """Whether `nonce` is remembered for `platform` (expired ones are forgotten first)."""
        self._expire(platform, now)
        return nonce in self._expiry.get(platform, {})

    def remember(self, platform: str, nonce: str, expires: float, now: float) -> bool:
        """Remember until `expires`; False (nothing remembered) when the platform is full."""
        self._expire(platform, now)
        known = self._expiry.setdefault(platform, {})
        if len(known) >= self.limit:
            return False
        known[nonce] = expires
        heapq.heappush(self._heap.setdefault(platform, []), (expires, nonce))
        self._stored(platform, nonce, expires)
        return True

    def count(self, platform: str) -> int:
        return len(self._expiry.get(platform, {}))

    def written(self) -> asyncio.Future[None] | None:
        """The write of the newest nonce remembered, while it is not committed yet (None:
        nothing waits; always so in memory). Writes commit in the order they were queued,
        so once it is done every nonce remembered before it is on disk too."""
        return None

    def _expire(self, platform: str, now: float) -> None:
        heap, known = self._heap.get(platform), self._expiry.get(platform)
        if not heap or known is None:
            return
        while heap and heap[0][0] < now:
            expires, nonce = heapq.heappop(heap)
            if known.get(nonce) == expires:
                del known[nonce]
        self._expired(now)

    def _load(self, platform: str, nonce: str, expires: float) -> None:
        self._expiry.setdefault(platform, {})[nonce] = expires
        heapq.heappush(self._heap.setdefault(platform, []), (expires, nonce))

    # hooks of the persistent store
    def _stored(self, platform: str, nonce: str, expires: float) -> None:
        pass

    def _expired(self, now: float) -> None:
        pass


class NonceStoreError(EdgeError):
    """The nonce file failed (disk full, I/O error, locked): the request is refused."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces(
    platform TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY(platform, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expires ON nonces(expires);
"""


@dataclass(frozen=True, slots=True)
class Remembered:
    """One accepted request's nonce, to keep on disk until `expires`."""

    platform: str
    nonce: str
    expires: float


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete the nonces that expired before `before` (their `ts` check refuses them now)."""

    before: float


NonceOp = Remembered | Forget


class NonceStore(WalStore, NonceMemory):
    """`NonceMemory` written through to `path` (SQLite, WAL) and reloaded at start."""

    label = "nonce store"
    schema = _SCHEMA
    format_version = 1
    error_class = NonceStoreError
    corrupt_event = "query_nonces_corrupt_moved_aside"
    corrupt_consequence = "requests of the last window could be replayed once"
    prune_every: ClassVar[float] = 10.0

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limit: int = DEFAULT_LIMIT,
        logger: Logger | None = None,
        wall_clock: Callable[[], float] = time.time,
        writes: WriterThread | None = None,
    ) -> None:
        """`writes`: the thread that commits the rows (the gateway's store writer); None
        writes them inline, on the caller's thread."""
        NonceMemory.__init__(self, limit)
        self._start(path, durable=False, busy_timeout=5.0, logger=logger, component="nonces")
        self._pruned = 0.0
        self._failing = False
        now = wall_clock()
        with self._tx("load") as conn:
            conn.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            for platform, nonce, expires in conn.execute(
                "SELECT platform, nonce, expires FROM nonces"
            ):
                self._load(str(platform), str(nonce), float(expires))
        self._writer: StoreWriter[NonceOp, None] | None = (
            None if writes is None else StoreWriter(self, writes))
        self._pending: asyncio.Future[None] | None = None

    def apply(self, ops: Sequence[NonceOp]) -> list[None]:
        """Several nonces (and prunes) in one transaction, in order (`Batched`, for the
        writer thread); NonceStoreError when it failed, nothing of it written."""
        with self._tx("record nonces") as conn:
            for op in ops:
                if isinstance(op, Remembered):
                    conn.execute(
                        "INSERT OR REPLACE INTO nonces(platform, nonce, expires) "
                        "VALUES (?, ?, ?)", (op.platform, op.nonce, op.expires))
                else:
                    conn.execute("DELETE FROM nonces WHERE expires < ?", (op.before,))
        return [None] * len(ops)

    @property
    def writer_stats(self) -> WriterStats | None:
        """Transactions and nonces committed by the writer thread (None: written inline)."""
        return None if self._writer is None else self._writer.stats

    def written(self) -> asyncio.Future[None] | None:
        pending = self._pending
        return None if pending is None or pending.done() else pending

    def _stored(self, platform: str, nonce: str, expires: float) -> None:
        """A write that fails (disk full) keeps the nonce in memory, so the running process
        still refuses the replay; only a restart during the failure could forget it. Logged
        once per failure period, not per request."""
        op = Remembered(platform, nonce, expires)
        if self._writer is None:
            try:
                self.apply([op])
            except EdgeError as exc:  # NonceStoreError, or ConfigurationError (read-only)
                self._outcome(None, exc)
            else:
                self._outcome(None, None)
            return
        pending = asyncio.get_running_loop().create_future()
        self._pending = pending
        self._writer.submit(op, partial(self._outcome, pending))

    def _outcome(self, pending: asyncio.Future[None] | None, result: object) -> None:
        """How a nonce's write ended (on the event loop): the request waiting for it may be
        answered either way (a failed write still refuses the replay while this process
        lives); a failure is logged when it starts and when it ends."""
        if pending is not None and not pending.done():
            pending.set_result(None)
        if isinstance(result, Exception):
            if not self._failing:
                self._failing = True
                self._log.error(
                    "query_nonces_not_persisted",
                    path=str(self.path),
                    error=str(result),
                    consequence="kept in memory only until the file is writable again",
                )
            return
        if self._failing:
            self._failing = False
            self._log.info("query_nonces_persisted_again", path=str(self.path))

    def _expired(self, now: float) -> None:
        if now - self._pruned < self.prune_every:
            return
        self._pruned = now
        # a failure is retried in `prune_every`; a full disk is logged by `_stored`
        if self._writer is not None:
            self._writer.submit(Forget(now), None)
            return
        with contextlib.suppress(sqlite3.Error, EdgeError):
            self.apply([Forget(now)])
