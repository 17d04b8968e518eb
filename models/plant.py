"""Plant configuration: one YAML file describes one plant and its gateway.

Generic fields are checked here; each machine's `connection` and `points` blocks are checked
by its adapter's own `settings_model` (the loader in `edge/config/loader.py` runs both and reports
every problem with file, line, column and field path). Secrets are never inline: a
`SecretRef` names an environment variable or a file, resolved only when connecting. Files
and directories are `ConfigPath`s: relative to the YAML file's directory once loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.config_path import ConfigPath, StateDirPath

Ident = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]


def _clock_time(value: object) -> object:
    """A time of day as the YAML writes it: "HH:MM" (24 h), quoted.

    Why: unquoted, YAML 1.1 reads `22:00` as the base-60 number 1320, which pydantic took as
    seconds after midnight: a shift silently ending at 00:22 UTC. And pydantic's own "input
    is too short" for `6am` does not say what to write."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 3600:
        # H:MM reads as minutes; beyond a day's minutes it can only have been H:MM:SS
        hours, minutes = divmod(value, 60)
        written = f"{hours}:{minutes:02d}"
        quoted = f"{hours:02d}:{minutes:02d}"
        if value >= 24 * 60:
            hours, seconds = divmod(value, 3600)
            written = f"{hours}:{seconds // 60:02d}:{seconds % 60:02d}"
            quoted = f"{hours:02d}:{seconds // 60:02d}:{seconds % 60:02d}"
        raise ValueError(
            f"unquoted, YAML reads {written} as the number {value}: "
            f'write the time in quotes, "{quoted}"'
        )
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f'{value!r} is not a time of day: write "HH:MM" (24 h, in quotes), '
                     'e.g. "06:00"')


ClockTime = Annotated[time, BeforeValidator(_clock_time)]
"""A shift's, break's or tariff period's time of day (`_clock_time`)."""
"""Ids become MQTT topic levels: lower case, digits, `_` and `-` only."""

StreamName = Literal["telemetry", "state", "oee", "capacity", "bookings", "part"]
STREAMS: tuple[StreamName, ...] = (
    "telemetry", "state", "oee", "capacity", "bookings", "part"
)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives. Exactly one of `env` or `file`; its value never enters logs."""

    env: str | None = None
    file: ConfigPath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file' (secrets are never inline)")
        return self

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


class TlsSettings(Strict):
    ca_file: ConfigPath | None = Field(
        None, description="CA bundle to verify the broker; system CAs when absent"
    )
    cert_file: ConfigPath | None = Field(None, description="client certificate for mTLS")
    key_file: ConfigPath | None = Field(None, description="client private key for mTLS")
    key_password: SecretRef | None = None
    insecure_skip_verify: bool = Field(
        False, description="accept any broker certificate (tests only)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mTLS needs both 'cert_file' and 'key_file'")
        return self


class OutboxSettings(Strict):
    """Store-and-forward for one destination: signed envelopes wait on disk until PUBACK."""

    max_bytes: int = Field(
        256 * 2**20, ge=2**16, description="pending bytes kept for this destination"
    )
    policy: Literal["drop_oldest", "reject_new"] = Field(
        "drop_oldest", description="when full: evict the oldest envelopes, or refuse new ones"
    )
    min_free_disk_bytes: int | None = Field(
        None,
        ge=0,
        description="below this much free disk the backlog stops growing (live data to a "
        "connected broker still flows); default 5% of the state directory's file system, "
        "at least 8 MiB (a quarter of a disk under 32 MiB), at most 512 MiB; 0 disables",
    )
    backlog_rate: float = Field(
        200.0, gt=0, description="envelopes/s at most when replaying a backlog after an outage"
    )


class PatternFilter(Strict):
    """Names a destination may receive: any `allow` pattern matches and no `deny` pattern
    does (fnmatch, case-sensitive). Deny wins, so `deny: [program*]` keeps programs inside."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)

    def allows(self, name: str) -> bool:
        return any(fnmatchcase(name, p) for p in self.allow) and not any(
            fnmatchcase(name, p) for p in self.deny
        )

    @property
    def everything(self) -> bool:
        return self.allow == ["*"] and not self.deny


