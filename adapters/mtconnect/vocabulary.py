"""MTConnect data items -> the gateway's normalized machine-state vocabulary.

Both MTConnect adapters (agent over HTTP, SHDR over TCP) see the same thing in the end: a
data item (type, subType, category, units) and a value string with a timestamp. This module
is the one place that turns that into `Sample`s, so a machine reads the same whether the
gateway talks to its agent or straight to its SHDR adapter (issue part 6).

Rules, chosen so OEE and the AAS twin never see a brand's words:

- EXECUTION, CONTROLLER_MODE, AVAILABILITY, EMERGENCY_STOP, PROGRAM, PART_COUNT -> the
  well-known state signals, values lower-cased into the shared vocabulary
  (MANUAL_DATA_INPUT -> mdi, TRIGGERED -> True);
- PART_COUNT is passed on as the device's cumulative counter; a drop (operator reset,
  program change) is turned into non-negative increments downstream by `CounterTracker`
  (a drop counts the new value as the increment), so nothing is lost or negative here;
- CONDITION data items: the set of active FAULTs per data item is tracked and the `alarm`
  signal carries the native code of one active fault ("" when none);
- UNAVAILABLE (any data item) -> value None, quality bad: the device said it does not know,
  which is different from a value of zero;
- a value outside the vocabulary stays a string with quality uncertain: the twin reports it
  once instead of guessing;
- a SAMPLE (or part counter) whose value is not a finite number (`1\x00\x00`, `abc`, `nan`)
  is value None, quality bad: a number that is not a number is not data (3D vectors such as
  `1 2 3` stay text, good);
- with `native_units=True` (SHDR: values arrive as the control reports them), a data item
  with `nativeUnits` is converted to its declared `units` (`units.py`), or labelled with the
  native unit when no conversion is known.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models import machine_state as ms
from models.sample import Quality, Sample

from .units import Conversion, conversion

__all__ = [
    "UNITS",
    "ConditionTracker",
    "DataItem",
    "Normalizer",
    "parse_timestamp",
    "signal_name",
]

UNAVAILABLE = "UNAVAILABLE"

# MTConnect units -> the UCUM-style units the rest of the gateway uses (modbus sample.yaml).
UNITS: dict[str, str] = {
    "REVOLUTION/MINUTE": "1/min",
    "PERCENT": "%",
    "MILLIMETER/SECOND": "mm/s",
    "MILLIMETER/MINUTE": "mm/min",
    "INCH": "[in_i]",
    "INCH/MINUTE": "[in_i]/min",
    "FAHRENHEIT": "[degF]",
    "DEGREE/MINUTE": "deg/min",
    "REVOLUTION/SECOND": "1/s",
    "MINUTE": "min",
    "HOUR": "h",
    "MILLIMETER": "mm",
    "DEGREE": "deg",
    "CELSIUS": "Cel",
    "SECOND": "s",
    "AMPERE": "A",
    "VOLT": "V",
    "WATT": "W",
    "PASCAL": "Pa",
    "MILLIMETER/SECOND^2": "mm/s2",
    "DEGREE/SECOND": "deg/s",
    "NEWTON": "N",
    "NEWTON_METER": "N.m",
    "LITER": "l",
    "KILOGRAM": "kg",
    "HERTZ": "Hz",
    "COUNT": "1",
}

_EXECUTION = {e.name: e.value for e in ms.Execution}
_MODE = {m.name: m.value for m in ms.ControllerMode} | {"MANUAL_DATA_INPUT": "mdi"}
_STATE_TYPES = {
    "EXECUTION": ms.SIG_EXECUTION,
    "CONTROLLER_MODE": ms.SIG_MODE,
    "AVAILABILITY": ms.SIG_AVAILABILITY,
    "EMERGENCY_STOP": ms.SIG_ESTOP,
    "PROGRAM": ms.SIG_PROGRAM,
}
# Telemetry the platforms know by name; the first matching data item of a device wins
# (the main spindle, the first path), the others keep their own names.
_TELEMETRY: dict[tuple[str, str], str] = {
    ("ROTARY_VELOCITY", "Rotary"): "spindle_speed",
    ("SPINDLE_SPEED", "Rotary"): "spindle_speed",
    ("LOAD", "Rotary"): "spindle_load",
    ("PATH_FEEDRATE", "Path"): "feed_rate",
    ("TEMPERATURE", "Rotary"): "spindle_temperature",
    ("TEMPERATURE", "Coolant"): "coolant_temperature",
}


@dataclass(frozen=True, slots=True)
class DataItem:
    """What the device model says about one data item (from /probe or a Devices.xml)."""

    id: str
    type: str
    category: str = "EVENT"  # SAMPLE | EVENT | CONDITION
    name: str | None = None
    sub_type: str | None = None
    units: str | None = None
    component: str = ""  # the kind of the enclosing component: Rotary, Path, Controller...
    native_units: str | None = None  # what an SHDR adapter sends (the agent converts)
    native_scale: float | None = None  # the native number is divided by it first


def signal_name(text: str) -> str:
    """A data item id/name as a gateway signal name: `[a-z0-9_]+` (S1speed -> s1speed)."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", s)
    s = re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")
    return s or "item"


