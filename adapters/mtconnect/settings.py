"""Settings of MTConnect machines: `connection:` and the optional `points:` of the plant YAML.

Why `points:` is optional here (unlike Modbus): an MTConnect agent describes itself
(`/probe`), and an SHDR stream names its data items, so everything can be mapped by its
MTConnect type without a register map. `points:` only renames (or, with
`connection.unlisted: drop`, selects) data items; for SHDR it can also say what type a
key is when no device model file is given. `unlisted` sits in `connection:` because the
gateway hands an adapter only its `connection:` and `points:` blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from adapters.base import AdapterSettings, no_duplicates
from models.config_path import anchor
from models.plant import url_port_problem

__all__ = [
    "AgentConnection",
    "AgentPoint",
    "MtconnectAgentSettings",
    "ShdrConnection",
    "ShdrPoint",
    "ShdrSettings",
]


def _anchored(path: Path, info: ValidationInfo) -> Path:
    return Path(anchor(str(path), info.context))


AnchoredPath = Annotated[Path, AfterValidator(_anchored)]
"""A file named in the plant YAML: relative to the YAML file's directory once loaded
(models/config_path.py)."""

SignalName = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="gateway signal name")


class AgentConnection(AdapterSettings):
    url: str = Field(description="agent base URL, e.g. http://10.0.0.5:5000 (prefix kept)")
    device: str | None = Field(None, description="device name or uuid; default: the first device")
    timeout: float = Field(5.0, gt=0, le=120, description="seconds for one HTTP request")
    count: int = Field(1000, ge=1, le=100_000, description="max observations per /sample request")
    max_reply_bytes: int = Field(
        2 * 2**20, ge=2**16, le=256 * 2**20,
        description="largest agent reply read (bytes); a bigger one is refused unread past the "
        "cap, so one hostile agent cannot grow the gateway's memory (a /sample page of 1000 "
        "observations is ~0.3 MB)",
    )

    @property
    def max_elements(self) -> int:
        """XML elements one reply may hold: a parsed element costs far more memory than its
        bytes (`<a/>` is 4 bytes), so the byte cap alone does not bound the tree. A /sample
        page has about one element per observation; 20 per observation plus room for a
        large device model is far above any real agent."""
        return 20 * self.count + 20_000
    unlisted: Literal["keep", "drop"] = Field(
        "keep", description="data items neither in points nor well known: keep under their "
        "own name, or drop"
    )

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must look like http://host:port[/prefix]")
        if (problem := url_port_problem(v)) is not None:
            raise ValueError(problem)
        return v.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class AgentPoint(AdapterSettings):
    data_item: str = Field(min_length=1, description="data item id or name in the probe")
    name: str = SignalName
    unit: str | None = Field(None, description="overrides the unit derived from the probe")


class MtconnectAgentSettings(AdapterSettings):
    connection: AgentConnection
    points: list[AgentPoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> MtconnectAgentSettings:
        no_duplicates([p.name for p in self.points], "point name(s)")
        no_duplicates([p.data_item for p in self.points], "data item(s)")
        return self


class ShdrConnection(AdapterSettings):
    host: str = Field(min_length=1)
    port: int = Field(7878, ge=1, le=65535)
    timeout: float = Field(5.0, gt=0, le=120, description="seconds to connect")
    heartbeat: float = Field(
        10.0, gt=0, le=600,
        description="seconds between '* PING's when the device answers PONG",
    )
    silence: float = Field(
        60.0, gt=0, le=3600,
        description="seconds without a byte before a device that never PONGs counts as gone",
    )
    device_model: AnchoredPath | None = Field(
        None, description="an MTConnect Devices.xml that types the SHDR keys"
    )
    device: str | None = Field(None, description="device in device_model; default: the first")
    timestamps: Literal["device", "gateway"] = Field(
        "device", description="source_ts from the SHDR line (device) or none (gateway)"
    )
    unlisted: Literal["keep", "drop"] = Field(
        "keep", description="data items neither in points nor well known: keep under their "
        "own name, or drop"
    )


class ShdrPoint(AdapterSettings):
    key: str = Field(min_length=1, description="SHDR key (data item name or id)")
    name: str | None = Field(None, pattern=r"^[a-z0-9_]+$", max_length=64)
    type: str | None = Field(
        None, pattern=r"^[A-Z_]+$", description="MTConnect type, e.g. EXECUTION, PART_COUNT; "
        "MESSAGE: the key sends `native_code|text`, the text is the value"
    )
    sub_type: str | None = Field(None, pattern=r"^[A-Z_]+$")
    category: Literal["SAMPLE", "EVENT", "CONDITION"] | None = None
    component: str = Field("", description="component kind, e.g. Rotary (spindle_* names)")
    unit: str | None = None

    @model_validator(mode="after")
    def _does_something(self) -> ShdrPoint:
        if self.name is None and self.type is None and self.category is None:
            raise ValueError("a point needs 'name', 'type' or 'category'")
        return self


class ShdrSettings(AdapterSettings):
    connection: ShdrConnection
    points: list[ShdrPoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ShdrSettings:
        no_duplicates([p.key for p in self.points], "key(s)")
        no_duplicates([p.name for p in self.points if p.name], "point name(s)")
        return self
