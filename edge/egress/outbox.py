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
`reject_new` a live row is refused (`rejected`) until the backlog has drained below it.
Caps count logical bytes; the file is larger by SQLite's page overhead (see
bench/bench_outbox.py) and never shrinks by itself.

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

Threading: the API is synchronous and thread-safe. In the gateway every write (`append` at
sealing, `ack` after PUBACK, the gap envelopes of the loss ledger, the Sparkplug sender's
acks) goes as an `AppendOp`/`AckOp` to the gateway's writer thread, shared with the OEE
store (edge/egress/writer.py, edge/storage/writer.py), which commits whatever is queued in
one transaction (`apply`), so neither a commit nor the WAL auto-checkpoint (about once per
1 MiB written, with its fsyncs: 5-15 ms on the bench host) ever holds the event loop;
bench/writer_stall.py measures the loop lag either way. An `ack` waits on the loop for the
next append to share its transaction, at most 0.5 s (edge/egress/writer.py `ACK_LINGER`),
which widens the PUBACK-to-delete window of the duplicate above to that. What the loop
reads (`peek`, `claim`, `counters`) goes through a second, read-only connection, which in
WAL mode never waits for the writer; `pending` is an in-memory tally replaced whole on each
commit. Claims and eviction meet under a small lock of their own, held by the writer only
while it picks victims from the page cache. Called inline (tests, tools), each call is its
own transaction, as before.

Per transaction, not per operation: an append checks its seq against the chain heads the
outbox keeps in memory (loaded at open, advanced only once a transaction commits, reloaded
when `PRAGMA data_version` says another connection wrote the file), and the counter and
chain upserts are summed and written once per (destination, counter) and per chain just
before the commit (`_Tx`): the same rows as one statement each per operation, in the same
transaction, with one statement per append left instead of four (bench/report-issue17.md,
2o).

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
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.signing.jws import ChainState, b64url_decode
from edge.storage.move import MachineRows, MachineState, Moved
from edge.storage.wal import (
    WalStore,
)
from models.errors import ConfigurationError, EdgeError
from models.logger import Logger

