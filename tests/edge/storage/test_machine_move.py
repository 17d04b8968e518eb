"""Moving machines' rows between store files (a changed worker count), on real SQLite files:
each store's rows of the moved machines arrive whole and in order, the others stay, and a
move SIGKILLed between its two commits (or before the first) is finished by running it
again, with no row lost and none held twice.

Why SIGKILL in a subprocess: the claim is about what is committed on disk when a process
dies at the worst moment, which only a real process death shows.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.bookings.store import BookingMachines, BookingStore
from edge.egress.outbox import FILENAME, Outbox, OutboxCap, OutboxMachines, machine_of
from edge.kpi.store import ClosedWindow, EngineDelta, OeeMachines, OeeStore
from edge.parts.store import PartMachines, PartStore
from edge.signing.jws import b64url_encode
from models.booking import Candidate, parse_reserve
from models.plant import BookingRules, ShiftCalendar

ROOT = Path(__file__).resolve().parents[3]
CAPS = {"p1": OutboxCap(1 << 30), "p2": OutboxCap(1 << 30)}
T0 = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


def topic(machine: str, stream: str = "telemetry") -> str:
    return f"edge/plant-a/hall-1/line-1/{machine}/{stream}"


def h(n: int | str) -> str:
    return b64url_encode(hashlib.sha256(str(n).encode()).digest())


def fill_outbox(path: Path, machines: list[str], n: int = 5, tag: str = "") -> None:
    """`n` envelopes per machine on two topics and a per-destination chain, interleaved."""
    with Outbox(path, caps=CAPS) as box:
        for seq in range(1, n + 1):
            for m in machines:
                for t in (topic(m), topic(m, "state")):
                    box.append(t, seq, h(f"{t}{seq}"), f"{t}#{seq}{tag}".encode(), retain=False,
                               dests=["p1"])
                key = f"dest:p2:{topic(m)}"
                box.append(topic(m), seq, h(f"{key}{seq}"), f"{key}#{seq}{tag}".encode(),
                           retain=False, dests=["p2"], chain_key=key)


def pending(path: Path, dest: str) -> list[tuple[str, bytes]]:
    with Outbox(path, caps=CAPS) as box:
        return [(r.topic, r.payload) for r in box.peek(dest, limit=10_000)]


def balanced(path: Path) -> bool:
    """appended == pending + acked + dropped for every destination."""
    with Outbox(path, caps=CAPS) as box:
        return all(c["appended"] == box.pending(d)[0] + c["acked"] + c["dropped"]
                   for d in CAPS for c in (box.counters(d),))


def test_machine_of_topics_and_chain_keys() -> None:
    assert machine_of(topic("m1")) == "m1"
    assert machine_of(f"dest:p2:{topic('m-2', 'gap')}") == "m-2"
    assert machine_of("edge/plant-a/gw-1/status") is None


def test_outbox_move_takes_chains_and_pending_rows_in_order(tmp_path: Path) -> None:
    src, dst = tmp_path / "a" / FILENAME, tmp_path / "b" / FILENAME
    fill_outbox(src, ["m1", "m2"])
    fill_outbox(dst, ["m3"])
    with Outbox(src, caps=CAPS) as box:  # some of m1's were delivered already
        acked = [r.id for r in box.peek("p1", limit=4)]
        box.ack("p1", acked)
        chain_before = box.load_chain().to_dict()
    before = pending(src, "p1") + pending(src, "p2")
    moved = OutboxMachines().move(src, dst, ["m1"])
    assert moved.copied["chain"] == 3 and moved.deleted["chain"] == 3

    m1 = [(t, p) for t, p in before if machine_of(t) == "m1"]
    for dest in CAPS:  # m3's rows first, then m1's in their order; m2 stayed behind
        got = pending(dst, dest)
        assert [x for x in got if machine_of(x[0]) == "m3"] == got[:len(got) - len(
            [x for x in got if machine_of(x[0]) == "m1"])]
        assert [x for x in got if machine_of(x[0]) == "m1"] == [
            x for x in m1 if x in pending(dst, dest)]
    assert sorted(pending(dst, "p1") + pending(dst, "p2")) == sorted(
        m1 + [x for x in pending(dst, "p1") + pending(dst, "p2") if machine_of(x[0]) == "m3"])
    assert {machine_of(t) for t, _ in pending(src, "p1") + pending(src, "p2")} == {"m2"}
    with Outbox(dst, caps=CAPS) as box:
        chain = box.load_chain().to_dict()
        for key in (topic("m1"), topic("m1", "state"), f"dest:p2:{topic('m1')}"):
            assert chain[key] == chain_before[key]  # seq and prev hash as they were
        # the chain continues where it was: seq 6 is the next, anything else is refused
        with pytest.raises(ValueError, match="expected 6"):
            box.append(topic("m1"), 1, h("x"), b"x", retain=False, dests=["p1"])
        box.append(topic("m1"), 6, h("y"), b"y", retain=False, dests=["p1"])
    with Outbox(src, caps=CAPS) as box:
        assert all(machine_of(k) == "m2" for k in box.load_chain().to_dict())
    assert balanced(src) and balanced(dst)


def test_outbox_move_into_a_new_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "a" / FILENAME, tmp_path / "b" / FILENAME
    fill_outbox(src, ["m1"])
    before = pending(src, "p1")
    dst.parent.mkdir()
    OutboxMachines().move(src, dst, ["m1"])
    assert pending(dst, "p1") == before and pending(src, "p1") == []
    assert OutboxMachines().stored_machines(dst) == {"m1"}
    assert OutboxMachines().stored_machines(src) == set()
    assert not OutboxMachines().holds_rows(src)


KILLER = """
import os, signal, sys
from pathlib import Path
from {module} import {cls}

