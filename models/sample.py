"""The unit of data between an adapter and the rest of the gateway."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

Value = float | int | bool | str | None


class Quality(StrEnum):
    """OPC UA-style quality, collapsed to the three levels platforms act on."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True, init=False)
class Sample:
    """One observed value of one signal of one asset.

    `source_ts` is the device's clock when the protocol carries one (OPC UA SourceTimestamp,
    MTConnect timestamp); otherwise None. `gateway_ts` is when the gateway read it, so
    consumers can tell device clock drift from transport delay.
    """

    asset: str
    signal: str
    value: Value
    unit: str | None
    gateway_ts: datetime
    source_ts: datetime | None = None
    quality: Quality = Quality.GOOD

    def __init__(self, asset: str, signal: str, value: Value, unit: str | None,  # noqa: PLR0917
                 gateway_ts: datetime, source_ts: datetime | None = None,
                 quality: Quality = Quality.GOOD) -> None:
        """What dataclass would generate, through the slots' own setters: a frozen
        dataclass's `__init__` goes through `object.__setattr__` per field, and one Sample
        per value read made it 3-4 % of the gateway's CPU at saturation (bench/
        report-issue17.md 2o); this is a third cheaper, and still frozen."""
        _set_asset(self, asset)
        _set_signal(self, signal)
        _set_value(self, value)
        _set_unit(self, unit)
        _set_gateway_ts(self, gateway_ts)
        _set_source_ts(self, source_ts)
        _set_quality(self, quality)

    @property
    def ts(self) -> datetime:
        """The best timestamp: the device's when it has one."""
        return self.source_ts or self.gateway_ts


(_set_asset, _set_signal, _set_value, _set_unit, _set_gateway_ts, _set_source_ts,
 _set_quality) = (vars(Sample)[f.name].__set__ for f in fields(Sample))


def utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1024)
def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds and `Z`, the one timestamp format on the wire.

    Cached: every record of one poll carries the same timestamp, and strftime per record
    was 5-7 % of the gateway's CPU in bench/ profiles. A miss (each new read time) takes
    `isoformat`, half the cost of strftime, for the same text; years before 1000, which
    strftime writes unpadded, keep strftime so the bytes never change."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if ts.year < 1000:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    return ts.isoformat(timespec="milliseconds")[:23] + "Z"
