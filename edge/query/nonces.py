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

The memory is bounded: at most `limit` nonces per platform. A platform that reaches it gets
`rate_limited` until old nonces expire; nothing is ever forgotten early, which would reopen
the replay window.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sqlite3
import time
from collections.abc import Callable
from typing import ClassVar

from edge.storage.wal import WalStore
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
    ) -> None:
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

    def _stored(self, platform: str, nonce: str, expires: float) -> None:
        """A write that fails (disk full) keeps the nonce in memory, so the running process
        still refuses the replay; only a restart during the failure could forget it. Logged
        once per failure period, not per request."""
        with self._lock:
            try:
                self._require().execute(
                    "INSERT OR REPLACE INTO nonces(platform, nonce, expires) VALUES (?, ?, ?)",
                    (platform, nonce, expires),
                )
            except (sqlite3.Error, NonceStoreError) as exc:
                if not self._failing:
                    self._failing = True
                    self._log.error(
                        "query_nonces_not_persisted",
                        path=str(self.path),
                        error=str(exc),
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
        with self._lock, contextlib.suppress(sqlite3.Error, NonceStoreError):
            self._require().execute("DELETE FROM nonces WHERE expires < ?", (now,))
