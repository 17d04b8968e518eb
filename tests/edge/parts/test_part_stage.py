"""The part stage with its real SQLite store: records emitted once and numbered across
restarts, envelopes kept for the `parts` query, energy windows from the meter, and the
booking a part made in a booked window carries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.metered_plant import metered_machines_yaml
from edge.bookings.desk import part_links
from edge.bookings.publisher import WindowEvidence
from edge.bookings.store import BookingStore
from edge.config.loader import LoadedPlant, load_plant
from edge.parts.energy import EnergyWindows
from edge.parts.recorder import PartRecorder
from edge.parts.store import PartStore
from edge.platform_kit.verifier import verify_envelope
from edge.signing.jws import Signer, signing_input_hash
from models.booking import Candidate, parse_reserve
from models.envelope import envelope_body
from models.machine_state import Availability, Execution, MachineState
from models.plant import BookingRules, ShiftCalendar
from models.sample import Sample

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
YAML = """
gateway:
  id: gw-1
  site: plant-a
  state_dir: state
  carbon: {kg_per_kwh: 0.5, source: test, year: 2025}
""" + metered_machines_yaml("P1", 10, ["spindle_load"])


class Sink:
    """The egress slot as the stage sees it; signs like the sealer so the store keeps it."""

    def __init__(self, recorder: list[PartRecorder]) -> None:
        self.signer = Signer(Ed25519PrivateKey.generate())
        self.recorder = recorder
        self.emitted: list[tuple[str, str | None, str, list[dict[str, Any]]]] = []
        self.prev: str | None = None

    def emit(self, topic: str, asset: str | None, stream: Any,
             records: list[dict[str, Any]]) -> None:
        self.emitted.append((topic, asset, stream, records))
        body = envelope_body(gateway="gw-1", topic=topic, asset=asset, stream=stream,
                             seq=len(self.emitted), prev=self.prev, created=T0,
                             records=records)
        envelope = self.signer.sign_body(body)
        self.prev = signing_input_hash(envelope)
        self.recorder[0].on_sealed(asset, records, envelope)

    def add(self, topic: str, asset: str, records: list[dict[str, Any]], *,
            complete: bool = False) -> None:
        raise AssertionError("the part stage never batches telemetry")


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedPlant:
    (tmp_path / "plant.yaml").write_text(YAML)
    return load_plant(tmp_path / "plant.yaml")


@pytest.fixture
def store(loaded: LoadedPlant) -> Iterator[PartStore]:
    with PartStore(loaded.state_dir / "parts.sqlite3") as s:
        yield s


def stage(loaded: LoadedPlant, store: PartStore) -> tuple[PartRecorder, Sink]:
    holder: list[PartRecorder] = []
    sink = Sink(holder)
    recorder = PartRecorder(lambda: loaded, store, sink, structlog.get_logger())
    holder.append(recorder)
    return recorder, sink


def machine(rec: PartRecorder, s: float, execution: Execution, count: int, bad: int = 0,
            load: float = 40.0) -> None:
    at = T0 + timedelta(seconds=s)
    state = MachineState(asset="m1", availability=Availability.AVAILABLE, execution=execution,
                         program="P1", part_count=count, bad_part_count=bad)
    rec.on_batch("m1", [Sample("m1", "spindle_load", load, "%", at)], state)


def meter(rec: PartRecorder, s: float, watts: float, kwh: float = 0.0) -> None:
    at = T0 + timedelta(seconds=s)
    rec.on_batch("meter", [Sample("meter", "watts", watts, "W", at),
                           Sample("meter", "kwh", kwh, "kWh", at)], None)


def run_parts(rec: PartRecorder, first: int, n: int, offset: float = 0.0) -> None:
    """n parts of 10 s cutting at 3.6 kW (0.01 kWh) and 5 s idle at 720 W, 1 s meter reads."""
    for i in range(n):
        base = offset + 15 * i
        machine(rec, base, Execution.ACTIVE, first + i, bad=1 if i >= 2 else 0)
        for s in range(10):
            meter(rec, base + s, 3600.0)
        machine(rec, base + 10, Execution.READY, first + i + 1, bad=1 if i >= 1 else 0)
        for s in range(10, 15):
            meter(rec, base + s, 720.0)


def test_records_are_emitted_stored_with_envelopes_and_paged(
    loaded: LoadedPlant, store: PartStore
) -> None:
    from edge.query.backend import QueryBackend

    rec, sink = stage(loaded, store)
    machine(rec, -1, Execution.READY, 0)
    run_parts(rec, 0, 3)
    assert [r[3][0]["part_seq"] for r in sink.emitted] == [1, 2, 3]
    assert {r[0] for r in sink.emitted} == {"edge/plant-a/a/l/m1/part"}
    first = sink.emitted[0][3][0]
    assert first["energy_kwh"] == pytest.approx(0.01, rel=0.05)  # 1 s reads: trapezoids
    assert first["co2e_kg"] == pytest.approx(first["energy_kwh"] * 0.5)
    assert [r[3][0]["verdict"] for r in sink.emitted] == ["good", "scrap", "good"]

    class Fleet:
        def assets(self) -> list[str]:
            return ["m1", "meter"]

    backend = QueryBackend(lambda: loaded, Fleet(), None, None,  # type: ignore[arg-type]
                           stats=dict, counts=dict, parts=store)
    page = backend.query_parts("m1", {"limit": 2})
    assert [p["part_seq"] for p in page["parts"]] == [1, 2] and page["next"] == 2
    rest = backend.query_parts("m1", {"limit": 2, "after": page["next"]})
    assert [p["part_seq"] for p in rest["parts"]] == [3] and rest["next"] is None
    jwks = {"keys": [sink.signer.public_jwk]}
    for p in page["parts"] + rest["parts"]:
        body = verify_envelope(p["envelope"], jwks, topic="edge/plant-a/a/l/m1/part")
        assert body["records"] == [p["record"]]
    scrap = backend.query_parts("m1", {"verdict": "scrap"})
    assert [p["part_seq"] for p in scrap["parts"]] == [2]
    with pytest.raises(ValueError, match="limit"):
        backend.query_parts("m1", {"limit": 0})


def test_numbering_survives_a_restart_and_the_open_cycle_comes_back_partial(
    loaded: LoadedPlant, store: PartStore
) -> None:
    rec, _ = stage(loaded, store)
    machine(rec, -1, Execution.READY, 0)
    run_parts(rec, 0, 2)
    machine(rec, 30, Execution.ACTIVE, 2, bad=1)
    rec.tick(T0 + timedelta(seconds=31))  # the heartbeat save, then the process dies
    again, sink2 = stage(loaded, store)
    machine(again, 40, Execution.ACTIVE, 2, bad=1)
    machine(again, 42, Execution.READY, 3, bad=1)
    assert sink2.emitted == []  # waiting for the meter's read after the end
    again.tick(T0 + timedelta(seconds=52))  # energy_wait is over: out without energy
    (record,) = [r[3][0] for r in sink2.emitted]
    assert record["energy_kwh"] is None and "no meter reading" in record["energy_basis"]
    assert record["part_seq"] == 3 and record["partial"]
    assert record["gaps"][0]["reason"] == "gateway_restart"
    assert record["cycle_time"] == pytest.approx(12.0)


def test_energy_windows_split_producing_idle_and_count_good_parts(
    loaded: LoadedPlant, store: PartStore
) -> None:
    rec, _ = stage(loaded, store)
    machine(rec, -1, Execution.READY, 0)
    meter(rec, -1, 720.0)
    run_parts(rec, 0, 3)
    windows = EnergyWindows(lambda: loaded, store, rec)
    figures = windows.figures("m1", T0 - timedelta(minutes=1), T0 + timedelta(minutes=2),
                              now=T0 + timedelta(minutes=2))
    assert figures is not None
    assert figures["kwh"]["producing"] == pytest.approx(3 * 0.01, rel=0.05)
    assert figures["kwh"]["total"] == pytest.approx(
        figures["kwh"]["producing"] + figures["kwh"]["idle"] + figures["kwh"]["stopped"])
    assert (figures["good_parts"], figures["scrap_parts"]) == (2, 1)
    assert figures["kwh_per_good_part"] == pytest.approx(figures["kwh"]["total"] / 2)
    assert figures["co2e_kg"] == pytest.approx(figures["kwh"]["total"] * 0.5)
    assert windows.figures("meter", T0, T0 + timedelta(minutes=1)) is None
    # the AAS carbon footprint's rows: per program, published at the end of the period
    now = T0 + timedelta(minutes=2)
    (row,) = windows.footprints("m1", days=1, now=now) or []
    assert (row.program, row.good_parts, row.period_days, row.as_of) == ("P1", 2, 1, now)
    assert row.co2e_kg_per_part == pytest.approx(row.kwh_per_part * 0.5)


def test_a_reload_gives_trackers_new_settings_or_drops_them(
    loaded: LoadedPlant, store: PartStore, tmp_path: Path
) -> None:
    current = [loaded]
    holder: list[PartRecorder] = []
    rec = PartRecorder(lambda: current[0], store, Sink(holder), structlog.get_logger())
    holder.append(rec)
    machine(rec, 0, Execution.READY, 0)
    (tmp_path / "plant.yaml").write_text(YAML.replace("[spindle_load]", "[coolant_temperature]"))
    current[0] = load_plant(tmp_path / "plant.yaml")
    rec.reconfigure()
    assert rec.trackers["m1"].settings.signals == ("coolant_temperature",)
    (tmp_path / "plant.yaml").write_text(YAML.replace(
        "    part_record: {signals: [spindle_load]}\n", ""))
    current[0] = load_plant(tmp_path / "plant.yaml")
    rec.reconfigure()
    assert "m1" not in rec.trackers and store.load("m1") is not None


def test_a_simulated_machine_records_its_ideal_cycle_in_wall_seconds(tmp_path: Path) -> None:
    """Served 10x fast, P1 (10 s) makes a part in 1 s of wall time: the record compares its
    measured cycle with that, not with the machine's 10 s (`Machine.cycle_times`)."""
    fast = YAML.replace("    programs:", "    simulate: true\n    simulator: {time_scale: 10}\n"
                        "    programs:", 1)
    (tmp_path / "plant.yaml").write_text(fast)
    loaded = load_plant(tmp_path / "plant.yaml")
    with PartStore(loaded.state_dir / "parts.sqlite3") as store:
        rec, sink = stage(loaded, store)
        machine(rec, -1, Execution.READY, 0)
        run_parts(rec, 0, 1)
        rec.tick(T0 + timedelta(seconds=60))
    (record,) = [r[3][0] for r in sink.emitted]
    assert record["ideal_cycle_time"] == 1.0 and record["cycle_time"] == pytest.approx(10.0)


