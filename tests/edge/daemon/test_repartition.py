"""The parent's repartition on real store files: after a change of the worker count (2 -> 1
-> 3, and an interrupted move) each machine's rows are in exactly the files of the worker
that serves it, the files nobody opens any more are gone, and the count is pinned."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e import plant_yaml
from recording_logger import RecordingLogger

from edge.config.loader import LoadedPlant, load_plant
from edge.config.workers import PINNED, WorkerRole, owner, resolve_workers
from edge.daemon.repartition import STORES, Repartition
from edge.egress.outbox import FILENAME, Outbox, OutboxCap, OutboxMachines, machine_of
from edge.parts.store import PartStore
from edge.query.nonces import NONCE_FILE, NonceStore
from edge.signing.jws import b64url_encode
from edge.storage.move import Moved

MACHINES = [f"m{i}" for i in range(1, 7)]
CAPS = {"local": OutboxCap(1 << 30)}
T0 = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


def plant(tmp_path: Path) -> LoadedPlant:
    path = tmp_path / "plant.yaml"
    path.write_text(plant_yaml(tmp_path / "state", [1000 + i for i in range(6)], 1883))
    return load_plant(path)


def home(loaded: LoadedPlant, machine: str, count: int) -> Path:
    if count == 1:
        return loaded.state_dir
    return loaded.state_dir / WorkerRole(owner(loaded.plant, machine, count), count).directory


def seed(loaded: LoadedPlant, count: int) -> None:
    """Each machine's outbox rows and part tracker where `count` workers keep them."""
    for m in MACHINES:
        where = home(loaded, m, count)
        t = f"edge/plant-a/hall-1/line-1/{m}/telemetry"
        with Outbox(where / FILENAME, caps=CAPS) as box:
            for seq in (1, 2, 3):
                box.append(t, seq, b64url_encode(hashlib.sha256(f"{t}{seq}".encode()).digest()),
                           f"{t}#{seq}".encode(), retain=False, dests=["local"])
        with PartStore(where / "parts.sqlite3") as parts:
            parts.save(m, {"next_seq": 7}, T0)


def placed(loaded: LoadedPlant) -> dict[str, set[Path]]:
    """Machine -> every file holding any row of it."""
    out: dict[str, set[Path]] = {}
    base = loaded.state_dir
    for where in [base, *base.glob("worker-*")]:
        for store in (kind() for kind in STORES):
            path = where / store.filename
            if path.exists():
                for m in store.stored_machines(path):
                    out.setdefault(m, set()).add(path)
    return out


def pending(loaded: LoadedPlant) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    base = loaded.state_dir
    for path in [base / FILENAME, *base.glob(f"worker-*/{FILENAME}")]:
        if path.exists():
            with Outbox(path, caps=CAPS) as box:
                for r in box.peek("local", limit=1000):
                    out.setdefault(machine_of(r.topic) or "", []).append(r.payload)
    return out


def test_two_to_one_to_three_workers(tmp_path: Path) -> None:
    loaded = plant(tmp_path)
    seed(loaded, 2)
    before = pending(loaded)
    assert {len(v) for v in before.values()} == {3}
    log = RecordingLogger()
    for count in (1, 3, 3):  # the second run of 3 has nothing to do
        done = Repartition(loaded, count, log).run()
        for m in MACHINES:
            expected = home(loaded, m, count)
            assert {p.parent for p in placed(loaded)[m]} == {expected}, (count, m)
        assert pending(loaded) == before  # every row once, each machine's in order
        assert (loaded.state_dir / PINNED).read_text() == f"{count}\n"
        assert resolve_workers(loaded, None) == count  # `auto` keeps the layout
    assert done == []
    base = loaded.state_dir
    assert not (base / FILENAME).exists() and not (base / "parts.sqlite3").exists()
    assert sorted(p.name for p in base.glob("worker-*")) == ["worker-0", "worker-1", "worker-2"]
    assert log.named("worker_state_repartitioned")[0]["workers"] == 1
    for m in MACHINES:
        with PartStore(home(loaded, m, 3) / "parts.sqlite3") as parts:
            saved = parts.load(m)
            assert saved is not None and saved.state == {"next_seq": 7}


def test_shrinking_removes_the_workers_files_and_directory(tmp_path: Path) -> None:
    loaded = plant(tmp_path)
    seed(loaded, 3)
    NonceStore(loaded.state_dir / "worker-2" / NONCE_FILE).close()  # a worker opens one
    Repartition(loaded, 2, RecordingLogger()).run()
    assert not (loaded.state_dir / "worker-2").exists()
    assert {m: len(v) for m, v in pending(loaded).items()} == dict.fromkeys(MACHINES, 3)


def test_an_interrupted_move_is_finished(tmp_path: Path) -> None:
    """A machine's rows in two files (a kill between a move's commits): one copy stays."""
    loaded = plant(tmp_path)
    seed(loaded, 2)
    m = MACHINES[0]
    src = home(loaded, m, 2) / FILENAME
    dst = loaded.state_dir / FILENAME
    rows = pending(loaded)[m]

    class Interrupted(OutboxMachines):
        def after_delete(self, source: sqlite3.Connection, moved: Moved) -> None:
            raise KeyboardInterrupt  # the source's delete never commits

    with pytest.raises(KeyboardInterrupt):
        Interrupted().move(src, dst, [m])
    assert len(placed(loaded)[m] & {src, dst}) == 2
    Repartition(loaded, 1, RecordingLogger()).run()
    assert pending(loaded)[m] == rows


def test_rows_of_no_machine_keep_their_file(tmp_path: Path) -> None:
    loaded = plant(tmp_path)
    seed(loaded, 2)
    with Outbox(loaded.state_dir / "worker-1" / FILENAME, caps=CAPS) as box:
        box.append("edge/plant-a/gw-1/other", 1, b64url_encode(bytes(32)), b"x", retain=False,
                   dests=["local"])
    log = RecordingLogger()
    Repartition(loaded, 1, log).run()
    [left] = log.named("store_left_behind")
    assert left["path"] == str(loaded.state_dir / "worker-1" / FILENAME)
    assert (loaded.state_dir / "worker-1" / FILENAME).exists()
