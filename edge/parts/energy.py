"""Energy in OEE windows: total, producing, idle and stopped kWh, per good part, CO2e.

    OeePublisher (each oee record) / QueryBackend `energy` --> EnergyWindows.figures
        <-- PartStore: kWh per minute and category (metered, from the trackers)
        <-- PartStore: the part records that ended in the window (good parts)

Resolution is one minute: a minute's energy belongs to the window its start falls in, so
a window's figures can be off by at most one minute of energy at each edge. Good parts are
`good` and `unknown` verdicts (a machine without a bad-part counter counts every part good,
as the OEE engine does); CO2e applies the carbon factor in force at each minute.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from edge.config.loader import LoadedPlant
from edge.parts.recorder import PartRecorder
from edge.parts.store import PartStore
from models.carbon import CarbonFactor
from models.sample import format_ts, utc_now

CATEGORIES = ("producing", "idle", "stopped")


class EnergyWindows:
    def __init__(self, config: Callable[[], LoadedPlant], store: PartStore,
                 recorder: PartRecorder) -> None:
        self.config = config
        self.store = store
        self.recorder = recorder

    def metered(self, asset: str) -> bool:
        plant = self.config().plant
        try:
            machine = plant.machine(asset)
        except KeyError:
            return False
        return machine.part_record is not None and (machine.energy is not None or any(
            m.meter_for == asset for m in plant.machines if m.enabled))

    def figures(self, asset: str, start: datetime, end: datetime,
                now: datetime | None = None) -> dict[str, Any] | None:
        """The energy block of a window [start, end); None for a machine without a meter."""
        if not self.metered(asset):
            return None
        self.recorder.flush(asset, now or utc_now())
        plant = self.config().plant
        factor = CarbonFactor(plant.gateway.carbon, plant.shifts.timezone)
        kwh = dict.fromkeys(CATEGORIES, 0.0)
        co2e = 0.0
        for minute, category, value in self.store.energy(asset, start, end):
            kwh[category] = kwh.get(category, 0.0) + value
            f = factor(minute + timedelta(seconds=30))
            co2e += value * (f["kg_per_kwh"] if f else 0.0)
        good = scrap = 0
        for r in self.store.records(asset, start, end):
            if r["verdict"] == "scrap":
                scrap += int(r["parts"])
            else:
                good += int(r["parts"])
        total = sum(kwh.values())
        carbon = factor(start + (end - start) / 2)
        return {
            "start": format_ts(start),
            "end": format_ts(end),
            "kwh": {"total": round(total, 6), **{k: round(v, 6) for k, v in kwh.items()}},
            "good_parts": good,
            "scrap_parts": scrap,
            "kwh_per_good_part": round(total / good, 6) if good else None,
            "co2e_kg": round(co2e, 6) if carbon else None,
            "co2e_kg_per_good_part": round(co2e / good, 6) if carbon and good else None,
            "carbon_factor": carbon,
            "resolution_s": 60,
        }

    def for_oee_record(self, asset: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The energy block of an `oee` record's window."""
        window = record.get("window") or {}
        try:
            start = datetime.fromisoformat(str(window["start"]))
            end = datetime.fromisoformat(str(window["end"]))
        except (KeyError, ValueError):
            return None
        return self.figures(asset, start, end)
