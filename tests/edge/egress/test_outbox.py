"""The SQLite outbox: order, independence of destinations, exact counters, chain persistence,
corruption recovery and crash safety, all against real database files.

The crash test SIGKILLs a writer mid-stream because "committed means stored" is the promise
the transport builds on; the model-based test checks caps and counters against a few lines
of obviously-correct Python across reopenings.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.egress.outbox import (
    FILENAME,
    LIVE_WINDOW_BYTES,
    AckOp,
    AppendOp,
    Outbox,
    OutboxCap,
    OutboxError,
)
from edge.signing.jws import b64url_encode
from edge.storage.wal import JOURNAL_SIZE_LIMIT
from models.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[3]
BIG = OutboxCap(max_bytes=1 << 30)


def h(n: int | str) -> str:
    """A valid link hash (b64url SHA-256), distinct per `n`."""
    return b64url_encode(hashlib.sha256(str(n).encode()).digest())


class RecordingLogger:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _rec(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.events.append((level, event, kw))

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._rec("info", event, kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._rec("warning", event, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self._rec("error", event, kw)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for _, e, kw in self.events if e == event]


def fill(
    ob: Outbox, topic: str, n: int, dests: list[str], size: int = 100
) -> list[dict[str, bool]]:
    """Append `n` envelopes on `topic` continuing its chain; payload = seq, padded."""
    out = []
    for _ in range(n):
        seq, _prev = ob.load_chain().next(topic)
        payload = f"{topic}#{seq}".encode().ljust(size, b".")
        out.append(ob.append(topic, seq, h(f"{topic}{seq}"), payload, retain=False, dests=dests))
    return out


def seqs(ob: Outbox, dest: str) -> list[str]:
    return [r.payload.rstrip(b".").decode() for r in ob.peek(dest, None, 10_000)]


def test_append_peek_ack_in_order_per_destination(tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": BIG, "b": BIG}) as ob:
        for i in range(3):
            fill(ob, "t1", 1, ["a", "b"])
            fill(ob, "t2", 1, ["a"] if i else ["a", "b"])
        assert seqs(ob, "a") == ["t1#1", "t2#1", "t1#2", "t2#2", "t1#3", "t2#3"]
        assert seqs(ob, "b") == ["t1#1", "t2#1", "t1#2", "t1#3"]
        rows = ob.peek("a", None, 4)
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert [r.topic for r in ob.peek("a", rows[1].id, 2)] == ["t1", "t2"]  # paging
        assert ob.ack("a", [r.id for r in rows[:3]]) == 3
        assert seqs(ob, "a") == ["t2#2", "t1#3", "t2#3"]
        assert seqs(ob, "b") == ["t1#1", "t2#1", "t1#2", "t1#3"]  # untouched by a's ack
        assert ob.pending("a") == (3, 3 * (100 + 2))
        assert ob.pending("b") == (4, 4 * (100 + 2))
        assert ob.counters("a") == {"appended": 6, "acked": 3, "dropped": 0, "rejected": 0}
        assert ob.counters("b") == {"appended": 4, "acked": 0, "dropped": 0, "rejected": 0}
        # acking b's ids under a's name deletes nothing of b's
        assert ob.ack("a", [r.id for r in ob.peek("b", None, 10)]) == 0
        assert ob.pending("b")[0] == 4
        row = ob.peek("b", None, 1)[0]
        assert (row.retain, row.created > 0, ob.opened_at > 0) == (False, True, True)


def test_ack_ignores_unknown_duplicate_and_already_acked_ids(tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": BIG}) as ob:
        fill(ob, "t", 3, ["a"])
        ids = [r.id for r in ob.peek("a")]
        assert ob.ack("a", [ids[0], ids[0], 999]) == 1
        assert ob.ack("a", [ids[0]]) == 0
        assert ob.ack("a", []) == 0
        assert ob.counters("a")["acked"] == 1


def test_chain_and_rows_survive_reopen_and_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / FILENAME  # directory is created
    with Outbox(path, caps={"a": BIG}) as ob:
        fill(ob, "t1", 3, ["a"])
        fill(ob, "t2", 1, ["a"])
        last = ob.peek("a")[-1].id
        ob.ack("a", [r.id for r in ob.peek("a")])  # table now empty
    with Outbox(path, caps={"a": BIG}) as ob:
        chain = ob.load_chain()
        assert chain.next("t1") == (4, h("t13"))
        assert chain.next("t2") == (2, h("t21"))
        assert chain.next("t3") == (1, None)
        assert ob.last_id_at_open == last
        fill(ob, "t1", 1, ["a"])
        assert ob.peek("a")[0].id > last  # AUTOINCREMENT: cursors never see an old id again
        assert ob.counters("a")["acked"] == 4


def test_seq_mismatch_and_bad_arguments_raise_and_write_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": BIG}) as ob:
        with pytest.raises(ValueError, match="expected 1"):
            ob.append("t", 2, h(2), b"x", retain=False, dests=["a"])
        fill(ob, "t", 1, ["a"])
        with pytest.raises(ValueError, match="expected 2"):
            ob.append("t", 1, h(1), b"x", retain=False, dests=["a"])  # double commit
        with pytest.raises(ValueError, match="SHA-256"):
            ob.append("t", 2, b64url_encode(b"short"), b"x", retain=False, dests=["a"])
        with pytest.raises(ValueError, match="no cap"):
            ob.append("t", 2, h(2), b"x", retain=False, dests=["nowhere"])
        with pytest.raises(ValueError):
            ob.peek("a", None, 0)
        assert ob.pending("a")[0] == 1
        assert ob.load_chain().next("t")[0] == 2
        assert ob.counters("a")["appended"] == 1


def _op(topic: str, seq: int, dests: tuple[str, ...] = ("a",), size: int = 100) -> AppendOp:
    return AppendOp(topic, seq, h(f"{topic}{seq}"), f"{topic}#{seq}".encode().ljust(size, b"."),
                    False, dests)


def test_one_transaction_of_many_ops_counts_and_chains_exactly(tmp_path: Path) -> None:
    """Counters and chain heads are written once per transaction (`_Tx.flush`), not per
    op: rows, counters and chains must be what the same ops one per transaction give, on
    disk, after a reopen too (evictions, an ack of an evicted row and two destinations)."""
    small = OutboxCap(max_bytes=350)  # three 101-byte rows fit, the fourth evicts one
    caps = {"a": small, "b": BIG}
    batch, single = tmp_path / "batch" / FILENAME, tmp_path / "single" / FILENAME
    for path in (batch, single):
        with Outbox(path, caps=caps) as ob:
            ob.apply([_op("t", 1, ("a", "b")), _op("t", 2, ("a", "b"))])
            early, early_b = (tuple(r.id for r in ob.peek(d)) for d in ("a", "b"))
            ops: list[AppendOp | AckOp] = [
                _op("u", 1), _op("t", 3, ("a", "b")), AckOp("a", early[1:]), _op("u", 2),
                AckOp("b", early_b), _op("t", 4, ("a", "b")), _op("u", 3), _op("t", 5)]
            results = (ob.apply(ops) if path == batch  # one transaction, or one per op
                       else [r for op in ops for r in ob.apply([op])])
            assert results[2] == 1 and results[4] == 2
    with Outbox(batch, caps=caps) as b, Outbox(single, caps=caps) as s:
        for dest in caps:
            assert b.counters(dest) == s.counters(dest)
            assert b.pending(dest) == s.pending(dest)
            assert seqs(b, dest) == seqs(s, dest)
        assert b.counters("a") == {"appended": 8, "acked": 1, "dropped": 4, "rejected": 0}
        assert b.load_chain().to_dict() == s.load_chain().to_dict()
        assert b.load_chain().next("t") == (6, h("t5"))
        b.apply([_op("t", 6, ("a", "b")), _op("u", 4)])  # heads loaded at open


def test_statements_per_batch_do_not_grow_with_counters_or_chain_lookups(
        tmp_path: Path) -> None:
    """A batch of n appends runs n envelope INSERTs, one counter upsert per destination
    and counter, one chain upsert per chain, and never asks SQLite for a chain head."""
    with Outbox(tmp_path / FILENAME, caps={"a": BIG}) as ob:
        ob.apply([_op("t", 1)])
        ids = tuple(r.id for r in ob.peek("a"))
        seen: list[str] = []
        ob._require().set_trace_callback(seen.append)
        ob.apply([_op("t", n) for n in range(2, 12)] + [AckOp("a", ids)])
        ob._require().set_trace_callback(None)
    words = [" ".join(s.split()[:3]) for s in seen]
    assert sum(w.startswith("INSERT INTO envelopes") for w in words) == 10
    assert sum(w.startswith("INSERT INTO counters") for w in words) == 2  # appended, acked
    assert sum(w.startswith("INSERT INTO chain") for w in words) == 1
    assert not [s for s in seen if "FROM chain" in s]


def test_a_rolled_back_batch_leaves_chain_heads_and_counters_as_they_were(
        tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": BIG}) as ob:
        ob.apply([_op("t", 1)])
        with pytest.raises(ValueError, match="expected 4"):
            ob.apply([_op("t", 2), _op("t", 3), _op("t", 5)])
        with pytest.raises(ValueError, match="expected 2"):
            ob.apply([_op("t", 3)])  # the head did not move with the rolled-back ops
        ob.apply([_op("t", 2)])
        assert ob.counters("a")["appended"] == 2
        assert ob.load_chain().next("t") == (3, h("t2"))


def test_a_chain_head_written_by_another_connection_is_seen(tmp_path: Path) -> None:
    """The heads live in memory, but a tool (or a second process) writing the file is
    noticed (`PRAGMA data_version`), as when every append read its head from SQLite."""
    path = tmp_path / FILENAME
    with Outbox(path, caps={"a": BIG}) as ob:
        ob.apply([_op("t", 1)])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("UPDATE chain SET seq = 7, hash = ? WHERE topic = 't'", (h("t7"),))
        other.execute("INSERT INTO chain(topic, seq, hash) VALUES ('u', 3, ?)", (h("u3"),))
        other.close()
        with pytest.raises(ValueError, match="expected 8"):
            ob.apply([_op("t", 2)])
        ob.apply([_op("t", 8), _op("u", 4)])
        assert ob.load_chain().next("t") == (9, h("t8"))


def test_drop_oldest_counts_exactly_and_survives_reopen(tmp_path: Path) -> None:
    path, row = tmp_path / FILENAME, 100 + 1
    caps = {"a": OutboxCap(10 * row, "drop_oldest"), "b": BIG}
    log = RecordingLogger()
    with Outbox(path, caps=caps, logger=log) as ob:
        assert all(r == {"a": True, "b": True} for r in fill(ob, "t", 25, ["a", "b"]))
        assert ob.pending("a") == (10, 10 * row)
        assert seqs(ob, "a") == [f"t#{i}" for i in range(16, 26)]
        assert ob.pending("b")[0] == 25  # b's cap is its own
        assert len(log.named("outbox_full")) == 1  # logged once, not per envelope
    with Outbox(path, caps=caps) as ob:
        assert ob.counters("a") == {"appended": 25, "acked": 0, "dropped": 15, "rejected": 0}
        assert ob.pending("a") == (10, 10 * row)
        ob.ack("a", [r.id for r in ob.peek("a")])
        assert ob.counters("a")["acked"] == 10


def test_drop_oldest_evicts_only_what_is_needed(tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(1000)}) as ob:
        fill(ob, "t", 9, ["a"])  # 9 x 101 = 909 bytes
        fill(ob, "t", 1, ["a"], size=250)  # needs 159 more: two oldest rows go
        assert ob.counters("a")["dropped"] == 2
        assert ob.pending("a") == (8, 7 * 101 + 251)


def test_claimed_rows_are_never_evicted_and_an_evicted_row_cannot_be_claimed(
        tmp_path: Path) -> None:
    """`dropped` counts only envelopes no broker was handed: a row the sender claimed
    (publishing, or maybe on the wire when the link dropped) is skipped by eviction, and a
    row evicted after the sender peeked it is refused by `claim`, so it is never published."""
    with Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(5 * 101)}) as ob:
        fill(ob, "t", 5, ["a"])
        first, second, third = ob.peek("a", None, 3)
        assert ob.claim("a", first.id)
        fill(ob, "t", 2, ["a"])  # evicts the two oldest unclaimed rows: #2 and #3
        assert seqs(ob, "a") == ["t#1", "t#4", "t#5", "t#6", "t#7"]
        assert not ob.claim("a", second.id) and not ob.claim("a", third.id)
        assert ob.counters("a")["dropped"] == 2
        ob.release("a", first.id)
        fill(ob, "t", 1, ["a"])  # released: the oldest again, so it goes now
        assert seqs(ob, "a")[0] == "t#4"
        fourth = ob.peek("a", None, 1)[0]
        assert ob.claim("a", fourth.id) and ob.ack("a", [fourth.id]) == 1
        assert not ob.claim("a", fourth.id)  # acknowledged: gone, and the claim with it
        assert ob.counters("a") == {"appended": 8, "acked": 1, "dropped": 3, "rejected": 0}


def test_reject_new_counts_exactly_survives_reopen_and_chain_still_advances(tmp_path: Path) -> None:
    path, row = tmp_path / FILENAME, 100 + 1
    caps = {"a": OutboxCap(10 * row, "reject_new"), "b": BIG}
    with Outbox(path, caps=caps) as ob:
        results = fill(ob, "t", 14, ["a", "b"])
        assert [r["a"] for r in results] == [True] * 10 + [False] * 4
        assert all(r["b"] for r in results)
        assert seqs(ob, "a") == [f"t#{i}" for i in range(1, 11)]  # the oldest are kept
        assert ob.load_chain().next("t")[0] == 15  # platform of a sees a gap: honest
    with Outbox(path, caps=caps) as ob:
        assert ob.counters("a") == {"appended": 10, "acked": 0, "dropped": 0, "rejected": 4}
        ob.ack("a", [r.id for r in ob.peek("a", None, 5)])
        assert fill(ob, "t", 1, ["a"]) == [{"a": True}]  # room again


def test_row_larger_than_the_cap_is_refused_without_evicting(tmp_path: Path) -> None:
    with Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(500)}) as ob:
        fill(ob, "t", 3, ["a"])
        assert fill(ob, "t", 1, ["a"], size=600) == [{"a": False}]
        assert ob.counters("a") == {"appended": 3, "acked": 0, "dropped": 0, "rejected": 1}
        assert ob.pending("a")[0] == 3


def test_low_free_disk_stops_growth_under_both_policies(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Outbox(path, caps={"a": BIG, "b": BIG}) as ob:
        fill(ob, "t", 5, ["a", "b"])
    floor = 2 * (1 << 60)  # more than any disk has free: the disk counts as full
    log = RecordingLogger()
    caps = {
        "a": OutboxCap(1 << 30, "drop_oldest", floor),
        "b": OutboxCap(1 << 30, "reject_new", floor),
        "c": OutboxCap(1 << 30, "drop_oldest", floor),
    }
    with Outbox(path, caps=caps, logger=log) as ob:
        before = ob.pending("a")
        results = fill(ob, "t", 5, ["a", "b", "c"])
        assert ob.pending("a") == before  # kept the newest, file does not grow
        assert seqs(ob, "a") == [f"t#{i}" for i in range(6, 11)]
        assert ob.counters("a")["dropped"] == 5
        assert [r["b"] for r in results] == [False] * 5
        assert ob.counters("b")["rejected"] == 5
        assert [r["c"] for r in results] == [False] * 5  # empty + no room = nothing to drop
        assert {kw["destination"] for kw in log.named("outbox_disk_low_not_growing")} == {
            "a",
            "b",
            "c",
        }
        assert len(log.named("outbox_disk_low_not_growing")) == 3


def test_below_the_floor_a_connected_destination_still_sends_live_data(tmp_path: Path) -> None:
    """Issue 12: with the floor above the free space every envelope used to be refused, even
    for a connected broker. Now only the backlog of an unreachable broker stops growing."""
    floor = 2 * (1 << 60)  # more than any disk has free
    caps = {d: OutboxCap(1 << 30, policy, floor) for d, policy in
            (("up", "drop_oldest"), ("strict", "reject_new"), ("down", "drop_oldest"))}
    with Outbox(tmp_path / FILENAME, caps=caps) as ob:
        for n in range(1, 21):
            payload = b"x" * 200
            got = ob.append("t", n, h(n), payload, retain=False, dests=list(caps),
                            live=["up", "strict"])
            assert got == {"up": True, "strict": True, "down": False}
            ob.ack("up", [r.id for r in ob.peek("up")])  # the broker acknowledges at once
        assert ob.pending("up") == (0, 0) and ob.counters("up")["acked"] == 20
        assert ob.pending("strict")[0] == 20  # unacked live rows: within LIVE_WINDOW_BYTES
        assert ob.counters("down")["rejected"] == 20 and ob.pending("down") == (0, 0)


def test_live_window_is_bounded_below_the_floor(tmp_path: Path) -> None:
    floor = 2 * (1 << 60)
    caps = {"a": OutboxCap(1 << 30, "drop_oldest", floor),
            "b": OutboxCap(1 << 30, "reject_new", floor)}
    with Outbox(tmp_path / FILENAME, caps=caps) as ob:
        size = 64 * 1024
        n = 2 * LIVE_WINDOW_BYTES // size
        for i in range(1, n + 1):
            ob.append("t", i, h(i), b"p" * size, retain=False, dests=["a", "b"], live=["a", "b"])
        for dest in ("a", "b"):
            assert ob.pending(dest)[1] <= LIVE_WINDOW_BYTES + size  # never more than the window
        assert ob.counters("a")["dropped"] > 0 and ob.counters("b")["rejected"] > 0


def test_a_backlog_over_the_live_window_is_what_live_rows_meet_below_the_floor(
    tmp_path: Path,
) -> None:
    """README "Small disks": the live window includes a backlog still waiting for the broker.
    A 2 MiB backlog stored above the floor; below it, once the broker is back, a live row
    evicts the oldest backlog row (`drop_oldest`) or is refused (`reject_new`) until the
    backlog has drained below the window."""
    path = tmp_path / FILENAME
    size = 64 * 1024
    n = 2 * LIVE_WINDOW_BYTES // size
    with Outbox(path, caps={"a": BIG, "b": BIG}) as ob:
        fill(ob, "t", n, ["a", "b"], size=size)  # the backlog, disk not low yet
    floor = 2 * (1 << 60)  # more than any disk has free
    caps = {"a": OutboxCap(1 << 30, "drop_oldest", floor),
            "b": OutboxCap(1 << 30, "reject_new", floor)}
    with Outbox(path, caps=caps) as ob:
        seq, _prev = ob.load_chain().next("t")
        got = ob.append("t", seq, h(seq), b"l" * size, retain=False, dests=["a", "b"],
                        live=["a", "b"])
        assert got == {"a": True, "b": False}
        assert ob.counters("a")["dropped"] == 1 and ob.counters("b")["rejected"] == 1
        drained = [r.id for r in ob.peek("b", None, n)][: n - LIVE_WINDOW_BYTES // size + 2]
        ob.ack("b", drained)  # the backlog drains below the window: live rows are stored
        seq, _prev = ob.load_chain().next("t")
        got = ob.append("t", seq, h(seq), b"l" * size, retain=False, dests=["b"], live=["b"])
        assert got == {"b": True}


def test_wal_stays_bounded_and_truncates_when_idle(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    wal = path.with_name(FILENAME + "-wal")
    with Outbox(path, caps={"a": BIG}) as ob:
        for i in range(1, 3001):  # ~3 MiB of rows written, then deleted
            ob.append("t", i, h(i), b"w" * 1000, retain=False, dests=["a"])
            if i % 10 == 0:
                ob.ack("a", [r.id for r in ob.peek("a")])
            assert wal.stat().st_size <= JOURNAL_SIZE_LIMIT + 64 * 1024
        assert ob.truncate_wal()
        assert wal.stat().st_size == 0


def garbage(path: Path, offset: int, n: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(n))


def assert_fresh_after_corruption(path: Path, log: RecordingLogger, ob: Outbox) -> None:
    [event] = log.named("outbox_corrupt_moved_aside")
    assert event["path"] == str(path)
    aside = Path(event["moved_to"])
    assert aside.exists() and aside.name.startswith(f"{FILENAME}.corrupt-")
    assert ob.load_chain().next("t") == (1, None)
    assert ob.pending("a") == (0, 0)
    fill(ob, "t", 2, ["a"])
    assert seqs(ob, "a") == ["t#1", "t#2"]


def test_garbage_file_is_moved_aside_with_its_wal_and_a_fresh_outbox_works(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(os.urandom(8192))
    path.with_name(FILENAME + "-wal").write_bytes(b"old wal")
    log = RecordingLogger()
    with Outbox(path, caps={"a": BIG}, logger=log) as ob:
        assert_fresh_after_corruption(path, log, ob)
    aside = Path(log.named("outbox_corrupt_moved_aside")[0]["moved_to"])
    assert aside.with_name(aside.name + "-wal").read_bytes() == b"old wal"


def test_damage_that_only_quick_check_reports_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Outbox(path, caps={"a": BIG}) as ob:
        fill(ob, "t", 50, ["a"])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA writable_schema=ON")  # orphan the index's pages: no error on read
    db.execute("DELETE FROM sqlite_master WHERE name = 'envelopes_dest_id'")
    db.close()
    log = RecordingLogger()
    with Outbox(path, caps={"a": BIG}, logger=log) as ob:
        assert_fresh_after_corruption(path, log, ob)
    assert "never used" in log.named("outbox_corrupt_moved_aside")[0]["reason"]


def test_damaged_pages_are_detected_by_quick_check(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Outbox(path, caps={"a": BIG}) as ob:
        fill(ob, "t", 200, ["a"], size=1000)
    assert not path.with_name(FILENAME + "-wal").exists()  # checkpointed on close
    garbage(path, 4096 * 3, 4096 * 8)  # header intact, b-tree pages destroyed
    log = RecordingLogger()
    with Outbox(path, caps={"a": BIG}, logger=log) as ob:
        assert_fresh_after_corruption(path, log, ob)
    aside = Path(log.named("outbox_corrupt_moved_aside")[0]["moved_to"])
    assert len(list(tmp_path.glob(f"{FILENAME}.corrupt-*"))) == 1 and aside.exists()


def test_unusable_directory_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot create"):
        Outbox(tmp_path / "file" / FILENAME, caps={})
    (tmp_path / "dir.sqlite3").mkdir()  # the database path is a directory
    with pytest.raises(ConfigurationError, match=r"dir\.sqlite3"):
        Outbox(tmp_path / "dir.sqlite3", caps={})
    with pytest.raises(ConfigurationError):
        OutboxCap(0)
    with pytest.raises(ConfigurationError):
        OutboxCap(10, "drop_newest")  # type: ignore[arg-type]


def test_newer_format_is_refused_not_discarded(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    Outbox(path, caps={}).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format'")
    db.close()
    with pytest.raises(ConfigurationError, match="downgraded"):
        Outbox(path, caps={})
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_locked_database_is_an_outbox_error_and_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    Outbox(path, caps={}).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OutboxError, match="locked"):
            Outbox(path, caps={}, busy_timeout=0.05)
    finally:
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_closed_outbox_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / FILENAME, caps={"a": BIG})
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        fill(ob, "t", 1, ["a"])
    with pytest.raises(OutboxError, match="closed"):
        ob.pending("a")


def test_file_format_is_what_the_docstring_says(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Outbox(path, caps={"a": BIG}) as ob:
        ob.append("t", 1, h(1), b"payload", retain=True, dests=["a"])
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == ("1",)
        cols = {
            t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")]
            for t in ("envelopes", "chain", "counters")
        }
        assert cols == {
            "envelopes": ["id", "dest", "topic", "payload", "retain", "created", "bytes"],
            "chain": ["topic", "seq", "hash"],
            "counters": ["dest", "name", "value"],
        }
        assert db.execute(
            "SELECT dest, topic, payload, retain, bytes FROM envelopes"
        ).fetchall() == [("a", "t", b"payload", 1, 8)]
        assert db.execute("SELECT * FROM chain").fetchall() == [("t", 1, h(1))]
    finally:
        db.close()


CHILD = textwrap.dedent("""
    import hashlib, sys
    from edge.egress.outbox import Outbox, OutboxCap
    from edge.signing.jws import b64url_encode
    def h(n): return b64url_encode(hashlib.sha256(str(n).encode()).digest())
    ob = Outbox(sys.argv[1], caps={"a": OutboxCap(1 << 30), "b": OutboxCap(1 << 30)})
    seq = ob.load_chain().next("t")[0]
    while True:
        ob.append("t", seq, h(seq), str(seq).encode().ljust(700, b"."), retain=False,
                  dests=["a", "b"])
        print(seq, flush=True)  # printed only after COMMIT returned
        seq += 1
