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
from typing import TYPE_CHECKING, Any

from edge.config.loader import LoadedPlant
from edge.parts.recorder import PartRecorder
from edge.parts.store import PartStore
from models.carbon import CALCULATION_METHOD, CarbonFactor
from models.parts import per_good_part
from models.sample import format_ts, utc_now

if TYPE_CHECKING:
    from models.aas import ProgramFootprint

CATEGORIES = ("producing", "idle", "stopped")


class EnergyWindows:
    def __init__(self, config: Callable[[], LoadedPlant], store: PartStore | None,
                 recorder: PartRecorder | None = None, *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        """`clock`: "now" of the figures and footprints not given one (injectable: the
        conformance vectors' `energy` and `aas` replies are the same every run)."""
        self.clock = clock
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
        if not self.metered(asset) or self.store is None:
            return None
        read = self.store.window(asset, start, end)
        energy, good, scrap = read.energy, read.good, read.scrap
        if self.recorder is not None:
            # the tracker saved now; what it saved (and earlier saves) may still be queued
            # on the store writer thread: added here, never counted twice (`read.saved`)
            self.recorder.flush(asset, now or self.clock())
            for save in self.recorder.unsaved(asset, read.saved):
                for (iso, kind), value in (save.energy or {}).items():
                    at = datetime.fromisoformat(iso)
                    if start <= at < end:
                        energy.append((at, kind, value))
                for r in save.records:
                    if start <= datetime.fromisoformat(r["end"]) < end:
                        scrap_part = r["verdict"] == "scrap"
                        good += 0 if scrap_part else int(r["parts"])
                        scrap += int(r["parts"]) if scrap_part else 0
        plant = self.config().plant
        factor = CarbonFactor(plant.gateway.carbon, plant.shifts.timezone)
        kwh = dict.fromkeys(CATEGORIES, 0.0)
        co2e = 0.0
        for minute, category, value in energy:
            kwh[category] = kwh.get(category, 0.0) + value
            f = factor(minute + timedelta(seconds=30))
            co2e += value * (f["kg_per_kwh"] if f else 0.0)
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

    def by_program(self, asset: str, days: int, now: datetime | None = None
                   ) -> dict[str, dict[str, Any]] | None:
        """Per program over the last `days`: good parts, kWh and CO2e per good part; None
        for a machine without a meter."""
        if not self.metered(asset):
            return None
        if self.store is None:
            return {}
        now = now or self.clock()
        return per_good_part(self.store.program_energy(asset, now - timedelta(days=days), now))

    def footprints(self, asset: str, days: int = 30,
                   now: datetime | None = None) -> list[ProgramFootprint] | None:
        """The AAS carbon footprint's rows (programs with a CO2e figure)."""
        # imported here: models.aas brings aas_core3 (~3 MB of RSS) into every gateway
        # process, which needs it only when a platform asks for a machine's AAS
        from models.aas import ProgramFootprint  # noqa: PLC0415

        now = now or self.clock()
        programs = self.by_program(asset, days, now)
        if programs is None:
            return None
        return [ProgramFootprint(p, f["co2e_kg_per_part"], f["kwh_per_part"], f["good_parts"],
                                 days, now)
                for p, f in programs.items() if f["co2e_kg_per_part"] is not None]

    def method(self) -> str:
        """How the CO2e was calculated, for the AAS carbon footprint."""
        carbon = self.config().plant.gateway.carbon
        if carbon is None:
            return "no grid factor configured (gateway.carbon)"
        return (f"{CALCULATION_METHOD}; grid factor {carbon.kg_per_kwh} kg CO2e/kWh, "
                f"{carbon.source} ({carbon.year})")

    def for_oee_record(self, asset: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The energy block of an `oee` record's window."""
        window = record.get("window") or {}
        try:
            start = datetime.fromisoformat(str(window["start"]))
            end = datetime.fromisoformat(str(window["end"]))
        except (KeyError, ValueError):
            return None
        return self.figures(asset, start, end)
