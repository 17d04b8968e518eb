"""Store-and-forward outbox: signed envelopes wait on disk until each broker PUBACKs them.

    sealer --(seq, prev, signed bytes)--> Outbox.append --> one row per destination
    DestinationSender: peek(dest, after_id) --> publish QoS 1 --> PUBACK --> ack(dest, ids)

Why SQLite: one file, atomic multi-row transactions (the envelope rows *and* the topic's
chain head commit together, so after a crash `seq`/`prev` never skip or repeat a stored
envelope), crash recovery done by a library tested far beyond what a hand-rolled segment
log would get, and it ships with Python. Deleting only what a broker acknowledged (as
Vector's disk buffer does) makes delivery at-least-once: after a crash between PUBACK and
`ack` a platform sees a duplicate, which it recognises by (`topic`, `seq`).

File format, version 1 (`outbox.sqlite3` in the state directory; WAL mode, so
`outbox.sqlite3-wal` and `-shm` live beside it while it is open)::

    meta(key TEXT PRIMARY KEY, value TEXT)        'format' -> '1', 'created' -> unix time
    envelopes(id INTEGER PRIMARY KEY AUTOINCREMENT,
              dest TEXT, topic TEXT, payload BLOB,  one row per (envelope, destination);
              retain INTEGER, created REAL,         payload = the signed JWS bytes as sent;
              bytes INTEGER)                        bytes = len(payload) + len(topic utf-8)
    INDEX envelopes_dest_id ON envelopes(dest, id, bytes)
    chain(topic TEXT PRIMARY KEY, seq INTEGER, hash TEXT)
                                                   last stored seq per topic and its
                                                   signing_input_hash (edge.signing.jws)
    counters(dest TEXT, name TEXT, value INTEGER, PRIMARY KEY(dest, name))
                                                   appended | acked | dropped | rejected

`AUTOINCREMENT` because ids must never be reused: a sender's `after_id` cursor and its
in-flight set would otherwise confuse a new row with an acknowledged one once the table
drains. The index carries `bytes` so eviction scans and the startup tally of pending bytes
never read payload pages. A payload is stored once per destination: destinations are few
(one to three platforms) and separate rows keep caps and eviction per destination trivial.
Counters are exact and persistent: for every destination
`appended == pending + acked + dropped`, and `rejected` counts envelopes never stored.

Durability: WAL with `synchronous=NORMAL` (default). Every commit is atomic and survives a
process crash (SIGKILL, OOM kill); after a power cut or kernel panic the database is still
consistent, but the last transactions since the previous WAL sync (at most one
auto-checkpoint, about 1 MiB: edge.storage.wal) may be lost. The honest consequence: an
envelope that was published and then lost this way gets its `seq` issued again with other
content, which a platform sees as a fork of the chain at that point. `durable=True` selects
`synchronous=FULL`, an fsync per append, which rules that out at the price of latency and
flash wear on SD/eMMC gateways; choose it where power is unreliable and writes are rare.

Caps: each destination has an `OutboxCap`. `drop_oldest` evicts that destination's oldest
rows until the new one fits (counted as `dropped`); `reject_new` refuses the new row
(`rejected`). `dropped` means "deleted without a PUBACK and never handed to a broker by this
process": rows a sender has claimed (`claim`: published and not yet acknowledged, or
withdrawn when the link dropped while they may have been on the wire) are never evicted, and
a row evicted after `peek` is refused by `claim`, so the sender skips it. A row larger than
the whole cap is refused under either policy. When the free space of the file system is
below `min_free_disk_bytes`, the cap shrinks to what the destination already holds, so its
backlog stops growing (freed pages are reused) and a full disk never wedges the gateway; a
destination whose broker is connected keeps at least `LIVE_WINDOW_BYTES` (1 MiB), so live
traffic always flows: its rows are written, sent and deleted on PUBACK. With `drop_oldest` a
live row evicts the oldest backlog row when the destination holds more than that; with
`reject_new` a live row waits until the backlog has drained below it. Caps count logical
bytes; the file is larger by SQLite's page overhead (see bench/bench_outbox.py) and never
shrinks by itself.

`historical` (docs/protocol.md, "Store-and-forward and `historical`"): the body is signed
at sealing time, before anyone knows whether it will be delivered late, and one sealed
envelope fans out to several destinations, some connected and some not. So the signed
`historical` is true only when none of the envelope's destinations was connected when it
was sealed (`edge/egress/sealer.py`), and the *sender* marks a replay
(`edge/egress/sender.py`): a row written by an earlier process (id at most
`last_id_at_open`), or sealed before the sender last saw its link come up, is published
with the unsigned MQTT 5 user property `historical=true`. The signed `created` lets any
platform, v3.1.1 included, check lateness itself. The outbox stores rows as sealed and
knows nothing of either mark.

Threading: the API is synchronous and meant to be called on the event loop thread. With
WAL+NORMAL a commit is a write into the page cache (p50 about 40 us, p99 about 0.3-0.4 ms
with 1 KiB envelopes; bench/bench_outbox.py), cheaper than a hop to a worker thread, and
calling inline keeps append/ack order equal to program order without extra machinery. The
cost: about once per 1 MiB written, the WAL auto-checkpoint (with its fsyncs) holds one
call for a few milliseconds (5-15 ms on the bench host). Calls are serialised by a lock, so
a caller that enables `durable=True` on slow flash may move them to `asyncio.to_thread`
(from one task, to keep order) without other changes.

Recovery: on open, `PRAGMA quick_check` runs; a file SQLite calls corrupt or not a
database is renamed to `outbox.sqlite3.corrupt-<UTC timestamp>` (its WAL beside it as
`...-wal`, so SQLite can still open the pair for forensics), an error is logged with both
paths, and a fresh outbox starts: chains restart at seq 1, which platforms see. A busy,
unreadable or read-only file is never moved aside: those raise `ConfigurationError`
(permissions, path) or `OutboxError` (locked by another process, I/O error, disk full).
A file written by a newer format raises `ConfigurationError` rather than being discarded.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from edge.signing.jws import ChainState, b64url_decode
from edge.storage.wal import (
    WalStore,
)
from models.errors import ConfigurationError, EdgeError
from models.logger import Logger

__all__ = [
    "COUNTER_NAMES",
    "FILENAME",
    "FORMAT_VERSION",
    "Outbox",
    "OutboxCap",
    "OutboxError",
    "OutboxRow",
    "Policy",
]

FORMAT_VERSION = 1
FILENAME = "outbox.sqlite3"
COUNTER_NAMES = ("appended", "acked", "dropped", "rejected")
Policy = Literal["drop_oldest", "reject_new"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes(
    id INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL,
    bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_dest_id ON envelopes(dest, id, bytes);
CREATE TABLE IF NOT EXISTS chain(
    topic TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(
    dest TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY(dest, name)) WITHOUT ROWID;
"""
_BUMP = ("INSERT INTO counters(dest, name, value) VALUES (?, ?, ?) "
         "ON CONFLICT(dest, name) DO UPDATE SET value = value + excluded.value")
