"""OEE rows an older gateway stored for an energy meter are dropped at start, logged once.

Older versions ran an engine for every machine, meters too (rated 0 % available all shift);
their engines and closed shift windows stayed in the state directory. A store written that
way (real SQLite, by a KpiService that saw the meter as a producing machine) must serve
nothing of the meter after a restart, and keep every row of the machine it meters.
"""

from __future__ import annotations

from pathlib import Path

from recording_logger import RecordingLogger
from test_kpi import Clock, berlin, make_plant, st

from edge.kpi.service import KpiService
from edge.kpi.store import OeeStore
from models.machine_state import Execution as X
from models.plant import EnergyRoles, Plant


def metered_plant() -> Plant:
    plant = make_plant(machines=("m1",))
    meter = plant.machines[0].model_copy(update={
        "id": "m1-meter", "meter_for": "m1", "ideal_cycle_time": None,
        "energy": EnergyRoles(energy_kwh="kwh", power_w="w")})
    return plant.model_copy(update={"machines": [*plant.machines, meter]})


def as_older_gateways_saw_it(plant: Plant) -> Plant:
    """The same plant with the meter rated like any machine (before `producing`)."""
    return plant.model_copy(update={"machines": [
        m.model_copy(update={"meter_for": None}) for m in plant.machines]})


def rows(store: OeeStore, asset: str) -> dict[str, int]:
    with store._snapshot("count") as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE asset = ?",
                                (asset,)).fetchone()[0]
                for t in ("engines", "segments", "counts", "windows")}


def test_a_meters_stored_oee_is_dropped_once_and_the_machines_kept(tmp_path: Path) -> None:
    plant = metered_plant()
    with OeeStore(tmp_path / "oee.sqlite3") as store:
        clock = Clock(berlin(6))
        older = KpiService(as_older_gateways_saw_it(plant), store, clock)
        for asset in ("m1", "m1-meter"):
            older.on_state(asset, st(X.ACTIVE, 0, 0, asset), berlin(6))
            older.on_state(asset, st(X.STOPPED, 100, 2, asset), berlin(7))
        clock.t = berlin(14, 1)
        published = {a for a, r in older.tick() if r["window"]["closed"]}
        assert published == {"m1", "m1-meter"}  # the old behaviour
        older.close()
        before = rows(store, "m1-meter")
        assert before["engines"] == 1 and before["windows"] == 1 and before["segments"] > 0
        kept = rows(store, "m1")

        log = RecordingLogger()
        kpi = KpiService(plant, store, Clock(berlin(14, 2)), logger=log)  # type: ignore[arg-type]
        assert log.named("oee_meter_rows_dropped") == [{
            "machines": ["m1-meter"], "rows": sum(before.values()), **before}]
        assert rows(store, "m1-meter") == dict.fromkeys(before, 0)
        assert rows(store, "m1") == kept
        assert kpi.closed_shifts("m1-meter", berlin(0), berlin(23)) == []
        assert len(kpi.closed_shifts("m1", berlin(0), berlin(23))) == 1

        again = RecordingLogger()
        KpiService(plant, store, Clock(berlin(14, 3)), logger=again)  # type: ignore[arg-type]
        assert again.named("oee_meter_rows_dropped") == []  # once: nothing left to drop
