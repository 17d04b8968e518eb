"""Settings of one FANUC machine: the `connection:` and `points:` blocks of the plant YAML.

`points:` lists extra values read each poll from macro variables (`#3901` parts count...)
or CNC parameters (`6711` parts count, `6757`/`6758` cycle time...), because where a shop
keeps its counters differs from machine to machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapters.base import AdapterSettings, name_clashes, no_duplicates


class FocasConnection(AdapterSettings):
    host: str = Field(description="control address (Ethernet, embedded or FAST Ethernet board)")
    port: int = Field(8193, ge=1, le=65535, description="FOCAS TCP port (8193 by default)")
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for one reply")
    max_requests_per_frame: int = Field(
        10, ge=1, le=64, description="sub-requests packed into one data request"
    )


class FocasPoint(AdapterSettings):
    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="signal name")
    source: Literal["macro", "parameter"] = Field(description="macro variable or CNC parameter")
    number: int = Field(ge=0, le=99_999_999, description="variable or parameter number")
    data_type: Literal["float", "int", "bool"] = Field(
        "float", description="int truncates toward zero; bool is value != 0"
    )
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(None, description="engineering unit, e.g. s or 1/min")


FIXED_SIGNALS = frozenset({
    "execution", "controller_mode", "emergency_stop", "alarm", "program", "program_number",
    "main_program_number", "model", "cnc_type", "cnc_series", "control_version", "focas_run",
    "focas_mode", "motion",
})


class FocasSettings(AdapterSettings):
    connection: FocasConnection
    points: list[FocasPoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> FocasSettings:
        no_duplicates([p.name for p in self.points])
        return self

    def point_clashes(self) -> list[tuple[int, str]]:
        return name_clashes([p.name for p in self.points], FIXED_SIGNALS, "the FOCAS adapter")
