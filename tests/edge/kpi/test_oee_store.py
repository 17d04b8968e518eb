"""OeeStore against real SQLite files: incremental saves, closed windows, retention,
corruption recovery and error translation."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from recording_logger import RecordingLogger

from edge.kpi.oee import OeeEngine
from edge.kpi.store import FILENAME, ClosedWindow, EngineDelta, OeeStore, OeeStoreError
from models.errors import ConfigurationError
from models.machine_state import Execution as X
from models.plant import Shift, ShiftCalendar

CAL = ShiftCalendar(shifts=[Shift(name="early", start=time(6), end=time(14))])
T0 = datetime(2024, 6, 3, 6, tzinfo=UTC)


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def run(eng: OeeEngine, start: float, stop: float) -> None:
    """A state change and a part every minute in [start, stop)."""
    for m in range(int(start), int(stop)):
        eng.on_state(minutes(m), X.ACTIVE if m % 3 else X.READY, True, "p")
        eng.on_counts(minutes(m), m, m // 10)


def save(
    store: OeeStore,
    eng: OeeEngine,
    cursor: int | None,
    at: datetime,
    windows: list[ClosedWindow] | None = None,
) -> tuple[int | None, list[ClosedWindow]]:
    state, new = eng.export_since(cursor)
    return new, store.save(
        [EngineDelta(eng.asset, cursor, new, state, at)], windows or [], last_tick=at
    )


def window(asset: str, start: float, end: float, oee: float) -> ClosedWindow:
    return ClosedWindow(asset, "shift:early", minutes(start), minutes(end), {"oee": oee})


def test_incremental_saves_load_back_the_whole_engine(tmp_path: Path) -> None:
    eng = OeeEngine("m1", CAL, 2.0)
    with OeeStore(tmp_path / FILENAME) as store:
        assert store.load("m1") is None and store.last_tick() is None
        cursor = None
        for chunk in range(4):
            run(eng, chunk * 30, chunk * 30 + 30)
            cursor, _ = save(store, eng, cursor, minutes(chunk * 30 + 30))
        # A save repeated after an ambiguous failure (same cursor) does not duplicate rows.
        state, _ = eng.export_since(None)
        store.save([EngineDelta("m1", None, cursor, state, minutes(120))])
    with OeeStore(tmp_path / FILENAME) as store:
        saved = store.load("m1")
        assert saved is not None
        assert saved.state == eng.state_dict()
        assert (saved.cursor, saved.alive) == (cursor, minutes(120))
        assert store.last_tick() == minutes(120)
        back = OeeEngine.from_state_dict(saved.state, CAL, 2.0)
        assert back.window(T0, minutes(480)) == eng.window(T0, minutes(480))


def test_closed_windows_are_new_once_and_served_back(tmp_path: Path) -> None:
    with OeeStore(tmp_path / FILENAME) as store:
        first = [window("m1", 0, 480, 0.5), window("m2", 0, 480, 0.25)]
        assert store.save([], first) == first
        again = [window("m1", 0, 480, 0.9), window("m1", 1440, 1920, 0.7)]
        assert store.save([], again) == again[1:]  # the stored record is not replaced
        assert store.closed_window("m1", "shift:early", minutes(0)) == {"oee": 0.5}
        assert store.closed_window("m1", "shift:late", minutes(0)) is None
        assert store.closed_windows("m1", T0, minutes(2000)) == [{"oee": 0.5}, {"oee": 0.7}]
        assert store.closed_windows("m1", minutes(1), minutes(2000)) == [{"oee": 0.7}]


def test_retention_removes_old_rows_and_keeps_recent_ones(tmp_path: Path) -> None:
    day = 24 * 60
    log = RecordingLogger()
    eng = OeeEngine("m1", CAL, 2.0)
    gone = OeeEngine("old", CAL, 2.0)  # a machine removed from the YAML long ago
    with OeeStore(
        tmp_path / FILENAME, raw_retention_days=2, window_retention_days=5, logger=log
    ) as store:
        run(gone, 0, 30)
        save(store, gone, None, minutes(30))
        run(eng, 0, 30)
        cursor, _ = save(store, eng, None, minutes(30), [window("m1", 0, 480, 0.5)])
        run(eng, 3 * day, 3 * day + 30)
        save(store, eng, cursor, minutes(3 * day + 30), [window("m1", 3 * day, 3 * day + 480, 0.6)])
        removed = store.prune(minutes(4 * day))  # raw cutoff day 2, window cutoff day -1
        assert removed["segments"] > 0 and removed["counts"] > 0 and removed["engines"] == 1
        assert removed["windows"] == 0
        saved = store.load("m1")
        assert saved is not None
        cutoff = minutes(2 * day).timestamp() * 1e6
        assert min(s[1] for s in saved.state["segments"]) > cutoff  # crossing it: kept whole
        assert min(c[0] for c in saved.state["counts"]) > cutoff
        assert store.load("old") is None
        assert store.prune(minutes(6 * day))["windows"] == 1  # the day-0 shift (ended 480 min)
        assert store.closed_windows("m1", T0, minutes(10 * day)) == [{"oee": 0.6}]
        assert log.named("oee_store_pruned")
    with pytest.raises(ConfigurationError):
        OeeStore(tmp_path / "x.sqlite3", raw_retention_days=0)


def garbage(path: Path, offset: int, n: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(n))


def assert_moved_aside_and_fresh(tmp_path: Path, log: RecordingLogger, store: OeeStore) -> Path:
    [event] = log.named("oee_store_corrupt_moved_aside")
    aside = Path(event["moved_to"])
    assert aside.exists() and aside.name.startswith(f"{FILENAME}.corrupt-")
    assert event["path"] == str(tmp_path / FILENAME)
    assert store.load("m1") is None
    assert store.save([], [window("m1", 0, 480, 0.5)])  # the fresh store works
    return aside


def test_garbage_file_is_moved_aside_with_its_wal(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(os.urandom(8192))
    path.with_name(FILENAME + "-wal").write_bytes(b"old wal")
    log = RecordingLogger()
    with OeeStore(path, logger=log) as store:
        aside = assert_moved_aside_and_fresh(tmp_path, log, store)
    assert aside.with_name(aside.name + "-wal").read_bytes() == b"old wal"


def test_damaged_pages_are_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    eng = OeeEngine("m1", CAL, 2.0)
    with OeeStore(path) as store:
        cursor = None
        for chunk in range(40):
            run(eng, chunk * 30, chunk * 30 + 30)
            cursor, _ = save(store, eng, cursor, minutes(chunk * 30 + 30))
    garbage(path, 4096 * 2, 4096 * 6)  # header intact, b-tree pages destroyed
    log = RecordingLogger()
    with OeeStore(path, logger=log) as store:
        assert_moved_aside_and_fresh(tmp_path, log, store)


def test_errors_are_translated_and_files_kept(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot create"):
        OeeStore(tmp_path / "file" / FILENAME)
    path = tmp_path / FILENAME
    OeeStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format'")
    db.close()
    with pytest.raises(ConfigurationError, match="downgraded"):
        OeeStore(path)
    assert not list(tmp_path.glob("*.corrupt-*"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
        db.execute("INSERT INTO engines VALUES ('m1', 'not json', NULL, 0, 0)")
    db.close()
    store = OeeStore(path)
    with pytest.raises(OeeStoreError, match="malformed"):
        store.load("m1")
    store.close()
    with pytest.raises(OeeStoreError, match="closed"):
        store.save([], [window("m1", 0, 480, 0.5)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OeeStoreError), OeeStore(path, busy_timeout=0.05):
            pass
    finally:
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