__all__ = [
    "COUNTER_NAMES",
    "FILENAME",
    "FORMAT_VERSION",
    "AckOp",
    "AppendOp",
    "Outbox",
    "OutboxCap",
    "OutboxError",
    "OutboxMachines",
    "OutboxOp",
    "OutboxRow",
    "Policy",
    "machine_of",
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
_HEAD = ("INSERT INTO chain(topic, seq, hash) VALUES (?, ?, ?) "
         "ON CONFLICT(topic) DO UPDATE SET seq = excluded.seq, hash = excluded.hash")
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
class AppendOp:
    """One `Outbox.append` as data, so several can share a transaction (`Outbox.apply`)."""

    topic: str
    seq: int
    link_hash: str
    payload: bytes
    retain: bool
    dests: tuple[str, ...]
    chain_key: str | None = None
    live: tuple[str, ...] = ()
    # Unix time the sealer judged `live` (None: now). A row's `created` must not be later:
    # a sender flags as a replay a row created before its link's current session, and a
    # row sealed during an outage but stored just after the reconnect was sent unflagged
    # although its signed body said `historical`.
    created: float | None = None


@dataclass(frozen=True, slots=True)
class AckOp:
    """One `Outbox.ack` as data: rows of `dest` a broker acknowledged (PUBACK)."""

    dest: str
    ids: tuple[int, ...]


OutboxOp = AppendOp | AckOp


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored envelope for one destination; `created` is unix time when the sealer
    judged which links were up (`AppendOp.created`), or of the append."""

    id: int
    topic: str
    payload: bytes
    retain: bool
    created: float


class _Tx:
    """What one `Outbox.apply` transaction changes besides its envelope rows, written by
    `flush` just before it commits: one counter upsert per (destination, counter) and one
    chain upsert per chain, however many appends and acks share the transaction (they
    were two statements per append and one per ack).
    `pending` is the in-memory tally as of this transaction."""

    __slots__ = ("bumps", "heads", "pending")

    def __init__(self, pending: dict[str, tuple[int, int]]) -> None:
        self.pending = pending
        self.bumps: dict[tuple[str, str], int] = {}
        self.heads: dict[str, tuple[int, str]] = {}  # chain key -> (seq, link hash)

    def bump(self, dest: str, name: str, n: int) -> None:
        if n:
            key = (dest, name)
            self.bumps[key] = self.bumps.get(key, 0) + n

    def flush(self, conn: sqlite3.Connection) -> None:
        if self.bumps:
            conn.executemany(_BUMP, [(d, k, n) for (d, k), n in self.bumps.items()])
        if self.heads:
            conn.executemany(_HEAD, [(key, seq, h) for key, (seq, h) in self.heads.items()])


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
        # Claims (`claim`) are the sender's, on the event loop; eviction runs wherever
        # writes run (the writer thread): both under `_claims_lock`, never held over I/O
        # of the writer. Claimed ids: eviction leaves them alone. Doomed: chosen for
        # eviction by a transaction in progress. Acking: acknowledged, delete queued.
        self._claims_lock = threading.Lock()
        self._claimed: dict[str, set[int]] = {}
        self._doomed: dict[str, set[int]] = {}
        self._acking: dict[str, set[int]] = {}
        # Each chain's last stored seq, as committed: `apply` checks an append against it
        # instead of asking SQLite per append. Replaced only after a commit; reloaded when
        # another connection wrote the file in between (`_sync_heads`).
        self._heads: dict[str, int] = {}
        self._data_version = -1
        conn = self._require()
        try:
            self._sync_heads(conn)
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
        if orphans and self._caps:  # none: opened to be read or moved, not to send
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
        [accepted] = self.apply([AppendOp(topic, seq, link_hash, payload, retain,
                                          tuple(dict.fromkeys(dests)), chain_key,
                                          tuple(live))])
        assert isinstance(accepted, dict)
        return accepted

    def submit(self, op: AppendOp, done: Callable[[dict[str, bool] | Exception], None]) -> None:
        """`append` as the sealer calls it: `done` hears the accepted map or the error, here
        at once; `edge.egress.writer.OutboxWriter` does the same on its writer thread."""
        try:
            [result] = self.apply([op])
        except (EdgeError, ValueError) as exc:
            done(exc)
            return
        assert isinstance(result, dict)
        done(result)

    def apply(self, ops: Sequence[OutboxOp]) -> list[dict[str, bool] | int]:
        """Apply appends and acks in order, in ONE transaction; one result per op: the
        accepted map of an append, the count of an ack. Grouping many in one commit is what
        lets the writer thread (edge/storage/writer.py) keep up: commits dominate the cost.
        Raises like `append`/`ack`, and then nothing of `ops` was written."""
        for op in ops:
            if isinstance(op, AppendOp):
                self._check_append(op)
        free = self._free_disk() if any(
            self._caps[d].min_free_disk_bytes for op in ops if isinstance(op, AppendOp)
            for d in op.dests) else None
        results: list[dict[str, bool] | int] = []
        with self._lock:
            tx = _Tx(dict(self._pending))
            acked: dict[str, set[int]] = {}
            doing = "append" if ops and isinstance(ops[0], AppendOp) else "ack"
            try:
                with self._transaction(doing) as conn:
                    self._sync_heads(conn)
                    for op in ops:
                        if isinstance(op, AppendOp):
                            results.append(self._append_in(conn, tx, op, free))
                        else:
                            results.append(self._ack_in(conn, tx, op))
                            acked.setdefault(op.dest, set()).update(op.ids)
                    tx.flush(conn)
            finally:  # evicted rows are gone now (or, rolled back, claimable again)
                with self._claims_lock:
                    self._doomed.clear()
            # committed: nothing below may raise (the writer would apply `ops` again)
            self._pending = tx.pending
            for key, (seq, _) in tx.heads.items():
                self._heads[key] = seq
            with self._claims_lock:
                for dest, ids in acked.items():
                    self._claimed.get(dest, set()).difference_update(ids)
                    self._acking.get(dest, set()).difference_update(ids)
            for dest in acked:
                self._after_ack(dest)
        return results

    def _check_append(self, op: AppendOp) -> None:
        if len(b64url_decode(op.link_hash)) != 32:
            raise ValueError("link hash is not a b64url SHA-256")
        unknown = [d for d in op.dests if d not in self._caps]
        if unknown:
            raise ValueError(f"outbox: no cap configured for destinations {unknown}")

    def _sync_heads(self, conn: sqlite3.Connection) -> None:
        """Load the chain heads when the file changed under another connection since this
        one last looked (`PRAGMA data_version`, one cheap statement per transaction): only
        a tool or a second process writes so, never this outbox's own commits."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            self._heads = {str(t): int(s) for t, s in conn.execute("SELECT topic, seq FROM chain")}
            self._data_version = version

    def _append_in(self, conn: sqlite3.Connection, tx: _Tx, op: AppendOp,
                   free: int | None) -> dict[str, bool]:
        key = op.topic if op.chain_key is None else op.chain_key
        head = tx.heads.get(key)
        expected = (self._heads.get(key, 0) if head is None else head[0]) + 1
        if op.seq != expected:
            raise ValueError(f"outbox chain {key!r}: append of seq {op.seq}, "
                             f"expected {expected}")
        size = len(op.payload) + len(op.topic.encode())
        created = time.time() if op.created is None else op.created
        stored = (op.topic, op.payload, int(op.retain), created, size)
        accepted: dict[str, bool] = {}
        for dest in dict.fromkeys(op.dests):
            accepted[dest] = self._admit(conn, tx, dest, stored, free, live=dest in op.live)
        tx.heads[key] = (op.seq, op.link_hash)
        return accepted

    def _admit(self, conn: sqlite3.Connection, tx: _Tx, dest: str,
               row: tuple[str, bytes, int, float, int], free: int | None, *, live: bool,
               ) -> bool:
        """Apply `dest`'s cap inside the append transaction; whether the row was stored.

        `row` is (topic, payload, retain, created, bytes). Below the free-disk floor the
        destination's backlog may not grow past what it holds, except that a connected
        (`live`) destination may always hold `LIVE_WINDOW_BYTES`: its rows leave again within
        a round trip, so live data flows on a disk that is small or nearly full, while a
        backlog for an unreachable broker cannot eat the last free space."""
        cap = self._caps[dest]
        size = row[4]
        count, used = tx.pending.get(dest, (0, 0))
        limit = cap.max_bytes
        low = free is not None and free < cap.min_free_disk_bytes
        self._note_disk(dest, low, free, cap)
        if low:
            limit = min(limit, max(used, LIVE_WINDOW_BYTES if live else 0))
        refuse = size > limit or (used + size > limit and cap.policy == "reject_new")
        if refuse:
            tx.bump(dest, "rejected", 1)
            why = "disk_low" if low else "too_large" if size > cap.max_bytes else "reject_new"
            self._note_full(dest, why, cap, used)
            return False
        if used + size > limit:  # drop_oldest: evict just enough of the oldest rows
            victims, freed = self._victims(conn, dest, used + size - limit)
            conn.executemany("DELETE FROM envelopes WHERE dest = ? AND id = ?",
                             [(dest, rid) for rid in victims])
            n = len(victims)
            tx.bump(dest, "dropped", n)
            count, used = count - n, used - freed
            self._note_full(dest, "drop_oldest", cap, used)
        conn.execute("INSERT INTO envelopes(dest, topic, payload, retain, created, bytes) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (dest, *row))
        tx.bump(dest, "appended", 1)
        tx.pending[dest] = (count + 1, used + size)
        return True

    def _victims(self, conn: sqlite3.Connection, dest: str, need: int) -> tuple[list[int], int]:
        """The oldest unclaimed rows of `dest` that free `need` bytes, and what they free.

        Claimed rows (`claim`: being published, or maybe on the wire when the link dropped,
        or acknowledged with the delete still queued) are never evicted: one may be
        delivered after all, and then `dropped` would count an envelope the platform
        received. The cap may be exceeded by at most the sender's in-flight window. The
        victims are chosen under the claims lock, so a `claim` on the event loop either
        comes first (and the row is spared) or finds the row doomed (and is refused)."""
        freed, victims = 0, []
        with self._claims_lock:
            busy = self._claimed.get(dest, set())
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
            self._doomed.setdefault(dest, set()).update(victims)
        return victims, freed

    def peek(self, dest: str, after_id: int | None = None, limit: int = 100) -> list[OutboxRow]:
        """Up to `limit` rows of `dest` with id > `after_id`, oldest first (nothing removed).
        Read on the reader connection: committed rows only, never waiting for a write."""
        if limit < 1:
            raise ValueError("peek limit must be at least 1")
        rows = self._read("peek", "SELECT id, topic, payload, retain, created FROM envelopes "
                          "WHERE dest = ? AND id > ? ORDER BY id LIMIT ?",
                          (dest, -1 if after_id is None else after_id, limit))
        return [OutboxRow(r[0], r[1], bytes(r[2]), bool(r[3]), r[4]) for r in rows]

    def claim(self, dest: str, row_id: int) -> bool:
        """Mark row `row_id` of `dest` as handed to a broker, so `drop_oldest` never evicts
        it; False when it is gone (evicted since it was peeked, or being evicted now) or
        already acknowledged (its delete queued): the sender must not publish it. Call right
        before publishing, with no `await` in between: a row read by `peek` can be evicted
        while the sender paces the backlog, and publishing it anyway delivered an envelope
        that `dropped` also counted. Claims last until `ack` or `release` and are not
        persisted (a new process replays every stored row)."""
        with self._claims_lock:
            if row_id in self._doomed.get(dest, ()) or row_id in self._acking.get(dest, ()):
                return False
            if not self._read("claim", "SELECT 1 FROM envelopes WHERE dest = ? AND id = ?",
                              (dest, row_id)):
                return False
            self._claimed.setdefault(dest, set()).add(row_id)
            return True

    def release(self, dest: str, row_id: int) -> None:
        """End a claim without an acknowledgement (the publish failed before reaching the
        wire): the row may be evicted again. A row whose acknowledgement is queued
        (`acknowledged`) stays claimed until its delete is committed."""
        with self._claims_lock:
            if row_id not in self._acking.get(dest, ()):
                self._claimed.get(dest, set()).discard(row_id)

    def acknowledged(self, dest: str, ids: Iterable[int]) -> None:
        """The broker acknowledged `ids` and their delete is queued (edge/egress/writer.py):
        until it commits they stay claimed (never evicted) and `claim` refuses them, so a
        sender whose cursor rewinds does not publish them again."""
        with self._claims_lock:
            self._acking.setdefault(dest, set()).update(ids)

    def ack_failed(self, dest: str, ids: Iterable[int]) -> None:
        """A queued delete failed: the rows stay stored, unclaimed, as after a failed
        inline `ack` (sent again after a reconnect or restart)."""
        with self._claims_lock:
            for rid in ids:
                self._acking.get(dest, set()).discard(rid)
                self._claimed.get(dest, set()).discard(rid)

    def ack(self, dest: str, ids: Iterable[int]) -> int:
        """Delete rows of `dest` the broker acknowledged; returns how many existed.

        Call only after PUBACK: this is the one place an envelope leaves the outbox for
        good. Ids already evicted by `drop_oldest` (or acked twice) are ignored.
        """
        op = AckOp(dest, tuple(ids))
        if not op.ids:
            return 0
        [n] = self.apply([op])
        assert isinstance(n, int)
        return n

    def _ack_in(self, conn: sqlite3.Connection, tx: _Tx, op: AckOp) -> int:
        wanted = sorted(set(op.ids))
        n = freed = 0
        for i in range(0, len(wanted), _ACK_CHUNK):
            chunk = wanted[i:i + _ACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"DELETE FROM envelopes WHERE dest = ? AND id IN "
                                f"({marks}) RETURNING bytes", (op.dest, *chunk)).fetchall()
            n, freed = n + len(rows), freed + sum(r[0] for r in rows)
        tx.bump(op.dest, "acked", n)
        count, used = tx.pending.get(op.dest, (0, 0))
        tx.pending[op.dest] = (count - n, used - freed)
        return n

    def _after_ack(self, dest: str) -> None:
        used = self._pending.get(dest, (0, 0))[1]
        cap = self._caps.get(dest)
        if dest in self._full and (cap is None or used < cap.max_bytes * _RECOVERED):
            self._full.discard(dest)
            try:
                counters: dict[str, int] | str = self._counters(dest)
            except EdgeError as exc:
                counters = str(exc)
            self._log.info("outbox_below_cap", destination=dest, pending_bytes=used,
                           counters=counters)

    def pending(self, dest: str) -> tuple[int, int]:
        """(rows, bytes) waiting for `dest`: an in-memory tally, replaced whole on each
        commit (never torn, never waiting for the writer)."""
        if self._reader is None:
            raise OutboxError(f"outbox {self.path}: closed")
        return self._pending.get(dest, (0, 0))

    def counters(self, dest: str) -> dict[str, int]:
        """Exact, persistent counts for `dest`: appended, acked, dropped, rejected."""
        return self._counters(dest)

    def _counters(self, dest: str) -> dict[str, int]:
        rows = self._read("counters", "SELECT name, value FROM counters WHERE dest = ?", (dest,))
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


# --- a machine's rows, moved to another worker's outbox (edge/storage/move.py) -----------


def machine_of(topic: str) -> str | None:
    """The machine whose topic tree holds `topic`, or the chain key `dest:<id>:<topic>`:
    `{prefix}/{site}/{area}/{line}/{machine}/{stream}` (models.plant.machine_topic; every
    part is an identifier without `/`); None for anything else."""
    if topic.startswith("dest:"):
        topic = topic.split(":", 2)[-1]
    parts = topic.split("/")
    return parts[4] if len(parts) == 6 else None


class OutboxMachines(MachineState):
    """A machine's chain heads and pending envelopes in an outbox file, to move them when
    the worker count changes: every topic of the machine's tree (gap topics too) and every
    chain key on them (`dest:<id>:<topic>` included). Pending rows keep their order, behind
    the target's own (a topic lives in one outbox at a time, so no topic is reordered); a
    moved row is counted `appended` where it now waits and no longer where it was, so
    `appended == pending + acked + dropped` holds in both files."""

    filename = FILENAME
    label = "outbox"
    error = OutboxError

    def prepare(self, path: Path) -> None:
        Outbox(path, caps={}).close()

    def machines(self, conn: sqlite3.Connection) -> set[str]:
        """From the chain heads alone (small): every stored envelope's chain has one, since
        both commit together; the move itself reads the envelopes' topics too."""
        return {m for (t,) in conn.execute("SELECT topic FROM chain")
                for m in (machine_of(t),) if m is not None}

    @staticmethod
    def _topics(conn: sqlite3.Connection) -> set[str]:
        return ({r[0] for r in conn.execute("SELECT DISTINCT topic FROM envelopes")}
                | {r[0] for r in conn.execute("SELECT topic FROM chain")})

    def rows(self, conn: sqlite3.Connection, machines: Collection[str]) -> list[MachineRows]:
        mine = tuple(sorted(t for t in self._topics(conn) if machine_of(t) in machines))
        topics = tuple(t for t in mine if not t.startswith("dest:"))
        return [
            MachineRows("envelopes", "topic", topics,
                        ("dest", "topic", "payload", "retain", "created", "bytes"),
                        order="id", tally="dest"),
            MachineRows("chain", "topic", mine, ("topic", "seq", "hash"), primary=("topic",)),
        ]

    def after_copy(self, source: sqlite3.Connection, target: sqlite3.Connection,
                   moved: Moved) -> None:
        target.executemany(_BUMP, [(d, "appended", n) for d, n in moved.copied_by.items()])

    def after_delete(self, source: sqlite3.Connection, moved: Moved) -> None:
        source.executemany(_BUMP, [(d, "appended", -n) for d, n in moved.deleted_by.items()])