def parse_timestamp(text: str) -> datetime | None:
    """MTConnect/SHDR timestamps: ISO 8601, `Z` or offset, up to 7 fractional digits (.NET
    ticks, as the OKUMA recording has), an optional `@duration` suffix; None if unreadable."""
    m = _TS.match(text.split("@", 1)[0].strip())
    if m is None:
        return None
    try:
        base = datetime.fromisoformat(m.group(1))
        tz = m.group(3)
        if tz and tz != "Z":
            base = datetime.fromisoformat(m.group(1) + tz)
        else:
            base = base.replace(tzinfo=UTC)
    except ValueError:
        return None
    micro = int((m.group(2) or "0")[:6].ljust(6, "0"))
    return base.replace(microsecond=micro)


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


@dataclass
class ConditionTracker:
    """Active FAULT native codes per condition data item (a device reports them one by one).

    MTConnect conditions are a set per data item: several faults may be active at once,
    and NORMAL without a native code clears them all. The alarm signal carries one active
    code (the most recent), or "" when nothing is active anywhere.
    """

    active: dict[str, dict[str, str]] = field(default_factory=dict)

    def update(self, item: str, level: str, native_code: str, message: str = "") -> str | None:
        """Apply one condition; returns the alarm value when it changed, else None."""
        before = self.current()
        codes = self.active.setdefault(item, {})
        level = level.upper()
        if level == "FAULT":
            codes.pop(native_code or item, None)
            codes[native_code or item] = message
        elif level in ("NORMAL", UNAVAILABLE):
            if native_code:
                codes.pop(native_code, None)
            else:
                codes.clear()
        else:  # WARNING: not an alarm; a code that was a fault is now only a warning
            codes.pop(native_code or item, None)
        after = self.current()
        return after if after != before else None

    def current(self) -> str:
        latest = ""
        for codes in self.active.values():
            for code in codes:
                latest = code
        return latest

    def clear(self) -> None:
        self.active.clear()


