"""Settings of one OPC UA machine: the `connection:` and `points:` blocks of the plant YAML.

Nodes are addressed by namespace URI (`nsu=`), never by a bare namespace index (`ns=`):
a server renumbers its namespace table when a model is added or loaded in another order,
and a YAML that said `ns=4` would then silently read another machine's value. Namespace 0
is fixed by the standard, so `i=2258` alone is accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import AdapterSettings, name_clashes, no_duplicates
from models.config_path import ConfigPath
from models.plant import SecretRef, url_port_problem

from .profile_signals import PROFILE_SIGNALS

SecurityPolicyName = Literal["None", "Basic256Sha256", "Aes256_Sha256_RsaPss"]
SecurityModeName = Literal["None", "Sign", "SignAndEncrypt"]

_EXPANDED = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[isgb])=(?P<id>.+)$")
_NS0 = re.compile(r"^(?P<kind>[isgb])=(?P<id>.+)$")
_SEGMENT = re.compile(r"/((?:\{[^}]*\})?[^/{}]+)")
_SEG_PARTS = re.compile(r"^(?:\{(?P<uri>[^}]*)\})?(?P<name>.+)$")

DEFAULT_PKI_DIRS = ("$STATE_DIRECTORY/opcua-pki", "/var/lib/edge-gateway/opcua-pki")



def default_pki_dir() -> Path:
    """`$STATE_DIRECTORY/opcua-pki` under systemd, else /var/lib/edge-gateway/opcua-pki.

    Never relative to the working directory: a daemon's cwd is `/` or wherever the
    operator happened to stand, and a client key must not land there.
    """
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "opcua-pki" if state else Path("/var/lib/edge-gateway/opcua-pki")


def check_node_address(text: str) -> str:
    """Accept `nsu=<uri>;i|s|g|b=<id>`, a namespace-0 `i=85`, or a browse path `/...`."""
    text = text.strip()
    if text.startswith("ns="):
        raise ValueError(
            f"{text!r}: bare namespace indexes change when a server reloads its models; "
            "write nsu=<namespace uri>;... instead"
        )
    if text.startswith("/"):
        segments = _SEGMENT.findall(text)
        if not segments or "".join("/" + s for s in segments) != text:
            raise ValueError(
                f"{text!r}: a browse path is /Seg/Seg..., each segment `{{namespace uri}}Name` "
                "or `Name` (namespace 0)"
            )
        return text
    if _EXPANDED.match(text) or _NS0.match(text):
        return text
    raise ValueError(f"{text!r}: expected nsu=<uri>;i=<n> (or s=, g=, b=), i=<n>, or /browse/path")


def browse_segments(path: str) -> list[tuple[str | None, str]]:
    """`/{uri}Name/Other` -> [(uri, "Name"), (None, "Other")]; None means namespace 0."""
    out: list[tuple[str | None, str]] = []
    for seg in _SEGMENT.findall(path):
        m = _SEG_PARTS.match(seg)
        assert m is not None  # _SEGMENT only yields non-empty segments
        out.append((m.group("uri"), m.group("name")))
    return out


class OpcUaConnection(AdapterSettings):
    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^/\s]+(/.*)?$", description="opc.tcp://host:port/path"
    )
    security_policy: SecurityPolicyName = "None"
    security_mode: SecurityModeName = "None"
    pki_dir: ConfigPath | None = Field(
        None,
        description="client certificate/key, trust list; default "
        "$STATE_DIRECTORY/opcua-pki or /var/lib/edge-gateway/opcua-pki",
    )
    trust_dir: ConfigPath | None = Field(
        None, description="trusted server certificates (DER or PEM); default <pki_dir>/trusted"
    )
    trust_on_first_use: bool = Field(
        False, description="accept and pin an unknown server certificate on first contact"
    )
    username: str | SecretRef | None = None
    password: SecretRef | None = None
    application_uri: str = Field(
        "urn:edge-gateway:opcua-client", description="goes into the generated client certificate"
    )
    timeout: float = Field(4.0, gt=0, le=120, description="seconds per request")
    session_timeout: float = Field(60.0, ge=1, le=3600, description="seconds")
    watchdog_interval: float = Field(
        1.0, gt=0, le=60, description="seconds between liveness probes (detects a frozen server)"
    )
    profile: Literal["none", "machinery", "machine_tool", "sinumerik"] = Field(
        "none",
        description="map the machine without points: machinery (OPC 40001-1), machine_tool "
        "(OPC 40501-1, Machinery included), sinumerik (SINUMERIK OPC UA NC variables)",
    )
    machine: str | None = Field(
        None,
        description="machinery/machine_tool profile: browse name of the machine below "
        "Machines, when the server has several",
    )
    max_items_per_subscription: int = Field(
        1000, ge=1, description="start another subscription past this many monitored items"
    )
    publishing_interval: float = Field(0.5, gt=0, le=3600, description="seconds")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_port(cls, v: str) -> str:
        if (problem := url_port_problem(v)) is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _security(self) -> OpcUaConnection:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both 'None', or a policy "
                "with mode 'Sign' or 'SignAndEncrypt'"
            )
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs 'username'")
        return self

    def pki_path(self, state_dir: Path | None = None) -> Path:
        """`pki_dir`, else `<gateway state dir>/opcua-pki`, else the systemd default."""
        if self.pki_dir:
            return Path(self.pki_dir)
        return state_dir / "opcua-pki" if state_dir is not None else default_pki_dir()

    def trust_path(self, state_dir: Path | None = None) -> Path:
        return Path(self.trust_dir) if self.trust_dir else self.pki_path(state_dir) / "trusted"


class OpcUaPoint(AdapterSettings):
    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="signal name")
    node: str = Field(description="nsu=<uri>;s=<id> | nsu=<uri>;i=<n> | i=<n> | /browse/path")
    root: str = Field("i=85", description="start of a browse path (default: Objects)")
    mode: Literal["subscribe", "read"] = "subscribe"
    sampling_interval: float | None = Field(
        None, ge=0, description="seconds; default: the publishing interval"
    )
    queue_size: int = Field(1, ge=1, le=10000)
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    deadband_value: float = Field(0.0, ge=0)
    unit: str | None = None
    map: dict[int | str, str] | None = Field(
        None, description="raw value -> text (enumerations, state names)"
    )

    @field_validator("node", "root")
    @classmethod
    def _address(cls, v: str) -> str:
        return check_node_address(v)

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaPoint:
        if self.root.startswith("/"):
            raise ValueError("'root' must be a node id (nsu=...;i=... or i=...), not a path")
        if self.mode == "read" and (self.deadband_type != "none" or self.queue_size != 1):
            raise ValueError("deadband and queue_size apply to mode 'subscribe' only")
        if self.deadband_type == "none" and self.deadband_value:
            raise ValueError("deadband_value needs deadband_type 'absolute' or 'percent'")
        if self.deadband_type == "percent" and self.deadband_value > 100:
            raise ValueError("a percent deadband is 0..100")
        return self


class OpcUaSettings(AdapterSettings):
    connection: OpcUaConnection
    points: Annotated[list[OpcUaPoint], Field(default_factory=list)]

    @model_validator(mode="after")
    def _whole(self) -> OpcUaSettings:
        if not self.points and self.connection.profile == "none":
            raise ValueError(
                "no points: list some, or set connection.profile (machinery, machine_tool, "
                "sinumerik)"
            )
        no_duplicates([p.name for p in self.points])
        return self

    def point_clashes(self) -> list[tuple[int, str]]:
        """A point named like a profile's signal is refused, not merged: the adapter binds
        points and profile inputs separately, so both would be published."""
        profile = self.connection.profile
        by = "the adapter" if profile == "none" else f"profile {profile}"
        return name_clashes([p.name for p in self.points], PROFILE_SIGNALS[profile], by)