def test_parts_in_a_booked_window_carry_the_booking_and_settle_its_evidence(
    loaded: LoadedPlant, store: PartStore, tmp_path: Path
) -> None:
    with BookingStore(tmp_path / "bookings.sqlite3", durable=False) as bookings:
        req = parse_reserve({"asset": "m1", "reference": "PO-1",
                             "start": (T0 + timedelta(seconds=12)).isoformat(),
                             "end": (T0 + timedelta(seconds=41)).isoformat()})
        booked, _ = bookings.reserve("p", req, [Candidate("m1")], calendar=ShiftCalendar(),
                                     rules=BookingRules(), now=T0 - timedelta(minutes=1))
        holder: list[PartRecorder] = []
        sink = Sink(holder)
        rec = PartRecorder(lambda: loaded, store, sink, structlog.get_logger(),
                           booking_of=part_links(bookings))
        holder.append(rec)
        end = T0 + timedelta(seconds=41)
        machine(rec, -1, Execution.READY, 0)
        run_parts(rec, 0, 3)  # parts end at 10 s, 25 s and 40 s
        links = [r[3][0]["booking"] for r in sink.emitted]
        assert links == [None, booked.link(), booked.link()]
        assert links[1]["reference"] is None  # a commitment, not the platform's reference
        assert not rec.settled("m1", end, end)  # m1 not read past the window's end yet
        machine(rec, 42, Execution.READY, 3)
        assert rec.settled("m1", end, end)
        # a part that ended before t and still waits for its meter keeps t unsettled
        machine(rec, 55, Execution.ACTIVE, 3)
        machine(rec, 60, Execution.READY, 4)
        machine(rec, 62, Execution.READY, 4)
        later = T0 + timedelta(seconds=61)
        assert not rec.settled("m1", later, T0 + timedelta(seconds=62))
        rec.tick(T0 + timedelta(seconds=71))  # energy_wait over: published without energy
        assert rec.settled("m1", later, T0 + timedelta(seconds=71))
        assert rec.keeps_parts("m1") and not rec.keeps_parts("meter")

        asked: list[tuple[Any, ...]] = []

        def window(asset: str, kind: str, **kw: Any) -> dict[str, Any]:
            asked.append((asset, kind, kw["start"], kw["end"]))
            return {"window": {"kind": kind}}

        evidence = WindowEvidence(window, store.records, rec)
        (done,) = bookings.close_due(T0 + timedelta(seconds=72), evidence=evidence)
        assert done.id == booked.id and done.state == "completed"
        assert asked == [("m1", "range", booked.start, booked.end)]
        (completed,) = [r for _, _, r in bookings.unpublished() if r["state"] == "completed"]
        assert completed["parts"] == {"first_seq": 2, "last_seq": 3, "records": 2, "parts": 2,
                                      "good": 1, "scrap": 1, "unknown": 0}
        assert completed["oee"] == {"window": {"kind": "range"}}