""")


def run_and_kill(path: Path, after: int) -> int:
    """Run a writer, SIGKILL it after it reported `after` commits; last reported seq."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen: list[int] = []
    for line in proc.stdout:
        seen.append(int(line))
        if len(seen) == after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    # read through the same buffered file object: lines it already read ahead would be lost
    # to communicate(), which reads the raw pipe
    seen += [int(x) for x in proc.stdout.read().split()]
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return seen[-1]


@pytest.mark.slow
def test_sigkill_loses_no_committed_row_and_duplicates_none(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    last = 0
    for _ in range(3):  # each writer resumes the chain the previous one left
        reported = run_and_kill(path, after=3000)  # > one WAL auto-checkpoint per run
        assert reported > last
        with Outbox(path, caps={"a": BIG, "b": BIG}) as ob:
            stored = ob.load_chain().next("t")[0] - 1
            assert reported <= stored <= reported + 1  # at most one commit unreported
            for dest in ("a", "b"):
                assert [int(s) for s in seqs(ob, dest)] == list(range(1, stored + 1))
                assert ob.counters(dest)["appended"] == stored
        last = stored
    assert not list(tmp_path.glob("*.corrupt-*"))


CAPS = {"a": OutboxCap(3000, "drop_oldest"), "b": OutboxCap(2000, "reject_new")}
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sets(st.sampled_from("ab")), st.integers(1, 1200)),
        st.tuples(st.just("ack"), st.sampled_from("ab"), st.integers(0, 5)),
        st.tuples(st.just("reopen"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_caps_and_counters_match_a_model_across_reopens(ops: list[Any]) -> None:
    model: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}  # (seq, bytes) pending
    count = {d: dict.fromkeys(("appended", "acked", "dropped", "rejected"), 0) for d in "ab"}
    seq = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILENAME
        ob = Outbox(path, caps=CAPS)
        try:
            for op, arg, n in ops:
                if op == "reopen":
                    ob.close()
                    ob = Outbox(path, caps=CAPS)
                elif op == "ack":
                    rows = ob.peek(arg, None, n) if n else []
                    assert ob.ack(arg, [r.id for r in rows]) == len(rows)
                    del model[arg][: len(rows)]
                    count[arg]["acked"] += len(rows)
                else:
                    seq += 1
                    size = max(n, len(str(seq))) + 1  # topic "t"; ljust never shortens
                    got = ob.append(
                        "t",
                        seq,
                        h(seq),
                        str(seq).encode().ljust(n, b"."),
                        retain=False,
                        dests=sorted(arg),
                    )
                    for d in sorted(arg):
                        cap, q = CAPS[d], model[d]
                        used = sum(b for _, b in q)
                        fits = size <= cap.max_bytes and (
                            cap.policy == "drop_oldest" or used + size <= cap.max_bytes
                        )
                        assert got[d] == fits
                        if not fits:
                            count[d]["rejected"] += 1
                            continue
                        while sum(b for _, b in q) + size > cap.max_bytes:
                            q.pop(0)
                            count[d]["dropped"] += 1
                        q.append((seq, size))
                        count[d]["appended"] += 1
                for d in "ab":
                    assert [int(s) for s in seqs(ob, d)] == [s for s, _ in model[d]]
                    assert ob.pending(d) == (len(model[d]), sum(b for _, b in model[d]))
                    assert ob.counters(d) == count[d]
            assert ob.load_chain().next("t")[0] == seq + 1
        finally:
            ob.close()