class Killed({cls}):
    def {hook}(self, *args):
        super().{hook}(*args)
        os.kill(os.getpid(), signal.SIGKILL)

Killed().move(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","))
"""


def killed_move(module: str, cls: str, hook: str, src: Path, dst: Path, machines: str) -> None:
    """Run a move in a subprocess SIGKILLed at `hook`: `after_copy` dies before the target
    commits, `after_delete` after the target committed and before the source does."""
    code = textwrap.dedent(KILLER.format(module=module, cls=cls, hook=hook))
    run = subprocess.run([sys.executable, "-c", code, str(src), str(dst), machines],
                         cwd=ROOT, capture_output=True, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()


@pytest.mark.parametrize("hook", ["after_copy", "after_delete"])
def test_outbox_move_killed_midway_is_finished_once(tmp_path: Path, hook: str) -> None:
    src, dst = tmp_path / "a" / FILENAME, tmp_path / "b" / FILENAME
    fill_outbox(src, ["m1", "m2"])
    fill_outbox(dst, ["m3"])
    before = {d: pending(src, d) + pending(dst, d) for d in CAPS}
    killed_move("edge.egress.outbox", "OutboxMachines", hook, src, dst, "m1")
    in_both = [x for x in pending(dst, "p1") if machine_of(x[0]) == "m1"]
    if hook == "after_delete":  # the copy committed, the delete did not: in both files
        assert in_both and all(x in pending(src, "p1") for x in in_both)
    else:
        assert in_both == []
    again = OutboxMachines().move(src, dst, ["m1"])
    assert again.copied["envelopes"] == (0 if hook == "after_delete" else 15)
    for dest in CAPS:  # every row exactly once over the two files, none lost
        after = pending(src, dest) + pending(dst, dest)
        assert sorted(after) == sorted(before[dest])
        assert {machine_of(t) for t, _ in pending(src, dest)} == {"m2"}
    assert balanced(src) and balanced(dst)
    with Outbox(dst, caps=CAPS) as box:
        assert box.load_chain().last(topic("m1")) == (5, h(f"{topic('m1')}5"))


def test_a_clash_keeps_the_targets_chain_and_sends_both_backlogs(tmp_path: Path) -> None:
    """A target whose chain of the machine an earlier gateway restarted at seq 1."""
    src, dst = tmp_path / "a" / FILENAME, tmp_path / "b" / FILENAME
    fill_outbox(src, ["m1"], n=5)
    fill_outbox(dst, ["m1"], n=2, tag="(restarted)")
    old, new = pending(src, "p1"), pending(dst, "p1")
    moved = OutboxMachines().move(src, dst, ["m1"])
    assert moved.clashes["chain"] == 3
    assert pending(dst, "p1") == new + old
    with Outbox(dst, caps=CAPS) as box:
        assert box.load_chain().last(topic("m1")) == (2, h(f"{topic('m1')}2"))


def engine_state(segments: list[list[Any]], counts: list[list[Any]]) -> dict[str, Any]:
    return {"asset": "x", "state": "active", "segments": segments, "counts": counts}


def us(minutes: int) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1_000_000)


def fill_oee(path: Path, machine: str, at: int) -> None:
    segs = [[us(i), us(i + 1), "run", "p"] for i in range(3)]
    counts = [[us(i), "p", i, 0] for i in range(3)] + [[us(2), "p", 2, 0]]  # a repeated row
    with OeeStore(path) as store:
        store.save([EngineDelta(machine, None, 3, engine_state(segs, counts),
                                T0 + timedelta(minutes=at))],
                   [ClosedWindow(machine, "shift:early", T0, T0 + timedelta(hours=8),
                                 {"oee": 0.5})],
                   last_tick=T0 + timedelta(minutes=at))


@pytest.mark.parametrize("hook", ["", "after_delete"])
def test_oee_move_takes_the_engine_and_windows(tmp_path: Path, hook: str) -> None:
    src, dst = tmp_path / "a" / "oee.sqlite3", tmp_path / "b" / "oee.sqlite3"
    fill_oee(src, "m1", at=10)
    fill_oee(src, "m2", at=10)
    fill_oee(dst, "m3", at=20)
    with OeeStore(src) as store:
        m1 = store.load("m1")
    if hook:
        killed_move("edge.kpi.store", "OeeMachines", hook, src, dst, "m1")
    OeeMachines().move(src, dst, ["m1"])
    with OeeStore(dst) as store:
        assert store.load("m1") == m1  # head, segments, counts (the repeated one too)
        assert store.closed_window("m1", "shift:early", T0) == {"oee": 0.5}
        assert store.load("m3") is not None
        assert store.last_tick() == T0 + timedelta(minutes=10)  # the earlier of the two
    with OeeStore(src) as store:
        assert store.load("m1") is None and store.load("m2") is not None
        assert store.closed_window("m1", "shift:early", T0) is None
    assert OeeMachines().stored_machines(src) == {"m2"}


@pytest.mark.parametrize("hook", ["", "after_delete"])
def test_part_move_continues_the_part_sequence(tmp_path: Path, hook: str) -> None:
    src, dst = tmp_path / "a" / "parts.sqlite3", tmp_path / "b" / "parts.sqlite3"

    def record(seq: int) -> dict[str, Any]:
        end = (T0 + timedelta(minutes=seq)).isoformat()
        return {"part_seq": seq, "end": end, "program": "p", "verdict": "good", "parts": 1,
                "energy_kwh": 0.1, "co2e_kg": None}

    with PartStore(src) as store:
        store.save("m1", {"next_seq": 4, "open": {"start": "t"}}, T0,
                   [record(i) for i in (1, 2, 3)], {(T0.isoformat(), "producing"): 0.5})
        store.save("m2", {"next_seq": 2}, T0, [record(1)])
    if hook:
        killed_move("edge.parts.store", "PartMachines", hook, src, dst, "m1")
    PartMachines().move(src, dst, ["m1"])
    with PartStore(dst) as store:
        saved = store.load("m1")
        assert saved is not None and saved.state == {"next_seq": 4, "open": {"start": "t"}}
        assert [r["part_seq"] for r in store.records("m1", T0, T0 + timedelta(hours=1))] == [
            1, 2, 3]
        assert store.energy("m1", T0, T0 + timedelta(hours=1)) == [(T0, "producing", 0.5)]
    with PartStore(src) as store:
        assert store.load("m1") is None and store.load("m2") is not None
        assert store.energy("m1", T0, T0 + timedelta(hours=1)) == []


@pytest.mark.parametrize("hook", ["", "after_delete"])
def test_booking_move_keeps_bookings_and_unpublished_records(tmp_path: Path, hook: str) -> None:
    src, dst = tmp_path / "a" / "bookings.sqlite3", tmp_path / "b" / "bookings.sqlite3"

    def ask(store: BookingStore, machine: str, ref: str) -> str:
        req = parse_reserve({"asset": machine, "reference": ref,
                             "start": (T0 + timedelta(hours=1)).isoformat(),
                             "end": (T0 + timedelta(hours=2)).isoformat()})
        row, _ = store.reserve("p", req, [Candidate(machine)], calendar=ShiftCalendar(),
                               rules=BookingRules(), now=T0)
        return row.id

    with BookingStore(src, durable=False) as store:
        b1 = ask(store, "m1", "r1")
        ask(store, "m2", "r2")
        store.mark_published(s for s, m, _ in store.unpublished() if m == "m2")
        records = [r for _, m, r in store.unpublished() if m == "m1"]
    if hook:
        killed_move("edge.bookings.store", "BookingMachines", hook, src, dst, "m1")
    BookingMachines().move(src, dst, ["m1"])
    with BookingStore(dst, durable=False) as store:
        row = store.get(b1)
        assert row is not None and row.machine == "m1" and row.state == "accepted"
        assert [r for _, m, r in store.unpublished()] == records  # once each, in order
    with BookingStore(src, durable=False) as store:
        assert store.get(b1) is None and store.unpublished() == []
    assert BookingMachines().stored_machines(src) == {"m2"}


def test_a_corrupt_source_is_moved_aside_as_the_store_would(tmp_path: Path) -> None:
    src = tmp_path / "a" / "parts.sqlite3"
    src.parent.mkdir()
    src.write_bytes(b"not a database at all, just bytes" * 100)
    assert PartMachines().stored_machines(src) == set()
    assert list(src.parent.glob("parts.sqlite3.corrupt-*"))


def test_rows_of_no_machine_stay(tmp_path: Path) -> None:
    src = tmp_path / "a" / FILENAME
    with Outbox(src, caps=CAPS) as box:
        box.append("edge/plant-a/gw-1/other", 1, h(1), b"x", retain=False, dests=["p1"])
    assert OutboxMachines().stored_machines(src) == set()
    assert OutboxMachines().holds_rows(src)
    conn = sqlite3.connect(src)
    try:
        assert json.dumps(conn.execute("SELECT count(*) FROM envelopes").fetchone()) == "[1]"
    finally:
        conn.close()
