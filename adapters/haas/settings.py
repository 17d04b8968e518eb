"""Settings of one Haas machine: the `connection:` and `points:` blocks of the plant YAML.

`points:` lists the Q600 macro variables to read each poll (cycle counters, spindle load,
anything a post-processor writes into a macro); the fixed Q-commands need no configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapters.base import AdapterSettings, name_clashes, no_duplicates


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
        no_duplicates([p.name for p in self.points])
        if not (self.connection.status or self.connection.mode or self.points):
            raise ValueError("nothing to read: enable status or mode, or list macro points")
        return self

    def point_clashes(self) -> list[tuple[int, str]]:
        """A macro point named like a signal of an enabled fixed command (the command can be
        turned off instead); `part_count` is not one of them, see STATUS_SIGNALS."""
        names = [p.name for p in self.points]
        c = self.connection
        return [
            clash
            for enabled, taken, by in (
                (c.identify, IDENTITY_SIGNALS, "Q100-Q102 (identify: true)"),
                (c.mode, MODE_SIGNALS, "Q104 (mode: true)"),
                (c.status, STATUS_SIGNALS, "Q500 (status: true)"),
            )
            if enabled
            for clash in name_clashes(names, taken, by)
        ]


IDENTITY_SIGNALS = frozenset({"serial_number", "control_version", "model"})
MODE_SIGNALS = frozenset({"controller_mode", "haas_mode"})
# `part_count` is not reserved: a macro point of that name (#3901, the M30 counter) wins
# over Q500's PARTS field, because Q500 answers only `STATUS, BUSY` while a program runs.
STATUS_SIGNALS = frozenset(
    {"execution", "program", "program_number", "alarm", "haas_status"}
)