PayloadFormat = Literal["envelope", "json", "sparkplug_b"]
"""What a destination's MQTT payloads look like (docs/protocol.md, "Payload formats")."""


class SparkplugSettings(Strict):
    """Eclipse Sparkplug 3.0 naming for a `sparkplug_b` destination (docs/sparkplug.md)."""

    group_id: Ident | None = Field(None, description="Sparkplug group id; defaults to the site id")
    edge_node_id: Ident | None = Field(
        None, description="Sparkplug edge node id; defaults to the gateway id"
    )
    primary_host_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[^/+#]+$",
        description="wait for this primary host's STATE before NBIRTH (Sparkplug 3.0 STATE)",
    )


class Destination(Strict):
    """One MQTT broker of one platform; each gets its own connection."""

    id: Ident
    url: str | None = Field(None, description="mqtt://host:1883 or mqtts://host:8883")
    urls: list[str] = Field(
        default_factory=list,
        description="instead of url: several nodes of one clustered broker, or a primary and "
        "standbys, in order of preference; on loss the gateway moves to the next",
    )
    failback_after: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="seconds on a later url before checking whether the first one is back "
        "(a TCP connect); then the gateway returns to it. 0: stay until that node fails",
    )
    client_id: str | None = Field(None, description="defaults to '<gateway id>-<destination id>'")
    username: str | None = None
    password: SecretRef | None = None
    tls: TlsSettings | None = None
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto tries MQTT 5 and falls back to 3.1.1 when the broker refuses it"
    )
    keepalive: int = Field(30, ge=5, le=3600)
    streams: list[StreamName] = Field(
        default_factory=lambda: list(STREAMS), description="streams sent to this destination"
    )
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    machines: PatternFilter = Field(
        default_factory=PatternFilter, description="which machines' data this destination gets"
    )
    signals: PatternFilter = Field(
        default_factory=PatternFilter,
        description="which signals (telemetry records, state fields) this destination gets",
    )
    format: PayloadFormat = Field(
        "envelope",
        description="envelope: flattened JWS; json: the body, signature as a detached JWS in the "
        "MQTT 5 user property 'jws'; sparkplug_b: Sparkplug 3.0 protobuf, unsigned",
    )
    unsigned_on_mqtt311: bool = Field(
        False,
        description="json over MQTT 3.1.1 (no user properties): true publishes the body "
        "unsigned; false (default) falls back to the envelope",
    )
    sparkplug: SparkplugSettings = Field(
        default_factory=SparkplugSettings, description="naming for format sparkplug_b"
    )
    values: bool = Field(
        False,
        description="also publish each signal's last value, unsigned and retained, "
        "on {prefix}/{site}/{area}/{line}/{machine}/values/{signal}",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _broker_url(v)

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        urls = [_broker_url(u) for u in v]
        if len({u.split("://")[0] for u in urls}) > 1:
            raise ValueError("all urls must use the same scheme (the tls settings apply to all)")
        if len(set(urls)) != len(urls):
            raise ValueError("a url is listed twice")
        return urls

    @model_validator(mode="after")
    def _one_url_field(self) -> Destination:
        if (self.url is None) == (not self.urls):
            raise ValueError("give exactly one of 'url' or 'urls'")
        return self

    @property
    def brokers(self) -> list[str]:
        """The broker URLs in order of preference (`urls`, or `url` alone)."""
        return self.urls or [self.url or ""]

    @model_validator(mode="after")
    def _format_options(self) -> Destination:
        if self.values and self.format == "sparkplug_b":
            raise ValueError("'values' is for envelope and json destinations (Sparkplug has "
                             "its own metrics)")
        if self.unsigned_on_mqtt311 and self.format != "json":
            raise ValueError("'unsigned_on_mqtt311' applies to format json only")
        return self


def _broker_url(v: str) -> str:
    if not re.match(r"^mqtts?://[^/:\s]+(:\d{1,5})?/?$", v):
        raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if (problem := url_port_problem(v)) is not None:
        raise ValueError(problem)
    return v


_URL_PORT = re.compile(
    r"^[a-z][a-z0-9+.-]*://(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*)(?::(?P<port>[^/?#]*))?"
)  # scheme://[user@]host-or-[v6][:port]: urllib is not imported by models (no I/O modules)


def url_port_problem(url: str) -> str | None:
    """What is wrong with the port of a `scheme://HOST[:PORT][/path]` URL, or None. Five
    digits passed the URL patterns, and a port past 65535 met urllib's ValueError or the
    socket's OverflowError later: a traceback from `validate` (a broker URL), `browse` and
    `probe`, or a device that never connects (an OPC UA endpoint, an MTConnect agent)."""
    found = _URL_PORT.match(url)
    port = found["port"] if found else None
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return "the port after the host must be a TCP port, 1-65535"
    return None


class Nameplate(Strict):
    """Digital Nameplate fields (IDTA 02006) the YAML may give; devices may add more."""

    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    year_of_construction: int | None = Field(None, ge=1900, le=2100)
    global_asset_id: str | None = None


class ProgramSettings(Strict):
    ideal_cycle_time: float = Field(gt=0, description="seconds per part for this program")


@dataclass(frozen=True, slots=True)
class CycleTimes:
    """A machine's ideal cycle times in wall-clock seconds per part: what OEE (PRU), part
    records, capacity offers and the bookings desk compare with time the gateway measures.

    Why not the YAML figures as they are: those are the machine's own seconds. A machine
    served by the simulator with `time_scale: k` makes a part in 1/k of the wall time a real
    one takes, while every duration the gateway measures is wall time; dividing here, once,
    keeps all consumers consistent (`Machine.cycle_times`)."""

    machine: float | None
    """`machines[].ideal_cycle_time` in wall seconds, or None."""
    programs: Mapping[str, float]
    """`machines[].programs.{name}.ideal_cycle_time` in wall seconds."""

    def of(self, program: str | None) -> float | None:
        """Seconds per part of `program`: its own when the YAML lists it, else the
        machine's (the PRU rule of docs/oee.md), else None."""
        if program is not None and program in self.programs:
            return self.programs[program]
        return self.machine


Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
"""A free-text keyword (process, material, certification): trimmed, never empty."""


class WorkEnvelope(Strict):
    """Axis travel in millimetres: the largest part the machine can hold and reach."""

    x: float = Field(gt=0)
    y: float = Field(gt=0)
    z: float = Field(gt=0)


class Capabilities(Strict):
    """What a machine can make, as the plant declares it (published as-is, signed).

    Process names are lower-cased so that buyers filtering on "milling" also find
    "Milling"; materials and certifications keep their spelling ("Ti-6Al-4V", "ISO 9001").
    """

    processes: list[Label] = Field(
        default_factory=list, description="e.g. milling, turning, 5-axis, grinding"
    )
    work_envelope_mm: WorkEnvelope | None = Field(None, description="axis travel x/y/z in mm")
    max_part_weight_kg: float | None = Field(None, gt=0)
    materials: list[Label] = Field(default_factory=list, description="e.g. steel, aluminium")
    tolerance_mm: float | None = Field(None, gt=0, description="achievable tolerance, +/- mm")
    surface_finish_ra_um: float | None = Field(None, gt=0, description="best Ra in micrometres")
    certifications: list[Label] = Field(default_factory=list, description="e.g. ISO 9001")
    notes: str | None = Field(None, max_length=2000)

    @field_validator("processes")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [p.lower() for p in v]


class Booking(Strict):
    """Time already sold or reserved: [start, end), never offered again.

    Aware datetimes only: a naive time in a booking file would be read in whatever zone the
    gateway happens to run in, and the slot offered to a buyer would be off by hours.
    """

    start: AwareDatetime
    end: AwareDatetime
    reference: str | None = Field(None, max_length=256, description="order or job number")

    @model_validator(mode="after")
    def _ordered(self) -> Booking:
        if self.end <= self.start:
            raise ValueError("booking end must be after its start")
        return self

    def interval(self) -> tuple[datetime, datetime]:
        """The booking in UTC."""
        return (self.start.astimezone(UTC), self.end.astimezone(UTC))


class CapacitySettings(Strict):
    """Gateway-level settings of the `capacity` stream."""

    horizon_days: int = Field(14, ge=1, le=90, description="how far ahead free slots are offered")
    min_slot_minutes: int = Field(
        30, ge=0, le=1440, description="free slots shorter than this are not offered"
    )
    refresh_seconds: float = Field(
        300.0,
        ge=5,
        le=300,
        description="republish at least this often (and on change); at most 5 min by contract",
    )

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.horizon_days)

    @property
    def min_slot(self) -> timedelta:
        return timedelta(minutes=self.min_slot_minutes)


