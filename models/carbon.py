"""Grid emission factors: which kg CO2e per kWh applies at an instant (`gateway.carbon`).

Location-based accounting (GHG Protocol Scope 2): the factor of the grid the plant draws
from, as published by its source for a year, optionally by local time of day (a grid is
cleaner at noon in summer than at 19:00). The factor in force at an interval's midpoint
applies to the whole interval: part cycles are minutes, far shorter than any published
time-of-day band.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from models.plant import CarbonPeriod, CarbonSettings

CALCULATION_METHOD = "location-based grid factor x metered active energy (GHG Protocol Scope 2)"


def _within(t: time, period: CarbonPeriod) -> bool:
    if period.start <= period.end:
        return period.start <= t < period.end
    return t >= period.start or t < period.end  # passes midnight


class CarbonFactor:
    """`factor(at)` -> the factor record carried by part records and OEE windows."""

    def __init__(self, settings: CarbonSettings | None, timezone: str = "UTC") -> None:
        self.settings = settings
        self.zone = ZoneInfo(timezone)

    def __call__(self, at: datetime) -> dict[str, Any] | None:
        s = self.settings
        if s is None:
            return None
        local = at.astimezone(self.zone).time()
        kg = next((p.kg_per_kwh for p in s.time_of_day if _within(local, p)), s.kg_per_kwh)
        return {"kg_per_kwh": kg, "source": s.source, "year": s.year}
