"""MTConnect native units -> declared units, for values read straight from an SHDR adapter.

Why: an SHDR adapter sends what the control reports, in the data item's `nativeUnits`
(a feed rate in MILLIMETER/MINUTE); an MTConnect agent converts to `units`
(MILLIMETER/SECOND) before anyone sees the value. Reading SHDR directly, the gateway must
do the agent's job or its `mm/s` values are off by 60 (issue 12 item 6). The table follows
the conversions the MTConnect standard defines for its NativeUnitEnum (Part 2, DataItem
`nativeUnits`, and cppagent's unit converter): a factor and an offset per (native, units)
pair, after dividing by `nativeScale` when the model gives one. A pair not in the table is
not guessed at: the value keeps its native number and is labelled with the native unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Conversion", "conversion"]

_MM_PER_INCH = 25.4
_MM_PER_FOOT = 304.8
_DEG_PER_RAD = 180.0 / math.pi

# (native, declared) -> (factor, offset): declared = native * factor + offset
_TABLE: dict[tuple[str, str], tuple[float, float]] = {
    ("INCH", "MILLIMETER"): (_MM_PER_INCH, 0.0),
    ("FOOT", "MILLIMETER"): (_MM_PER_FOOT, 0.0),
    ("CENTIMETER", "MILLIMETER"): (10.0, 0.0),
    ("DECIMETER", "MILLIMETER"): (100.0, 0.0),
    ("METER", "MILLIMETER"): (1000.0, 0.0),
    ("INCH_3D", "MILLIMETER_3D"): (_MM_PER_INCH, 0.0),
    ("FOOT_3D", "MILLIMETER_3D"): (_MM_PER_FOOT, 0.0),
    ("MILLIMETER/MINUTE", "MILLIMETER/SECOND"): (1 / 60, 0.0),
    ("INCH/MINUTE", "MILLIMETER/SECOND"): (_MM_PER_INCH / 60, 0.0),
    ("FOOT/MINUTE", "MILLIMETER/SECOND"): (_MM_PER_FOOT / 60, 0.0),
    ("INCH/SECOND", "MILLIMETER/SECOND"): (_MM_PER_INCH, 0.0),
    ("FOOT/SECOND", "MILLIMETER/SECOND"): (_MM_PER_FOOT, 0.0),
    ("INCH/SECOND^2", "MILLIMETER/SECOND^2"): (_MM_PER_INCH, 0.0),
    ("FOOT/SECOND^2", "MILLIMETER/SECOND^2"): (_MM_PER_FOOT, 0.0),
    ("DEGREE/MINUTE", "DEGREE/SECOND"): (1 / 60, 0.0),
    ("RADIAN", "DEGREE"): (_DEG_PER_RAD, 0.0),
    ("RADIAN/SECOND", "DEGREE/SECOND"): (_DEG_PER_RAD, 0.0),
    ("RADIAN/MINUTE", "DEGREE/SECOND"): (_DEG_PER_RAD / 60, 0.0),
    ("RADIAN/SECOND^2", "DEGREE/SECOND^2"): (_DEG_PER_RAD, 0.0),
    ("REVOLUTION/SECOND", "REVOLUTION/MINUTE"): (60.0, 0.0),
    ("FAHRENHEIT", "CELSIUS"): (5 / 9, -160 / 9),
    ("KELVIN", "CELSIUS"): (1.0, -273.15),
    ("MINUTE", "SECOND"): (60.0, 0.0),
    ("HOUR", "SECOND"): (3600.0, 0.0),
    ("GRAM", "KILOGRAM"): (0.001, 0.0),
    ("POUND", "KILOGRAM"): (0.45359237, 0.0),
    ("POUND/INCH^2", "PASCAL"): (6894.757293168361, 0.0),
    ("BAR", "PASCAL"): (100_000.0, 0.0),
    ("ATMOSPHERE", "PASCAL"): (101_325.0, 0.0),
    ("MILLIMETER_MERCURY", "PASCAL"): (133.322387415, 0.0),
    ("KILOWATT", "WATT"): (1000.0, 0.0),
    ("KILOWATT_HOUR", "WATT_SECOND"): (3.6e6, 0.0),
    ("GALLON/MINUTE", "LITER/SECOND"): (3.785411784 / 60, 0.0),
    ("CUBIC_INCH", "CUBIC_MILLIMETER"): (16_387.064, 0.0),
    ("CUBIC_FOOT", "CUBIC_MILLIMETER"): (28_316_846.592, 0.0),
    ("POUND_INCH", "NEWTON_METER"): (0.1129848290276167, 0.0),
    ("INCH_POUND", "NEWTON_METER"): (0.1129848290276167, 0.0),
}


@dataclass(frozen=True, slots=True)
class Conversion:
    """How to turn one data item's native number into its declared unit."""

    factor: float
    offset: float
    scale: float  # nativeScale: the native number is divided by it first

    @property
    def identity(self) -> bool:
        return self.factor == 1.0 and self.offset == 0.0 and self.scale == 1.0

    def __call__(self, native: float) -> float:
        return native / self.scale * self.factor + self.offset


def conversion(native_units: str, units: str | None,
               native_scale: float | None = None) -> Conversion | None:
    """The conversion from `native_units` to `units`; None when the table has no such pair
    (the caller then labels the value with its native unit instead of guessing)."""
    scale = native_scale if native_scale else 1.0
    if units is None:
        return None
    if native_units == units:
        return Conversion(1.0, 0.0, scale)
    pair = _TABLE.get((native_units, units))
    return Conversion(pair[0], pair[1], scale) if pair else None