SignalName = Annotated[str, Field(pattern=r"^[a-z0-9_]+$", max_length=64)]


class PartRecordSettings(Strict):
    """The `part` stream of one machine: one signed record per completed part (issue 15)."""

    signals: list[SignalName] = Field(
        default_factory=list,
        description="process signals summarised (min/mean/max) per part, e.g. spindle_load",
    )
    energy_wait: float = Field(
        10.0,
        gt=0,
        le=600,
        description="seconds a finished part waits for the meter reading after its end; "
        "then it is published with energy_kwh null",
    )


class EnergyRoles(Strict):
    """Which of a device's signals are energy-meter values (any adapter: the roles name
    point/signal names). Cumulative active energy is what part records and OEE use."""

    energy_kwh: SignalName | None = Field(
        None, description="cumulative active energy imported, kWh (e.g. SDM630 30073)"
    )
    power_w: SignalName | None = Field(None, description="total active power, W")
    phase_power_w: list[SignalName] = Field(
        default_factory=list, description="active power per phase, W (L1, L2, L3)"
    )


class Machine(Strict):
    id: Ident
    name: str | None = None
    area: Ident
    line: Ident
    adapter: Ident = Field(description="adapter type, e.g. 'modbus' (an entry point name)")
    simulate: bool = Field(False, description="`edge-gateway simulate` serves this machine")
    enabled: bool = True
    gateway: Ident | None = Field(
        None,
        description="the gateway (one of `gateways`) whose host serves this machine, when the "
        "plant is split over several hosts",
    )
    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds between polls")
    degraded_after: int = Field(
        3, ge=1, le=1000,
        description="polls (or poll intervals, for subscriptions) with no good value from any "
        "point after which a connected machine is reported degraded and unavailable",
    )
    ideal_cycle_time: float | None = Field(None, gt=0, description="seconds per part")
    programs: dict[str, ProgramSettings] = Field(default_factory=dict)
    nameplate: Nameplate = Field(default_factory=Nameplate)
    connection: dict[str, Any] = Field(
        description="adapter-specific; see adapters/<type>/README.md"
    )
    points: list[dict[str, Any]] = Field(
        default_factory=list, description="adapter-specific point map"
    )
    capabilities: Capabilities | None = Field(None, description="what a buyer may order")
    bookings: list[Booking] = Field(default_factory=list, description="time already sold")
    bookings_file: ConfigPath | None = Field(
        None, description="JSON or YAML list of bookings, re-read at every capacity refresh"
    )
    simulator: dict[str, Any] = Field(
        default_factory=dict,
        description="machine-model options for `simulate` (seed, time_scale...)",
    )
    part_record: PartRecordSettings | None = Field(
        None, description="publish the `part` stream for this machine (one record per part)"
    )
    energy: EnergyRoles | None = Field(
        None, description="this device's energy-meter signals (a meter, or a machine that "
        "measures its own energy)"
    )
    meter_for: Ident | None = Field(
        None, description="this device is the energy meter of that machine (its `energy` "
        "roles count for it)"
    )

    @field_validator("simulator")
    @classmethod
    def _time_scale(cls, v: dict[str, Any]) -> dict[str, Any]:
        """`time_scale` rescales the ideal cycle times (`cycle_times`), so it is checked here
        too, not only when a simulator starts: the gateway may run beside a separate
        `edge-gateway simulate`."""
        scale = v.get("time_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(
                f"time_scale: expected a number > 0 (simulated seconds per wall second), "
                f"got {scale!r}"
            )
        return v

    @property
    def time_scale(self) -> float:
        """Machine seconds per wall-clock second: the simulator's `time_scale` for a
        `simulate: true` machine (its simulator, in this gateway or in `edge-gateway
        simulate` beside it, runs that much faster than the clock), else 1."""
        return float(self.simulator.get("time_scale", 1.0)) if self.simulate else 1.0

    @property
    def cycle_times(self) -> CycleTimes:
        """The ideal cycle times in wall-clock seconds (the YAML's divided by `time_scale`):
        the one source for every consumer of ideal cycle times (see `CycleTimes`)."""
        k = self.time_scale
        return CycleTimes(
            None if self.ideal_cycle_time is None else self.ideal_cycle_time / k,
            {name: p.ideal_cycle_time / k for name, p in self.programs.items()},
        )

    @model_validator(mode="after")
    def _meter(self) -> Machine:
        if self.meter_for is not None and (self.energy is None or self.energy.energy_kwh is None):
            raise ValueError("'meter_for' needs 'energy.energy_kwh' (the cumulative kWh point)")
        if self.meter_for == self.id:
            raise ValueError("'meter_for' names another machine; a machine that measures its "
                             "own energy only needs 'energy'")
        return self


