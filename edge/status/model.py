"""What the status page and the Prometheus metrics may read of a running gateway.

Why a Protocol of frozen snapshots instead of handing them the gateway: both are read-only
views, and neither should reach into twins, runners or the outbox (whose shapes change as
the daemon is reassembled, and which with `run --workers N` live in other processes).
`StatusSource` has two implementations: over a running gateway
(edge/status/gateway_source.py) and in the parent of N workers, from their snapshots
(edge/status/worker_source.py); the web page, the metrics collector, the console and their
tests see only these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from edge.kpi.oee import observed_share
from models.sample import Value


@dataclass(frozen=True, slots=True)
class MachineStatus:
    id: str
    name: str
    adapter: str
    link: str
    """Device link: connecting, up, down, failed."""
    availability: str
    execution: str | None
    mode: str | None
    program: str | None
    part_count: int | None
    bad_part_count: int | None
    alarms: tuple[str, ...]
    alarm_text: str | None
    last_sample: datetime | None
    samples: int
    bad_samples: int
    reconnects: int
    link_reason: str | None = None
    """Why the link is not up (the adapter's last error), for the page."""
    unsignable_replaced: int = 0
    """Records whose value canonical JSON cannot carry, sent as `bad` with a `reason`."""
    unsignable_dropped: int = 0
    """Such records that could not even be replaced, so were not published."""
    meter_for: str | None = None
    """This device is the energy meter of that machine: it has no OEE (edge/kpi/service.py
    `producing`), so the page and the console show its reading instead."""
    power_w: float | None = None
    """The meter's total active power (its `energy.power_w` point), when read."""
    energy_kwh: float | None = None
    """The meter's cumulative energy (its `energy.energy_kwh` point), when read."""

    @property
    def meter_reading(self) -> str | None:
        """`meter of mill-01: 3.42 kW, 1234.5 kWh` for a meter, else None."""
        return None if self.meter_for is None else meter_text(self.meter_for, self.power_w,
                                                             self.energy_kwh)


def meter_text(of: str, power_w: float | None, energy_kwh: float | None) -> str:
    """What stands in a meter's OEE cell: whose meter it is and what it reads; a reading
    says more than the `0 % available` an OEE of a device that makes no parts would."""
    figures = [f"{power_w / 1000:.2f} kW" if power_w is not None else "",
               f"{energy_kwh:.1f} kWh" if energy_kwh is not None else ""]
    shown = ", ".join(f for f in figures if f)
    return f"meter of {of}" + (f": {shown}" if shown else "")


@dataclass(frozen=True, slots=True)
class PointStatus:
    name: str
    address: str
    """Register, node id, macro...: `Adapter.point_addresses()`, else where the adapter's
    profile or device model reads it (`Adapter.signal_sources()`), else `(device model)`."""
    value: Value
    unit: str | None
    quality: str
    ts: datetime
    changed: datetime
    """When the value last differed from the one before."""
    raw: str | None = None
    """The undecoded value (Modbus registers) when the adapter keeps it."""


@dataclass(frozen=True, slots=True)
class OeeStatus:
    """The running shift's figures (the `oee` stream record, typed)."""

    shift: str | None
    start: datetime
    end: datetime
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None
    planned_seconds: float
    running_seconds: float
    downtime: Mapping[str, float]
    """Seconds per reason: alarm, feed_hold, setup, waiting, unavailable, no_data."""
    speed_loss_seconds: float | None
    scrap_seconds: float | None
    parts: int
    good_parts: int
    timezone: str = "UTC"
    """The shift calendar's zone: the page shows shift times as the plant reads them."""
    gap_seconds: float = 0.0
    """The part of downtime `unavailable` when the gateway itself was down (`losses.gap`)."""

    @property
    def observed(self) -> float | None:
        """The share of the planned time the gateway watched (edge/kpi/oee.py
        `observed_share`): what explains a low availability right after a start."""
        return observed_share(self.planned_seconds, self.downtime.get("no_data", 0.0),
                              self.gap_seconds)


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of the state timeline: [start, end) in one state."""

    start: datetime
    end: datetime
    state: str


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    id: str
    url: str
    connected: bool
    protocol: str
    streams: tuple[str, ...]
    pending: int
    pending_bytes: int
    sent: int
    acked: int
    dropped: int
    rejected: int
    last_ack: datetime | None
    reconnects: int
    lost_records: int = 0  # records never stored (disk full, store error): no seq, no envelope
    format: str = "envelope"
    """What its payloads look like (`envelope`, `json`, `sparkplug_b`; docs/protocol.md): a
    platform that cannot read them is this column's first question."""


class LogEntry(NamedTuple):
    """One recent warning or reload outcome (edge/status/log_tap.py)."""

    when: datetime
    text: str
    worker: int | None = None
    """The worker process it came from (`run --workers N`); None: this process's own."""

    @property
    def origin(self) -> str:
        """`worker 1`, or `parent` for the process serving the page."""
        return "parent" if self.worker is None else f"worker {self.worker}"


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    id: str
    site: str
    version: str
    kid: str | None
    started: datetime
    reloads: tuple[LogEntry, ...]
    """(when, outcome) of each SIGHUP reload, oldest first; with `run --workers N` the
    parent's one outcome for the whole pool, which names the workers."""
    warnings: tuple[LogEntry, ...]
    """Recent warning and error log events, oldest first, merged the same way."""
    envelopes_sealed: int = 0
    records_sealed: int = 0
    reload_counts: Mapping[str, int] = field(default_factory=dict)
    """Every reload outcome since start by result (`ok`, `rejected`, `partial`), one per
    SIGHUP whatever the number of processes: `reloads` keeps only the recent ones."""


@dataclass(frozen=True, slots=True)
class PollHistogram:
    """Cumulative counts of poll durations per bucket upper bound (Prometheus layout)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    """Same length as bounds; cumulative; the +Inf bucket is `count`."""
    count: int
    total: float


@dataclass(frozen=True)
class QueryCounts:
    by_method_result: Mapping[tuple[str, str], int] = field(default_factory=dict)


class StatusSource(Protocol):
    """Read-only snapshots of a running gateway; every call is cheap and non-blocking."""

    def machines(self) -> Sequence[MachineStatus]: ...

    def points(self, machine_id: str) -> Sequence[PointStatus]: ...

    def oee(self, machine_id: str) -> OeeStatus | None: ...

    def timeline(self, machine_id: str) -> Sequence[Segment]: ...

    def destinations(self) -> Sequence[DestinationStatus]: ...

    def gateway(self) -> GatewayStatus: ...

    def poll_durations(self, machine_id: str) -> PollHistogram | None: ...

    def queries(self) -> QueryCounts: ...
