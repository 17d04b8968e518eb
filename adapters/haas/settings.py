"""Settings of one Haas machine: the `connection:` and `points:` blocks of the plant YAML.

`points:` lists the Q600 macro variables to read each poll (cycle counters, spindle load,
anything a post-processor writes into a macro); the fixed Q-commands need no configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapters.base import AdapterSettings, no_duplicates


class HaasConnection(AdapterSettings):
    transport: Literal["tcp", "serial"] = Field("tcp", description="tcp (NGC port 5051) or serial")
    host: str | None = Field(None, description="control address (tcp)")
    port: int = Field(5051, ge=1, le=65535, description="TCP port, Haas setting 143 (tcp)")
    port_path: str | None = Field(None, description="serial device, e.g. /dev/ttyUSB0 (serial)")
    baudrate: int = Field(9600, gt=0, description="serial only; Haas setting 11")
    parity: Literal["N", "E", "O"] = Field("N", description="serial only")
    stopbits: Literal[1, 2] = Field(1, description="serial only")
    bytesize: Literal[7, 8] = Field(8, description="serial only")
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for one reply")
    identify: bool = Field(
        True, description="read Q100/Q101/Q102 (serial number, version, model) on connect"
    )
    mode: bool = Field(True, description="read Q104 (controller mode) each poll")
    status: bool = Field(True, description="read Q500 (program, status, parts) each poll")

    @model_validator(mode="after")
    def _endpoint(self) -> HaasConnection:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport 'tcp' needs 'host'")
        if self.transport == "serial" and not self.port_path:
            raise ValueError("transport 'serial' needs 'port_path' (e.g. /dev/ttyUSB0)")
        return self


class HaasMacro(AdapterSettings):
    """One Q600 macro variable."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="signal name")
    macro: int = Field(ge=1, le=99999, description="macro variable number, e.g. 3027")
    data_type: Literal["float", "int", "bool"] = Field(
        "float", description="int truncates toward zero; bool is value != 0"
    )
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(None, description="engineering unit, e.g. 1/min or %")


class HaasSettings(AdapterSettings):
    connection: HaasConnection
    points: list[HaasMacro] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> HaasSettings:
        names = [p.name for p in self.points]
        no_duplicates(names)
        c = self.connection
        taken = (IDENTITY_SIGNALS if c.identify else frozenset()) | (
            MODE_SIGNALS if c.mode else frozenset()) | (STATUS_SIGNALS if c.status else frozenset())
        clash = sorted(set(names) & taken)
        if clash:
            raise ValueError(
                f"point name(s) {', '.join(clash)} are produced by the fixed Q-commands; "
                "rename the point or turn that command off (identify/mode/status: false)"
            )
        if not (self.connection.status or self.connection.mode or self.points):
            raise ValueError("nothing to read: enable status or mode, or list macro points")
        return self


IDENTITY_SIGNALS = frozenset({"serial_number", "control_version", "model"})
MODE_SIGNALS = frozenset({"controller_mode", "haas_mode"})
# `part_count` is not reserved: a macro point of that name (#3901, the M30 counter) wins
# over Q500's PARTS field, because Q500 answers only `STATUS, BUSY` while a program runs.
STATUS_SIGNALS = frozenset(
    {"execution", "program", "program_number", "alarm", "haas_status"}
)