class Normalizer:
    """Turns (data item, value, timestamp) into Samples for one asset.

    `renames` maps a data item id or name to the signal name the plant YAML asked for; with
    `keep_unlisted` False, only renamed items and the well-known state items are emitted.
    """

    def __init__(self, asset: str, items: dict[str, DataItem], renames: dict[str, str]
                 | None = None, *, keep_unlisted: bool = True,
                 units: dict[str, str] | None = None, native_units: bool = False) -> None:
        self.asset = asset
        self.native_units = native_units
        self.items: dict[str, DataItem] = {}
        self.renames = dict(renames or {})
        self.units = dict(units or {})
        self.keep_unlisted = keep_unlisted
        self.conditions = ConditionTracker()
        self._signals: dict[str, str | None] = {}
        self._taken: set[str] = set()
        self.set_items(items)

    def set_items(self, items: dict[str, DataItem]) -> None:
        """(Re)learn the device model, e.g. after an agent restart changed it."""
        self.items = dict(items)
        self._signals.clear()
        self._taken.clear()
        # `points:` renames win over the well-known names wherever their item sits in the
        # model: a well-known item after it would otherwise take the same name, and every
        # change would go out as two records of one signal.
        self._taken.update(self.renames.values())
        for item in self.items.values():  # document order: the first spindle wins
            self._signals[item.id] = self._assign(item)

    def lookup(self, key: str) -> DataItem | None:
        """A data item by id, or by name (SHDR keys are usually names)."""
        found = self.items.get(key)
        if found is not None:
            return found
        for item in self.items.values():
            if item.name == key:
                return item
        return None

    def _assign(self, item: DataItem) -> str | None:
        for key in (item.id, item.name):
            if key and key in self.renames:
                self._taken.add(self.renames[key])
                return self.renames[key]
        if item.category == "CONDITION":
            return ms.SIG_ALARM
        if item.type in _STATE_TYPES:
            if item.type == "PROGRAM" and item.sub_type not in (None, "MAIN", "ACTIVE"):
                return None
            sig = _STATE_TYPES[item.type]
            if sig in self._taken:
                return self._own(item)
            self._taken.add(sig)
            return sig
        if item.type == "PART_COUNT":
            sub = (item.sub_type or "ALL").upper()
            counter = {"ALL": ms.SIG_PART_COUNT, "TOTAL": ms.SIG_PART_COUNT,
                       "BAD": ms.SIG_BAD_PART_COUNT, "REJECT": ms.SIG_BAD_PART_COUNT}.get(sub)
            if counter is not None and counter not in self._taken:
                self._taken.add(counter)
                return counter
            return self._own(item)
        well_known = _TELEMETRY.get((item.type, item.component))
        if well_known and well_known not in self._taken and item.sub_type in (
            None, "ACTUAL"
        ):
            self._taken.add(well_known)
            return well_known
        return self._own(item)

    def _own(self, item: DataItem) -> str | None:
        if not self.keep_unlisted:
            return None
        return signal_name(item.name or item.id)

    def signal_of(self, item: DataItem) -> str | None:
        if item.id not in self._signals:
            self._signals[item.id] = self._assign(item)
        return self._signals[item.id]

    def signals(self) -> dict[str, list[DataItem]]:
        """Signal -> the data items that feed it (several CONDITION items fold into `alarm`),
        so the status page and `probe` can name where a value comes from."""
        out: dict[str, list[DataItem]] = {}
        for item in list(self.items.values()):
            signal = self.signal_of(item)
            if signal is not None:
                out.setdefault(signal, []).append(item)
        return out

    def sample(self, item: DataItem, value: str, source_ts: datetime | None,
               gateway_ts: datetime) -> Sample | None:
        """One EVENT or SAMPLE observation; None when the item is filtered out."""
        signal = self.signal_of(item)
        if signal is None or signal == ms.SIG_ALARM:
            return None
        unit, convert = self._unit(item, signal)
        text = value.strip()
        if text.upper() == UNAVAILABLE:
            return Sample(self.asset, signal, None, unit, gateway_ts, source_ts, Quality.BAD)
        v, q = self._convert(item, signal, text)
        if convert is not None and q is Quality.GOOD:
            if isinstance(v, float):
                v = convert(v)
            elif isinstance(v, str):  # a 3D vector: each coordinate
                v = " ".join(repr(convert(float(x))) for x in v.split())
        return Sample(self.asset, signal, v, unit, gateway_ts, source_ts, q)

    def _unit(self, item: DataItem, signal: str) -> tuple[str | None, Conversion | None]:
        """The unit label and, for native values, the conversion to the declared unit.

        A unit the plant YAML gives for the point is the user's word about the value: it is
        the label and nothing is converted."""
        if signal in self.units:
            return self.units[signal], None
        declared = item.units
        if self.native_units and item.native_units:
            convert = conversion(item.native_units, declared, item.native_scale)
            if convert is None:  # no known conversion: say what the number really is
                return _label(item.native_units), None
            return _label(declared or item.native_units), (None if convert.identity
                                                             else convert)
        return (_label(declared) if declared else None), None

    def condition(self, item: DataItem, level: str, native_code: str, *, message: str,
                  source_ts: datetime | None, gateway_ts: datetime) -> Sample | None:
        """A CONDITION observation; a Sample of `alarm` only when the active set changed."""
        signal = self.signal_of(item)
        if signal is None:
            return None
        changed = self.conditions.update(item.id, level, native_code, message)
        if changed is None:
            return None
        return Sample(self.asset, ms.SIG_ALARM if signal == ms.SIG_ALARM else signal, changed,
                      None, gateway_ts, source_ts, Quality.GOOD)

    @staticmethod
    def _convert(item: DataItem, signal: str, text: str) -> tuple[
            str | float | int | bool | None, Quality]:
        upper = text.upper()
        if signal == ms.SIG_EXECUTION:
            return (_EXECUTION[upper], Quality.GOOD) if upper in _EXECUTION else (
                text, Quality.UNCERTAIN)
        if signal == ms.SIG_MODE:
            return (_MODE[upper], Quality.GOOD) if upper in _MODE else (text, Quality.UNCERTAIN)
        if signal == ms.SIG_AVAILABILITY:
            return (text.lower(), Quality.GOOD) if upper == "AVAILABLE" else (
                text.lower(), Quality.UNCERTAIN)
        if signal == ms.SIG_ESTOP:
            if upper in ("TRIGGERED", "ARMED"):
                return upper == "TRIGGERED", Quality.GOOD
            return text, Quality.UNCERTAIN
        if signal in (ms.SIG_PART_COUNT, ms.SIG_BAD_PART_COUNT):
            number = _number(text)
            if number is None:
                return None, Quality.BAD
            n = int(number)
            return (n, Quality.GOOD) if n >= 0 else (n, Quality.UNCERTAIN)
        if signal == ms.SIG_PROGRAM:
            return text, Quality.GOOD
        if item.category == "SAMPLE":
            number = _number(text)
            if number is not None:
                return number, Quality.GOOD
            parts = text.split()
            if len(parts) > 1 and all(_number(x) is not None for x in parts):
                return text, Quality.GOOD  # 3D vectors ("1 2 3") stay text
            return None, Quality.BAD
        return text, Quality.GOOD


def _number(text: str) -> float | None:
    """A finite float, or None (`float()` also takes `nan`, `inf` and `1_0`: none is data)."""
    if "_" in text:
        return None
    try:
        n = float(text)
    except ValueError:
        return None
    return n if math.isfinite(n) else None


def _label(units: str) -> str:
    return UNITS.get(units, units.lower())
