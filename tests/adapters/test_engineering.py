"""adapters/engineering.py: map, scale, offset and what canonical JSON can carry."""

from __future__ import annotations

import math

import pytest

from adapters.engineering import engineering_value
from models.sample import Quality, Value


@pytest.mark.parametrize(("raw", "value_map", "scale", "offset", "expected"), [
    (2, {2: "active"}, 1.0, 0.0, ("active", Quality.GOOD)),
    (9, {2: "active"}, 1.0, 0.0, ("9", Quality.UNCERTAIN)),
    (True, None, 1.0, 0.0, (True, Quality.GOOD)),
    ("O1000", None, 1.0, 0.0, ("O1000", Quality.GOOD)),
    (123, None, 0.1, -2.0, (pytest.approx(10.3), Quality.GOOD)),
    (2**53 - 1, None, 1.0, 0.0, (2**53 - 1, Quality.GOOD)),
    (2**64 - 1, None, 1.0, 0.0, (str(2**64 - 1), Quality.GOOD)),
    (-(2**63), None, 1.0, 0.0, (str(-(2**63)), Quality.GOOD)),
    (math.nan, None, 1.0, 0.0, (None, Quality.BAD)),
    (math.inf, None, 2.0, 0.0, (None, Quality.BAD)),
])
def test_engineering_value(raw: int | float | bool | str, value_map: dict[int, str] | None,
                           scale: float, offset: float,
                           expected: tuple[Value, Quality]) -> None:
    assert engineering_value(raw, value_map, scale, offset) == expected
