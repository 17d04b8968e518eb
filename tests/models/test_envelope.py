"""Telemetry records: the batch builder of the hot path is the per-sample one, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from models.envelope import telemetry_record, telemetry_records
from models.sample import Quality, Sample

BASE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
# a few timestamp objects, shared between samples as a poll's samples share theirs
STAMPS = [BASE, BASE + timedelta(milliseconds=1), BASE + timedelta(microseconds=999), BASE]

values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4),
)
samples = st.builds(
    Sample,
    asset=st.just("m1"),
    signal=st.sampled_from(["a", "b", "spindle_speed"]),
    value=values,
    unit=st.one_of(st.none(), st.just("mm")),
    gateway_ts=st.sampled_from(STAMPS),
    source_ts=st.one_of(st.none(), st.sampled_from(STAMPS)),
    quality=st.sampled_from(list(Quality)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(samples, max_size=12))
def test_telemetry_records_is_telemetry_record_per_sample(batch: list[Sample]) -> None:
    got = telemetry_records(batch)
    expected = [telemetry_record(s) for s in batch]
    assert repr(got) == repr(expected)  # repr: 1 vs 1.0 vs True, and key order
    assert all(type(r["quality"]) is str for r in got), "plain str, not the enum"


def test_non_finite_values_become_null_and_timestamps_follow_each_sample() -> None:
    later = BASE + timedelta(seconds=1)
    got = telemetry_records([
        Sample("m1", "a", float("nan"), None, BASE),
        Sample("m1", "b", float("-inf"), None, BASE, source_ts=later, quality=Quality.BAD),
        Sample("m1", "c", 2.5, "mm", BASE),
    ])
    assert [(r["value"], r["ts"], r["quality"]) for r in got] == [
        (None, "2026-12-06T09:00:00.000Z", "good"),
        (None, "2026-12-06T09:00:01.000Z", "bad"),
        (2.5, "2026-12-06T09:00:00.000Z", "good"),
    ]
