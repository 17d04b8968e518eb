"""Sample keeps every dataclass promise with its hand-written `__init__` (models/sample.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from models.sample import Quality, Sample

AT = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
SOURCE = datetime(2026, 12, 6, 6, 59, tzinfo=UTC)


def test_fields_defaults_and_keywords() -> None:
    s = Sample("m1", "speed", 1.5, "mm", AT)
    assert (s.asset, s.signal, s.value, s.unit, s.gateway_ts, s.source_ts, s.quality) == (
        "m1", "speed", 1.5, "mm", AT, None, Quality.GOOD)
    k = Sample(asset="m1", signal="speed", value=1.5, unit="mm", gateway_ts=AT,
               source_ts=SOURCE, quality=Quality.BAD)
    assert k.ts == SOURCE and s.ts == AT
    assert [f.name for f in dataclasses.fields(Sample)] == [
        "asset", "signal", "value", "unit", "gateway_ts", "source_ts", "quality"]


def test_frozen_equal_hashable_replaceable() -> None:
    s = Sample("m1", "speed", 1.5, "mm", AT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.value = 2  # type: ignore[misc]
    twin = Sample("m1", "speed", 1.5, "mm", AT)
    assert s == twin and hash(s) == hash(twin) and len({s, twin}) == 1
    moved = dataclasses.replace(s, value=None, quality=Quality.BAD)
    assert moved == Sample("m1", "speed", None, "mm", AT, None, Quality.BAD)
    assert s != moved
    assert repr(s).startswith("Sample(asset='m1', signal='speed', value=1.5")
    assert not hasattr(s, "__dict__")