_ACK_CHUNK = 500  # stays below SQLite's default limit of bound parameters per statement
_RECOVERED = 0.9  # "full" ends once pending bytes fall below this share of the cap
LIVE_WINDOW_BYTES = 2**20
"""What a connected destination may hold below the free-disk floor: far more than the
sender's in-flight window, small enough to fit on any disk the gateway can run from."""


class OutboxError(EdgeError):
    """The outbox database failed: disk full, I/O error, locked by another process, closed.

    From `append` it means nothing was written: the caller logs it and drops the envelope
    (the chain did not advance, so the next envelope reuses the seq; platforms see no gap).
    """


@dataclass(frozen=True, slots=True)
class OutboxCap:
    """Per-destination limit: at most `max_bytes` pending, `policy` when full, and the
    free-disk floor below which the destination stops growing."""

    max_bytes: int
    policy: Policy = "drop_oldest"
    min_free_disk_bytes: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.min_free_disk_bytes < 0:
            raise ConfigurationError(f"outbox cap must be positive: {self!r}")
        if self.policy not in ("drop_oldest", "reject_new"):
            raise ConfigurationError(f"outbox policy must be drop_oldest or reject_new: "
                                     f"{self.policy!r}")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored envelope for one destination; `created` is unix time at append."""

    id: int
    topic: str
    payload: bytes
    retain: bool
    created: float


class Outbox(WalStore):
    """The SQLite outbox at `path` (a file; its directory is created 0700 if missing).

    `caps` names every destination `append` may target; rows of other destinations found on
    disk are kept and logged. `durable` selects synchronous=FULL (see the module docstring);
    `busy_timeout` is how long to wait for another process holding the file before raising
    `OutboxError`; `logger` is a structlog-like logger (one line per state change, never
    one per envelope).
    """

    label = "outbox"
    schema = _SCHEMA
    format_version = FORMAT_VERSION
    error_class = OutboxError
    corrupt_event = "outbox_corrupt_moved_aside"
    corrupt_consequence = "pending envelopes and chains start afresh"

    def __init__(self, path: str | os.PathLike[str], *, caps: Mapping[str, OutboxCap],
                 durable: bool = False, busy_timeout: float = 5.0,
                 logger: Logger | None = None) -> None:
        self._caps = dict(caps)
        self._pending: dict[str, tuple[int, int]] = {}
        self._full: set[str] = set()
        self._disk_low: set[str] = set()
        self._start(path, durable=durable, busy_timeout=busy_timeout, logger=logger,
                    component="outbox")
        self.opened_at = time.time()
        """Unix time this process opened the outbox; older rows were buffered earlier."""
        # ids each destination's sender has claimed (`claim`): eviction leaves them alone
        self._claimed: dict[str, set[int]] = {}
        conn = self._require()
        try:
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'envelopes'").fetchone()
            for dest, count, size in conn.execute(
                    "SELECT dest, count(*), sum(bytes) FROM envelopes GROUP BY dest"):
                self._pending[dest] = (int(count), int(size))
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc, "read state") from exc
        self.last_id_at_open: int = int(row[0]) if row else 0
        """Highest id assigned before this open: rows up to it were written by an earlier
        process (a clock-independent test, unlike `created`)."""
        orphans = sorted(set(self._pending) - set(self._caps))
        if orphans:
            self._log.warning("outbox_unconfigured_destinations", path=str(self.path),
                              destinations=orphans, note="rows kept until acked or reconfigured")

    # --- opening and recovery ---------------------------------------------------------

    # --- public API -------------------------------------------------------------------

    def load_chain(self) -> ChainState:
        """The per-topic `seq`/`prev` state as last committed by `append`."""
        with self._lock:
            try:
                rows = self._require().execute("SELECT topic, seq, hash FROM chain").fetchall()
                return ChainState.from_dict({t: {"seq": s, "hash": h} for t, s, h in rows})
            except sqlite3.Error as exc:
                raise self._error(exc, "load chain") from exc
            except ValueError as exc:
                raise OutboxError(f"outbox {self.path}: chain table malformed: {exc}") from exc

    def append(self, topic: str, seq: int, link_hash: str, payload: bytes, *, retain: bool,
               dests: Iterable[str], chain_key: str | None = None,
               live: Collection[str] = ()) -> dict[str, bool]:
        """Store one sealed envelope for each of `dests` and advance `topic`'s chain to
        (`seq`, `link_hash`), all in one transaction; returns which destinations took it.

        `seq` must be the chain's next (ValueError otherwise, nothing written): a mismatch
        means two sealers or a lost commit, and storing it would fork the chain. The chain
        advances even when every destination refused the row; platforms then see a gap,
        which is the truth. The caller commits its own `ChainState` after this returns.
        `chain_key` (default: `topic`) names the chain when one topic carries several chains,
        e.g. one per destination whose egress policy filters what it receives. `live` names
        the destinations whose broker is connected now: below the free-disk floor they may
        still hold `LIVE_WINDOW_BYTES`, so live data keeps flowing (see `_admit`).
        """
        key = topic if chain_key is None else chain_key
        if len(b64url_decode(link_hash)) != 32:
            raise ValueError("link hash is not a b64url SHA-256")
        wanted = list(dict.fromkeys(dests))
        unknown = [d for d in wanted if d not in self._caps]
        if unknown:
            raise ValueError(f"outbox: no cap configured for destinations {unknown}")
        size = len(payload) + len(topic.encode())
        now = time.time()
        free = self._free_disk() if any(self._caps[d].min_free_disk_bytes for d in wanted) \
            else None
        accepted: dict[str, bool] = {}
        pending: dict[str, tuple[int, int]] = {}
        with self._lock:
            with self._transaction("append") as conn:
                row = conn.execute("SELECT seq FROM chain WHERE topic = ?", (key,)).fetchone()
                expected = 1 if row is None else int(row[0]) + 1
                if seq != expected:
                    raise ValueError(f"outbox chain {key!r}: append of seq {seq}, "
                                     f"expected {expected}")
                for dest in wanted:
                    accepted[dest], pending[dest] = self._admit(
                        conn, dest, (topic, payload, int(retain), now, size), free,
                        dest in live)
                conn.execute("INSERT INTO chain(topic, seq, hash) VALUES (?, ?, ?) "
                             "ON CONFLICT(topic) DO UPDATE SET seq = excluded.seq, "
                             "hash = excluded.hash", (key, seq, link_hash))
            self._pending.update(pending)
        return accepted

    def _admit(self, conn: sqlite3.Connection, dest: str,
               row: tuple[str, bytes, int, float, int], free: int | None, live: bool,
               ) -> tuple[bool, tuple[int, int]]:
        """Apply `dest`'s cap inside the append transaction; returns (stored, new pending).

        `row` is (topic, payload, retain, created, bytes). Below the free-disk floor the
        destination's backlog may not grow past what it holds, except that a connected
        (`live`) destination may always hold `LIVE_WINDOW_BYTES`: its rows leave again within
        a round trip, so live data flows on a disk that is small or nearly full, while a
        backlog for an unreachable broker cannot eat the last free space."""
        cap = self._caps[dest]
        size = row[4]
        count, used = self._pending.get(dest, (0, 0))
        limit = cap.max_bytes
        low = free is not None and free < cap.min_free_disk_bytes
        self._note_disk(dest, low, free, cap)
        if low:
            limit = min(limit, max(used, LIVE_WINDOW_BYTES if live else 0))
        refuse = size > limit or (used + size > limit and cap.policy == "reject_new")
        if refuse:
            conn.execute(_BUMP, (dest, "rejected", 1))
            why = "disk_low" if low else "too_large" if size > cap.max_bytes else "reject_new"
            self._note_full(dest, why, cap, used)
            return False, (count, used)
        if used + size > limit:  # drop_oldest: evict just enough of the oldest rows
            # Claimed rows (`claim`: being published, or maybe on the wire when the link
            # dropped) are never evicted: one may be delivered after all, and then `dropped`
            # would count an envelope the platform received. The cap may be exceeded by at
            # most the sender's in-flight window.
            busy = self._claimed.get(dest, set())
            need, freed, victims = used + size - limit, 0, []
            cur = conn.execute("SELECT id, bytes FROM envelopes WHERE dest = ? ORDER BY id",
                               (dest,))
            try:
                chunk = 4  # usually one or two rows go; grow for a large newcomer
                while freed < need:
                    batch = cur.fetchmany(chunk)
                    if not batch:
                        break
                    chunk = min(chunk * 4, 1024)
                    for rid, nbytes in batch:
                        if rid in busy:
                            continue
                        victims.append(rid)
                        freed += nbytes
                        if freed >= need:
                            break
            finally:
                cur.close()
            conn.executemany("DELETE FROM envelopes WHERE dest = ? AND id = ?",
                             [(dest, rid) for rid in victims])
            n = len(victims)
            conn.execute(_BUMP, (dest, "dropped", n))
            count, used = count - n, used - freed
            self._note_full(dest, "drop_oldest", cap, used)
        conn.execute("INSERT INTO envelopes(dest, topic, payload, retain, created, bytes) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (dest, *row))
        conn.execute(_BUMP, (dest, "appended", 1))
        return True, (count + 1, used + size)

    def peek(self, dest: str, after_id: int | None = None, limit: int = 100) -> list[OutboxRow]:
        """Up to `limit` rows of `dest` with id > `after_id`, oldest first (nothing removed)."""
        if limit < 1:
            raise ValueError("peek limit must be at least 1")
        with self._lock:
            try:
                rows = self._require().execute(
                    "SELECT id, topic, payload, retain, created FROM envelopes "
                    "WHERE dest = ? AND id > ? ORDER BY id LIMIT ?",
                    (dest, -1 if after_id is None else after_id, limit)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, "peek") from exc
        return [OutboxRow(r[0], r[1], bytes(r[2]), bool(r[3]), r[4]) for r in rows]

    def claim(self, dest: str, row_id: int) -> bool:
        """Mark row `row_id` of `dest` as handed to a broker, so `drop_oldest` never evicts
        it; False when it is gone (evicted since it was peeked): the sender must not publish
        it. Call right before publishing, with no `await` in between: a row read by `peek`
        can be evicted while the sender paces the backlog, and publishing it anyway
        delivered an envelope that `dropped` also counted. Claims last until `ack` or
        `release` and are not persisted (a new process replays every stored row)."""
        with self._lock:
            try:
                found = self._require().execute(
                    "SELECT 1 FROM envelopes WHERE dest = ? AND id = ?", (dest, row_id)
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc, "claim") from exc
            if found is None:
                return False
            self._claimed.setdefault(dest, set()).add(row_id)
            return True

    def release(self, dest: str, row_id: int) -> None:
        """End a claim without an acknowledgement (the publish failed before reaching the
        wire): the row may be evicted again."""
        with self._lock:
            self._claimed.get(dest, set()).discard(row_id)

    def ack(self, dest: str, ids: Iterable[int]) -> int:
        """Delete rows of `dest` the broker acknowledged; returns how many existed.

        Call only after PUBACK: this is the one place an envelope leaves the outbox for
        good. Ids already evicted by `drop_oldest` (or acked twice) are ignored.
        """
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        with self._lock:
            n = freed = 0
            with self._transaction("ack") as conn:
                for i in range(0, len(wanted), _ACK_CHUNK):
                    chunk = wanted[i:i + _ACK_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(f"DELETE FROM envelopes WHERE dest = ? AND id IN "
                                        f"({marks}) RETURNING bytes", (dest, *chunk)).fetchall()
                    n, freed = n + len(rows), freed + sum(r[0] for r in rows)
                if n:
                    conn.execute(_BUMP, (dest, "acked", n))
            self._claimed.get(dest, set()).difference_update(wanted)
            count, used = self._pending.get(dest, (0, 0))
            self._pending[dest] = (count - n, used - freed)
            cap = self._caps.get(dest)
            if dest in self._full and (cap is None or used - freed < cap.max_bytes * _RECOVERED):
                self._full.discard(dest)
                self._log.info("outbox_below_cap", destination=dest, pending_bytes=used - freed,
                               counters=self._counters(dest))
        return n

    def pending(self, dest: str) -> tuple[int, int]:
        """(rows, bytes) waiting for `dest`."""
        with self._lock:
            self._require()
            return self._pending.get(dest, (0, 0))

    def counters(self, dest: str) -> dict[str, int]:
        """Exact, persistent counts for `dest`: appended, acked, dropped, rejected."""
        with self._lock:
            return self._counters(dest)

    def _counters(self, dest: str) -> dict[str, int]:
        try:
            rows = self._require().execute(
                "SELECT name, value FROM counters WHERE dest = ?", (dest,)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "counters") from exc
        out = dict.fromkeys(COUNTER_NAMES, 0)
        out.update({str(k): int(v) for k, v in rows})
        return out


    # --- disk and cap state (log once per transition, not per envelope) ------------------

    def _free_disk(self) -> int | None:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return None  # unknown: do not pretend the disk is full

    def _note_disk(self, dest: str, low: bool, free: int | None, cap: OutboxCap) -> None:
        if low and dest not in self._disk_low:
            self._disk_low.add(dest)
            self._log.warning("outbox_disk_low_not_growing", destination=dest, free_bytes=free,
                              min_free_disk_bytes=cap.min_free_disk_bytes, policy=cap.policy)
        elif not low and dest in self._disk_low:
            self._disk_low.discard(dest)
            self._log.info("outbox_disk_ok", destination=dest, free_bytes=free)

    def _note_full(self, dest: str, why: str, cap: OutboxCap, used: int) -> None:
        if dest not in self._full:
            self._full.add(dest)
            self._log.warning("outbox_full", destination=dest, action=why,
                              max_bytes=cap.max_bytes, pending_bytes=used)