class Break(Strict):
    start: ClockTime
    end: ClockTime


class Shift(Strict):
    name: Ident
    start: ClockTime
    end: ClockTime = Field(description="may be earlier than start: the shift runs past midnight")
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS[:5]))
    breaks: list[Break] = Field(default_factory=list)

    @model_validator(mode="after")
    def _breaks_within(self) -> Shift:
        """A break outside its shift was silently ignored by the calendar (it only keeps
        the part of a break that overlaps the shift), so the engineer believed planned
        downtime was set that OEE never saw: refuse it with the shift's hours."""

        def minutes_after_start(t: time) -> int:
            return (t.hour * 60 + t.minute - self.start.hour * 60 - self.start.minute) % 1440

        length = minutes_after_start(self.end) or 1440  # start == end: round the clock
        for b in self.breaks:
            if b.start == b.end:  # empty: no planned downtime either way
                continue
            begin, end = minutes_after_start(b.start), minutes_after_start(b.end)
            if not begin < length or not begin < (end or 1440) <= length:
                raise ValueError(
                    f"break {b.start:%H:%M}-{b.end:%H:%M} is not within the shift "
                    f"{self.start:%H:%M}-{self.end:%H:%M}"
                )
        return self


class ShiftCalendar(Strict):
    timezone: str = "UTC"
    shifts: list[Shift] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like 'Europe/Berlin')"
            ) from exc
        return v