async def test_saves_on_the_writer_thread_count_once_in_a_window_before_and_after_commit(
    loaded: LoadedPlant,
) -> None:
    """The gateway's saves are queued on its store writer thread (issue 17, item 2): a
    window's energy figures asked while they wait must be those asked once they are
    committed (nothing missed, nothing counted twice), and the numbering continues after
    a restart from what the thread committed."""
    from edge.storage.writer import WriterThread

    writes = WriterThread(name="store-writer", linger=0.05)  # the saves wait: asked meanwhile
    store = PartStore(loaded.state_dir / "parts.sqlite3", writes=writes)
    try:
        rec, sink = stage(loaded, store)
        machine(rec, -1, Execution.READY, 0)
        meter(rec, -1, 720.0)
        run_parts(rec, 0, 3)
        windows = EnergyWindows(lambda: loaded, store, rec)
        span = (T0 - timedelta(minutes=1), T0 + timedelta(minutes=2))
        assert rec.unsaved("m1", 0), "the saves are still queued"
        waiting = windows.figures("m1", *span, now=T0 + timedelta(minutes=2))
        await writes.drain()
        assert rec.unsaved("m1", 0) == []
        committed = windows.figures("m1", *span, now=T0 + timedelta(minutes=2))
        assert waiting == committed
        assert committed is not None and (committed["good_parts"], committed["scrap_parts"]) \
            == (2, 1)
        assert committed["kwh"]["producing"] == pytest.approx(3 * 0.01, rel=0.05)
        assert [r["part_seq"] for r in rec.records("m1", *span)] == [1, 2, 3]
        assert [r[3][0]["part_seq"] for r in sink.emitted] == [1, 2, 3]
        rec.close()
    finally:
        await writes.close()
        store.close()
    with PartStore(loaded.state_dir / "parts.sqlite3") as reopened:
        again, sink2 = stage(loaded, reopened)
        run_parts(again, 3, 1, offset=60.0)
        assert [r[3][0]["part_seq"] for r in sink2.emitted] == [4]
        assert reopened.page(["m1"])[2].envelope is not None, "envelopes attached on the thread"
