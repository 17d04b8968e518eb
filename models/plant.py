"""Plant configuration: one YAML file describes one plant and its gateway.

Generic fields are checked here; each machine's `connection` and `points` blocks are checked
by its adapter's own `settings_model` (the loader in `edge/config.py` runs both and reports
every problem with file, line, column and field path). Secrets are never inline: a
`SecretRef` names an environment variable or a file, resolved only when connecting.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Ident = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]
"""Ids become MQTT topic levels: lower case, digits, `_` and `-` only."""

StreamName = Literal["telemetry", "state", "oee", "capacity"]
STREAMS: tuple[StreamName, ...] = ("telemetry", "state", "oee", "capacity")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives. Exactly one of `env` or `file`; its value never enters logs."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file' (secrets are never inline)")
        return self

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


class TlsSettings(Strict):
    ca_file: str | None = Field(
        None, description="CA bundle to verify the broker; system CAs when absent"
    )
    cert_file: str | None = Field(None, description="client certificate for mTLS")
    key_file: str | None = Field(None, description="client private key for mTLS")
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
    min_free_disk_bytes: int = Field(
        512 * 2**20, ge=0, description="stop growing when the disk has less free space than this"
    )
    backlog_rate: float = Field(
        200.0, gt=0, description="envelopes/s at most when replaying a backlog after an outage"
    )


class Destination(Strict):
    """One MQTT broker of one platform; each gets its own connection."""

    id: Ident
    url: str = Field(description="mqtt://host:1883 or mqtts://host:8883")
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

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^mqtts?://[^/:\s]+(:\d{1,5})?/?$", v):
            raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        return v


class Nameplate(Strict):
    """Digital Nameplate fields (IDTA 02006) the YAML may give; devices may add more."""

    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    year_of_construction: int | None = Field(None, ge=1900, le=2100)
    global_asset_id: str | None = None


class ProgramSettings(Strict):
    ideal_cycle_time: float = Field(gt=0, description="seconds per part for this program")


class Machine(Strict):
    id: Ident
    name: str | None = None
    area: Ident
    line: Ident
    adapter: Ident = Field(description="adapter type, e.g. 'modbus' (an entry point name)")
    simulate: bool = Field(False, description="`edge-gateway simulate` serves this machine")
    enabled: bool = True
    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds between polls")
    ideal_cycle_time: float | None = Field(None, gt=0, description="seconds per part")
    programs: dict[str, ProgramSettings] = Field(default_factory=dict)
    nameplate: Nameplate = Field(default_factory=Nameplate)
    connection: dict[str, Any] = Field(
        description="adapter-specific; see adapters/<type>/README.md"
    )
    points: list[dict[str, Any]] = Field(
        default_factory=list, description="adapter-specific point map"
    )
    simulator: dict[str, Any] = Field(
        default_factory=dict,
        description="machine-model options for `simulate` (seed, time_scale...)",
    )


class Break(Strict):
    start: time
    end: time


class Shift(Strict):
    name: Ident
    start: time
    end: time = Field(description="may be earlier than start: the shift runs past midnight")
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS[:5]))
    breaks: list[Break] = Field(default_factory=list)


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
    max_delay: float = Field(0.25, gt=0, le=60, description="seconds a record may wait")


class OeeSettings(Strict):
    """How long OEE history is kept in the state directory's SQLite store."""

    raw_retention_days: int = Field(35, ge=1, le=3650, description="state intervals and counts")
    window_retention_days: int = Field(400, ge=1, le=3650, description="closed shift windows")
    publish_every: float = Field(60.0, ge=1, le=3600, description="seconds between oee messages")


QueryMethod = Literal["describe", "aas", "state", "oee", "capacity", "health"]
QUERY_METHODS: tuple[QueryMethod, ...] = ("describe", "aas", "state", "oee", "capacity", "health")


class Platform(Strict):
    """A capacity-sharing platform allowed to query this gateway over MQTT.

    Requests are JWS signed with one of the platform's Ed25519 keys; what it may ask is
    listed here, nothing else is answered.
    """

    id: Ident
    jwks_file: str | None = Field(None, description="JWKS file with the platform's public keys")
    public_key_file: str | None = Field(None, description="PEM Ed25519 public key")
    methods: list[QueryMethod] = Field(default_factory=lambda: list(QUERY_METHODS))
    machines: list[str] = Field(
        default_factory=lambda: ["*"], description="machine id patterns (fnmatch) it may ask about"
    )
    rate_limit: float = Field(5.0, gt=0, le=1000, description="requests per second, sustained")
    burst: int = Field(20, ge=1, le=10_000, description="requests allowed at once")

    @model_validator(mode="after")
    def _one_key_source(self) -> Platform:
        if (self.jwks_file is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of 'jwks_file' or 'public_key_file'")
        return self


class QuerySettings(Strict):
    max_request_bytes: int = Field(65_536, ge=1024, le=4_000_000)
    max_skew_seconds: float = Field(60.0, gt=0, le=3600, description="accepted age of a request's ts")
    queue_size: int = Field(200, ge=1, le=100_000, description="requests waiting; more are dropped")


class Gateway(Strict):
    id: Ident
    site: Ident
    topic_prefix: Ident = "edge"
    state_dir: str = Field(
        "/var/lib/edge-gateway",
        description="signing keys, outbox, OEE store; $STATE_DIRECTORY wins",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    batch: BatchSettings = Field(default_factory=BatchSettings)
    oee: OeeSettings = Field(default_factory=OeeSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    keys_dir: str | None = Field(
        None,
        description="directory of the Ed25519 signing key (signing-key.pem, 0600) and retired "
        "public keys; default <state_dir>/keys; a key is created on first start",
    )


class Plant(Strict):
    gateway: Gateway
    machines: list[Machine] = Field(min_length=1)
    destinations: list[Destination] = Field(
        default_factory=list, description="empty: an embedded broker on 127.0.0.1:1883 is used"
    )
    shifts: ShiftCalendar = Field(default_factory=ShiftCalendar)
    platforms: list[Platform] = Field(
        default_factory=list, description="who may query this gateway; none: queries are refused"
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> Plant:
        for name, ids in (
            ("machine", [m.id for m in self.machines]),
            ("destination", [d.id for d in self.destinations]),
        ):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"duplicate {name} id(s): {', '.join(dup)}")
        return self

    def machine(self, machine_id: str) -> Machine:
        for m in self.machines:
            if m.id == machine_id:
                return m
        raise KeyError(machine_id)


def machine_topic(plant: Plant, machine: Machine, stream: str) -> str:
    g = plant.gateway
    return f"{g.topic_prefix}/{g.site}/{machine.area}/{machine.line}/{machine.id}/{stream}"


def gateway_topic(plant: Plant, leaf: str) -> str:
    g = plant.gateway
    return f"{g.topic_prefix}/{g.site}/{g.id}/{leaf}"
