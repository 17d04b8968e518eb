"""Which worker serves which machine, and the parent's aggregated status.

Why: a machine's chains live in one worker's outbox, so every machine must belong to
exactly one worker and keep it while the YAML changes around it; and the one status a
platform reads must add up what the workers report.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.loader import LoadedPlant, load_plant
from edge.config.workers import (
    MAX_DEFAULT_WORKERS,
    OUTBOX,
    PINNED,
    WorkerRole,
    as_worker,
    assignment,
    default_workers,
    owner,
    resolve_workers,
    worker_of,
)
from edge.daemon.workers import aggregate
from edge.egress.outbox import FILENAME as OUTBOX_FILE
from models.errors import ConfigurationError
from models.plant import Destination, Machine


def machines(ids: list[str]) -> list[Machine]:
    return [Machine.model_validate({
        "id": i, "area": "a", "line": "l", "adapter": "modbus",
        "connection": {"host": "127.0.0.1", "port": 502},
        "points": [{"name": "x", "register": "holding", "address": 0}]}) for i in ids]


def test_every_machine_in_exactly_one_worker_and_it_stays_there() -> None:
    ids = [f"m{i}" for i in range(200)]
    slices = assignment(machines(ids), 4)
    assert sorted(m for s in slices for m in s) == sorted(ids)
    assert all(30 < len(s) < 70 for s in slices)  # spread, not piled on one worker
    grown = assignment(machines(["new-1", *ids[::-1], "new-2"]), 4)  # added, reordered
    for i in range(4):
        assert set(slices[i]) <= set(grown[i])
    assert worker_of("m7", 3) == worker_of("m7", 3)


def test_an_energy_meter_runs_in_the_worker_of_the_machine_it_meters(tmp_path: Path) -> None:
    loaded = _plant(tmp_path, 40)
    ids = [m.id for m in loaded.plant.machines]
    meter = next(i for i in ids if worker_of(i, 2) != worker_of("m0", 2))
    plant = loaded.plant.model_copy(update={"machines": [
        m.model_copy(update={"meter_for": "m0"}) if m.id == meter else m
        for m in loaded.plant.machines]})
    assert owner(plant, meter, 2) == owner(plant, "m0", 2) == worker_of("m0", 2)
    assert owner(plant, "m-unknown", 2) == worker_of("m-unknown", 2)
    mine = as_worker(dataclasses.replace(loaded, plant=plant), WorkerRole(worker_of("m0", 2), 2))
    assert {"m0", meter} <= {m.id for m in mine.plant.machines}


def test_role_and_default() -> None:
    assert WorkerRole.parse("1/3") == WorkerRole(1, 3)
    assert WorkerRole(1, 3).directory == "worker-1" and WorkerRole(1, 3).suffix == "-w1"
    with pytest.raises(ValueError, match="worker 3 of 3"):
        WorkerRole(3, 3)
    assert default_workers(1) == 1  # never more workers than machines
    assert 1 <= default_workers(500) <= 8


def test_aggregate_sums_destinations_and_merges_devices() -> None:
    rep = {"destinations": {"a": {"connected": True, "broker": "b:1", "sent": 5, "pending": 1,
                                  "dropped": 0}},
           "devices": {"m1": "running"},
           "losses": {"lost_records": 2, "by_machine": {"m1": 2}, "unreported_gaps": 0,
                      "unreported_by_machine": {}},
           "unsignable": {"replaced": 3, "dropped": 0,
                          "by_machine": {"m1": {"replaced": 3, "dropped": 0}}}}
    rep2 = {"destinations": {"a": {"connected": False, "broker": "b:1", "sent": 7,
                                   "pending": 0, "dropped": 1}},
            "devices": {"m2": "down"},
            "device_reasons": {"m2": "refused"},
            "device_faults": {"m2": {"status": "down", "reason": "refused"}},
            "losses": {"lost_records": 0, "by_machine": {}, "unreported_gaps": 1,
                       "unreported_by_machine": {"m2": 1}},
            "unsignable": {"replaced": 0, "dropped": 1,
                           "by_machine": {"m2": {"replaced": 0, "dropped": 1}}}}
    out = aggregate([rep, rep2, {}])  # {}: a worker that has not reported yet
    a = out["destinations"]["a"]
    assert (a["connected"], a["sent"], a["pending"], a["dropped"]) == (False, 12, 1, 1)
    assert out["devices"] == {"m1": "running", "m2": "down"}
    assert out["losses"] == {"lost_records": 2, "by_machine": {"m1": 2}, "unreported_gaps": 1,
                             "unreported_by_machine": {"m2": 1}}
    assert out["device_reasons"] == {"m2": "refused"}
    assert out["device_faults"] == {"m2": {"status": "down", "reason": "refused"}}
    assert out["unsignable"] == {"replaced": 3, "dropped": 1, "by_machine": {
        "m1": {"replaced": 3, "dropped": 0}, "m2": {"replaced": 0, "dropped": 1}}}
    assert "device_faults" not in aggregate([rep])  # all up: left out, as in one process


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_bad_workers_flag_is_a_clear_error(value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-c", "x.yaml",
                           "--workers", value], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "expected 1..64 or auto" in proc.stderr and "Traceback" not in proc.stderr


def test_auto_is_cores_capped_with_enough_machines_each() -> None:
    assert default_workers(200, cores=1) == 1  # a one-core box
    assert default_workers(20, cores=8) == 1  # a small plant: one process
    assert default_workers(40, cores=8) == 2  # 16 machines per worker at least
    assert default_workers(200, cores=8) == MAX_DEFAULT_WORKERS == 4
    assert default_workers(200, cores=3) == 3
    assert OUTBOX == OUTBOX_FILE


def _plant(tmp_path: Path, machines: int) -> LoadedPlant:
    rows = "".join(
        f"  - {{id: m{i}, area: a, line: l, adapter: modbus, "
        f"connection: {{host: 127.0.0.1, port: 502}}, "
        f"points: [{{name: x, register: holding, address: 0}}]}}\n" for i in range(machines))
    path = tmp_path / "plant.yaml"
    path.write_text(f"gateway: {{id: gw, site: s, state_dir: {tmp_path / 'state'}}}\n"
                    f"machines:\n{rows}")
    return load_plant(path)


def test_auto_is_decided_once_per_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _plant(tmp_path, 64)
    assert loaded.plant.gateway.workers == "auto"  # the default
    monkeypatch.setattr("edge.config.workers.usable_cores", lambda: 4)
    assert resolve_workers(loaded, None) == 4
    assert (loaded.state_dir / PINNED).read_text() == "4\n"
    monkeypatch.setattr("edge.config.workers.usable_cores", lambda: 2)  # new hardware
    assert resolve_workers(loaded, None) == 4  # kept: machines stay in their outboxes
    assert resolve_workers(loaded, 2) == 2  # an explicit count wins
    # a state directory one process used stays one process; one N workers used stays N
    for used, expected in (("outbox.sqlite3", 1), ("worker-2/outbox.sqlite3", 3)):
        (tmp_path / "state").rename(tmp_path / f"old-{expected}")
        (loaded.state_dir / used).parent.mkdir(parents=True)
        (loaded.state_dir / used).touch()
        assert resolve_workers(loaded, None) == expected


def test_one_process_when_sparkplug(tmp_path: Path) -> None:
    loaded = _plant(tmp_path, 64)
    spark = loaded.plant.model_copy(update={"destinations": [Destination.model_validate(
        {"id": "sp", "url": "mqtt://127.0.0.1:1883", "format": "sparkplug_b"})]})
    assert resolve_workers(dataclasses.replace(loaded, plant=spark), None) == 1
    assert not (loaded.state_dir / PINNED).exists()  # not pinned: the reason may go away
    with pytest.raises(ConfigurationError, match="sparkplug_b"):
        resolve_workers(dataclasses.replace(loaded, plant=spark), 2)
