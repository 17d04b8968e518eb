"""Sample keeps every dataclass promise with its hand-written `__init__` (models/sample.py)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.sample import Quality, Sample, format_ts

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
    assert pickle.loads(pickle.dumps(s)) == s and copy.copy(s) == s


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30)),
                         timezone(timedelta(hours=14))])


@given(st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=ZONES))
def test_format_ts_is_the_strftime_text(ts: datetime) -> None:
    """`format_ts` writes what the strftime formula it replaced wrote, byte for byte."""
    utc = ts.astimezone(UTC)
    old = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert format_ts(ts) == old