class BatchSettings(Strict):
    """Telemetry records per topic are batched so one signature covers many samples."""

    max_records: int = Field(500, ge=1, le=10_000, description="records per envelope at most")
    max_bytes: int = Field(128_000, ge=1024, le=4_000_000, description="approximate body size")
    max_delay: float = Field(
        0.05,
        gt=0,
        le=60,
        description="seconds a record may wait; a poll's records arrive together, so a short "
        "delay costs no extra signatures for polling adapters",
    )
    polls_per_envelope: int = Field(
        1,
        ge=1,
        le=100,
        description="polling adapters: polls per envelope (one signature over several polls; "
        "records wait up to that many poll intervals, still bounded by max_delay)",
    )


class OeeSettings(Strict):
    """How long OEE history is kept in the state directory's SQLite store."""

    raw_retention_days: int = Field(
        8,
        ge=1,
        le=3650,
        description="state intervals and part counts kept in memory and on disk for open windows "
        "(last hour, today, a range, the running shift); about 200 B per part and state change",
    )
    window_retention_days: int = Field(400, ge=1, le=3650, description="closed shift windows")
    publish_every: float = Field(60.0, ge=1, le=3600, description="seconds between oee messages")


QueryMethod = Literal[
    "describe", "aas", "state", "oee", "capacity", "health", "parts", "energy", "reserve",
    "release", "bookings"
]
READ_METHODS: tuple[QueryMethod, ...] = (
    "describe", "aas", "state", "oee", "capacity", "health", "parts", "energy"
)
"""What a platform may ask when its `methods` are not listed: read-only views."""
BOOKING_METHODS: tuple[QueryMethod, ...] = ("reserve", "release", "bookings")
"""Methods that change the plant's commitments: off unless a platform's `methods` lists them."""
QUERY_METHODS: tuple[QueryMethod, ...] = READ_METHODS + BOOKING_METHODS


