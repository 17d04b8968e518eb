"""Raw device value -> engineering value, by the `map` / `scale` / `offset` keys of a point.

Shared by the adapters whose points carry those keys (Modbus, S7), so a plant engineer gets
the same rules whatever the protocol:

- a raw code missing from `map` is kept as its decimal text with quality uncertain (the
  device said something real, we just cannot name it);
- value = raw x scale + offset, exact (no float detour) when scale is 1 and offset 0;
- a NaN or infinite result is quality bad: it cannot travel in canonical JSON and never
  describes a real measurement;
- an integer beyond +-(2**53 - 1) (a 64-bit counter, an LWORD) travels as its decimal
  text: canonical JSON (RFC 8785, I-JSON) carries numbers as IEEE doubles, so the signer
  refuses it as a number, and a double would silently round it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from models.sample import Quality, Value

Raw = int | float | bool | str
MAX_SAFE_INTEGER = 2**53 - 1


def engineering_value(
    raw: Raw, value_map: Mapping[int, str] | None, scale: float, offset: float
) -> tuple[Value, Quality]:
    if value_map is not None:
        code = int(raw)
        text = value_map.get(code)
        return (text, Quality.GOOD) if text is not None else (str(code), Quality.UNCERTAIN)
    if isinstance(raw, (bool, str)):
        return raw, Quality.GOOD
    value = raw if scale == 1.0 and offset == 0.0 else raw * scale + offset
    if isinstance(value, float) and not math.isfinite(value):
        return None, Quality.BAD
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return str(value), Quality.GOOD
    return value, Quality.GOOD