class Platform(Strict):
    """A capacity-sharing platform allowed to query this gateway over MQTT.

    Requests are JWS signed with one of the platform's Ed25519 keys; what it may ask is
    listed here, nothing else is answered.
    """

    id: Ident
    jwks_file: ConfigPath | None = Field(
        None, description="JWKS file with the platform's public keys"
    )
    public_key_file: ConfigPath | None = Field(None, description="PEM Ed25519 public key")
    methods: list[QueryMethod] = Field(
        default_factory=lambda: list(READ_METHODS),
        description="methods it may call; reserve/release/bookings only when listed",
    )
    machines: list[str] = Field(
        default_factory=lambda: ["*"], description="machine id patterns (fnmatch) it may ask about"
    )
    rate_limit: float = Field(5.0, gt=0, le=1000, description="requests per second, sustained")
    burst: int = Field(20, ge=1, le=10_000, description="requests allowed at once")
    public_reference: bool = Field(
        False,
        description="show this platform's id and references in the clear on the bookings and "
        "part streams (default: only a salted commitment the platform alone can open)",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> Platform:
        if (self.jwks_file is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of 'jwks_file' or 'public_key_file'")
        return self


class QuerySettings(Strict):
    max_request_bytes: int = Field(65_536, ge=1024, le=4_000_000)
    max_skew_seconds: float = Field(
        60.0, gt=0, le=3600, description="accepted age of a request's ts"
    )
    queue_size: int = Field(
        10_000, ge=1, le=100_000, description="requests waiting; more are dropped unanswered"
    )
    queue_bytes: int = Field(
        16 * 1024 * 1024,
        ge=65_536,
        le=1 << 30,
        description="payload bytes of the waiting requests; more are dropped unanswered",
    )


class WebSettings(Strict):
    """The gateway's local status page (read-only unless `allow_decisions`) and Prometheus
    `/metrics`."""

    enabled: bool = Field(True, description="serve the status page and /metrics")
    bind: str = Field(
        "127.0.0.1", min_length=1, description="address to listen on; 0.0.0.0 for every one"
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    token: SecretRef | None = Field(
        None,
        description="access token ({env: NAME} or {file: PATH}); required as `?token=` once "
        "(kept in a cookie) or `Authorization: Bearer` when set",
    )
    refresh_seconds: float = Field(
        2.0, ge=0.2, le=60, description="seconds between live updates to an open page"
    )
    allow_decisions: bool = Field(
        False,
        description="let the bookings page accept or decline requests waiting for a person "
        "(needs `token`); off: the page is read-only",
    )

    @field_validator("allow_decisions")
    @classmethod
    def _decisions_need_a_token(cls, allow: bool, info: ValidationInfo) -> bool:
        """A page that changes bookings must know who may: without a token, anyone who
        reaches the port (or a hostile page in the engineer's browser) could decide."""
        if allow and "token" in info.data and info.data["token"] is None:
            raise ValueError("allow_decisions needs gateway.web.token (an access token)")
        return allow


class CarbonPeriod(Strict):
    """A time-of-day grid factor, in the shift calendar's time zone; may pass midnight."""

    start: ClockTime
    end: ClockTime
    kg_per_kwh: float = Field(ge=0, le=5)


class CarbonSettings(Strict):
    """Grid emission factor: CO2e per kWh of the electricity the machines draw."""

    kg_per_kwh: float = Field(ge=0, le=5, description="kg CO2e per kWh (location-based)")
    source: str = Field(min_length=1, max_length=256, description="who published the factor")
    year: int = Field(ge=1990, le=2100, description="the year the factor is for")
    time_of_day: list[CarbonPeriod] = Field(
        default_factory=list,
        description="factors by local time (shifts.timezone); the first match wins, "
        "kg_per_kwh applies outside them",
    )


class Gateway(Strict):
    id: Ident
    site: Ident
    topic_prefix: Ident = "edge"
    state_dir: StateDirPath = Field(
        "/var/lib/edge-gateway",
        description="signing keys, outbox, OEE store; $STATE_DIRECTORY wins",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    batch: BatchSettings = Field(default_factory=BatchSettings)
    oee: OeeSettings = Field(default_factory=OeeSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    carbon: CarbonSettings | None = Field(
        None, description="grid emission factor: CO2e per part, per OEE window"
    )
    keys_dir: StateDirPath | None = Field(
        None,
        description="directory of the Ed25519 signing key (signing-key.pem, 0600) and retired "
        "public keys; default <state_dir>/keys; a key is created on first start",
    )
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="processes the machines are spread over on this host (each machine in "
        "exactly one); auto: one per core, at most 4, at least 16 machines each (one with a "
        "sparkplug_b destination); decided at the first start and kept in "
        "<state_dir>/workers (a state directory used by one process stays one); "
        "`run --workers N` wins",
    )
    poll_slots: Annotated[int, Field(ge=1, le=1000)] | Literal["auto", "spread"] = Field(
        "spread",
        description="when in its interval each polled machine reads: N, on one of N phase "
        "slots on the interval's grid, machines given slots round-robin in YAML order (1: "
        "all at once, as Telegraf's round_interval); spread (the default): each its own "
        "random phase; auto: one slot per 25 machines this process serves. Fewer slots "
        "cost less CPU (wake-ups coalesce) and raise latency (a slot's reads are sealed "
        "one after another)",
    )


class TimeWindow(Strict):
    """[start, end) in which no booking may run (blackout) or a machine is serviced."""

    start: AwareDatetime
    end: AwareDatetime
    machines: list[str] = Field(
        default_factory=lambda: ["*"], description="machine id patterns (fnmatch) it applies to"
    )
    reason: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def applies_to(self, machine_id: str) -> bool:
        return any(fnmatchcase(machine_id, p) for p in self.machines)

    def interval(self) -> tuple[datetime, datetime]:
        return (self.start.astimezone(UTC), self.end.astimezone(UTC))


class PlatformQuota(Strict):
    """What one platform may hold at once without a person looking at it."""

    max_hours: float | None = Field(
        None, gt=0, description="accepted and requested hours ahead of now, at most"
    )
    max_bookings: int | None = Field(None, ge=1, description="open bookings at most")


class BookingRules(Strict):
    """How platforms' `reserve` requests are decided (docs/protocol.md, "Bookings").

    Hard limits are never crossed, by rules or by a person: planned shift time only (breaks
    and holidays excluded), no maintenance, no blackout, no other accepted booking, not the
    running job's expected remaining time, not in the past. A request inside them is
    accepted at once when every `auto` rule holds, and waits for a person
    (`edge-gateway bookings accept|decline`) otherwise.
    """

    auto_accept: bool = Field(True, description="false: every request waits for a person")
    max_duration_minutes: int = Field(
        8 * 60, ge=1, le=90 * 1440, description="longer requests wait for a person"
    )
    min_notice_minutes: int = Field(
        0, ge=0, le=90 * 1440, description="requests starting sooner wait for a person"
    )
    horizon_days: int = Field(
        14, ge=1, le=365, description="requests starting later wait for a person"
    )
    max_horizon_days: int = Field(
        90, ge=1, le=730, description="requests starting later are declined"
    )
    machines: list[str] = Field(
        default_factory=lambda: ["*"], description="machines (fnmatch) booked without a person"
    )
    programs: list[str] = Field(
        default_factory=lambda: ["*"],
        description="programs (fnmatch) booked without a person; a request without one passes",
    )
    quota: PlatformQuota = Field(
        default_factory=PlatformQuota, description="per platform, for automatic acceptance"
    )
    quotas: dict[str, PlatformQuota] = Field(
        default_factory=dict, description="platform id -> its own quota (instead of `quota`)"
    )
    hold_minutes: int = Field(
        60,
        ge=1,
        le=7 * 1440,
        description="a request waiting for a person holds its slot this long (no other "
        "platform gets it meanwhile), then expires unless decided; never past its start",
    )
    blackouts: list[TimeWindow] = Field(
        default_factory=list, description="periods never booked (inventory, plant holidays)"
    )
    maintenance: list[TimeWindow] = Field(
        default_factory=list, description="planned maintenance per machine, never booked"
    )
    poll_seconds: float = Field(
        1.0, ge=0.1, le=60, description="how often the gateway looks for decisions made "
        "with `edge-gateway bookings`"
    )

    def quota_for(self, platform: str) -> PlatformQuota:
        return self.quotas.get(platform, self.quota)

    @property
    def max_duration(self) -> timedelta:
        return timedelta(minutes=self.max_duration_minutes)

    @property
    def min_notice(self) -> timedelta:
        return timedelta(minutes=self.min_notice_minutes)

    @property
    def hold(self) -> timedelta:
        return timedelta(minutes=self.hold_minutes)


class Plant(Strict):
    gateway: Gateway
    gateways: list[Ident] = Field(
        default_factory=list,
        description="split the plant over several hosts: the ids of the gateways that share "
        "it, each machine naming its own in `machines[].gateway`; a host serves the share "
        "chosen by `run --gateway-id` / $EDGE_GATEWAY_ID (default: `gateway.id`)",
    )
    machines: list[Machine] = Field(min_length=1)
    destinations: list[Destination] = Field(
        default_factory=list, description="empty: an embedded broker on 127.0.0.1:1883 is used"
    )
    shifts: ShiftCalendar = Field(default_factory=ShiftCalendar)
    platforms: list[Platform] = Field(
        default_factory=list, description="who may query this gateway; none: queries are refused"
    )
    booking: BookingRules = Field(
        default_factory=BookingRules, description="how platforms' reserve requests are decided"
    )

    def machine(self, machine_id: str) -> Machine:
        for m in self.machines:
            if m.id == machine_id:
                return m
        raise KeyError(machine_id)


def duplicate_id_problems(plant: Plant) -> list[tuple[tuple[int | str, ...], str]]:
    """Machine and destination ids given twice, each at the YAML path of its repeat (the
    loader locates it: an engineer who copied a block finds the line to change)."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for key, ids in (
        ("machines", [m.id for m in plant.machines]),
        ("destinations", [d.id for d in plant.destinations]),
    ):
        first: dict[str, int] = {}
        for i, ident in enumerate(ids):
            if ident in first:
                problems.append(((key, i, "id"), f"duplicate id {ident!r} (also {key}"
                                                  f"[{first[ident]}]); ids must be unique"))
            else:
                first[ident] = i
    return problems


def worker_problems(plant: Plant) -> list[tuple[tuple[int | str, ...], str]]:
    """`gateway.workers` above 1 beside a Sparkplug destination: `run` refuses it (one edge
    node is one MQTT session), so `validate` must too, at the line to change."""
    workers = plant.gateway.workers
    if workers == "auto" or workers < 2:
        return []
    problems: list[tuple[tuple[int | str, ...], str]] = [
        (("gateway", "workers"),
         f"{workers} worker processes, but destination {d.id!r} is sparkplug_b (one edge "
         f"node is one MQTT session, so the plant runs as one process): set 1 or auto")
        for d in plant.destinations if d.format == "sparkplug_b"
    ]
    return problems[:1]


def meter_problems(plant: Plant) -> list[tuple[tuple[int | str, ...], str]]:
    """Energy meters that name no machine, or two meters on one machine, each with the YAML
    path it is about (the loader locates them); empty: fine."""
    machine_ids = {m.id for m in plant.machines}
    metered: dict[str, str] = {}
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for i, m in enumerate(plant.machines):
        if m.meter_for is None:
            continue
        if m.meter_for not in machine_ids:
            problems.append((("machines", i, "meter_for"),
                             f"{m.meter_for!r} is no machine of this plant"))
        elif m.meter_for in metered:
            problems.append((("machines", i, "meter_for"),
                             f"machine {m.meter_for!r} already has a meter: "
                             f"{metered[m.meter_for]!r}"))
        else:
            metered[m.meter_for] = m.id
    return problems


def machine_topic(plant: Plant, machine: Machine, stream: str) -> str:
    g = plant.gateway
    return f"{g.topic_prefix}/{g.site}/{machine.area}/{machine.line}/{machine.id}/{stream}"


def gateway_topic(plant: Plant, leaf: str) -> str:
    g = plant.gateway
    return f"{g.topic_prefix}/{g.site}/{g.id}/{leaf}"
