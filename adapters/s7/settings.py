"""Settings of one S7 PLC: the `connection:` and `points:` blocks of the plant YAML.

What a plant engineer can get wrong about an S7 map is refused at load time with the
point's path: an address that does not parse, a data type that does not fit the address's
width (`DB10.DBW2` as REAL), a bit on a word, a string without room. The PDU size that
decides how reads are split is only known after connecting; everything else is checked here.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from adapters.base import AdapterSettings, no_duplicates

from .address import Area, S7Address, parse_address

DataType = Literal[
    "BOOL", "BYTE", "WORD", "DWORD", "LWORD",
    "SINT", "USINT", "INT", "UINT", "DINT", "UDINT", "LINT", "ULINT",
    "REAL", "LREAL", "STRING", "WSTRING", "DATE_AND_TIME", "DTL", "TIME",
    "S5TIME", "COUNTER",
]

FIXED_WIDTH: dict[str, int] = {
    "BOOL": 1, "BYTE": 1, "SINT": 1, "USINT": 1,
    "WORD": 2, "INT": 2, "UINT": 2, "S5TIME": 2, "COUNTER": 2,
    "DWORD": 4, "DINT": 4, "UDINT": 4, "REAL": 4, "TIME": 4,
    "LWORD": 8, "LINT": 8, "ULINT": 8, "LREAL": 8, "DATE_AND_TIME": 8, "DTL": 12,
}
INTEGER_TYPES = frozenset({"BYTE", "WORD", "DWORD", "LWORD", "SINT", "USINT", "INT", "UINT",
                           "DINT", "UDINT", "LINT", "ULINT", "COUNTER"})
NUMERIC_TYPES = INTEGER_TYPES | {"REAL", "LREAL", "TIME", "S5TIME"}
STRING_TYPES = frozenset({"STRING", "WSTRING"})
_ALIASES = {"DT": "DATE_AND_TIME", "FLOAT": "REAL", "CHAR_STRING": "STRING"}
_DEFAULT_TYPE = {"X": "BOOL", "B": "BYTE", "W": "WORD", "D": "DWORD", "T": "S5TIME",
                 "C": "COUNTER"}
MIN_PDU = 240
"""The smallest PDU an S7 CPU negotiates (S7-200/300); reads are planned against the real one."""


class S7Connection(AdapterSettings):
    host: str = Field(description="PLC or CP address")
    port: int = Field(102, ge=1, le=65535, description="ISO-on-TCP port (RFC 1006)")
    rack: int = Field(0, ge=0, le=7, description="rack of the CPU (usually 0)")
    slot: int = Field(
        1, ge=0, le=31,
        description="slot of the CPU: 2 on S7-300, 3 or 4 on S7-400, 1 (or 0) on S7-1200/1500",
    )
    local_tsap: int | None = Field(
        None, ge=0, le=0xFFFF,
        description="instead of rack/slot (LOGO!, S7-200, a CP): our TSAP, e.g. 0x0100",
    )
    remote_tsap: int | None = Field(
        None, ge=0, le=0xFFFF, description="instead of rack/slot: the PLC's TSAP, e.g. 0x0200"
    )
    connection_type: Literal["pg", "op", "basic"] = Field(
        "pg", description="S7 connection resource: pg (programming device), op (HMI), basic"
    )
    pdu_size: int = Field(
        480, ge=MIN_PDU, le=960,
        description="PDU size to ask for; the CPU answers with what it supports (240-960)",
    )
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for one reply")
    max_gap: int = Field(
        16, ge=0, le=1000,
        description="unused bytes that may be read to join two ranges of one area",
    )
    max_items_per_request: int = Field(
        20, ge=1, le=20,
        description="variables in one multi-variable read (20 is the S7 CPUs' limit)",
    )

    @model_validator(mode="after")
    def _tsap_or_rack_slot(self) -> S7Connection:
        if (self.local_tsap is None) != (self.remote_tsap is None):
            raise ValueError("local_tsap and remote_tsap go together (or use rack and slot)")
        if self.remote_tsap is not None and {"rack", "slot"} & self.model_fields_set:
            raise ValueError("give either rack/slot or local_tsap/remote_tsap, not both")
        return self


class S7Point(AdapterSettings):
    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="signal name")
    address: str = Field(description="Siemens absolute address, e.g. DB10.DBD4, MW20, I0.1")
    data_type: DataType | None = Field(
        None,
        description="S7 type; default from the address: X BOOL, B BYTE, W WORD, D DWORD, "
        "T S5TIME, C COUNTER",
    )
    length: int | None = Field(
        None, ge=1, le=16382,
        description="STRING/WSTRING: declared length in characters (default 254, as in TIA)",
    )
    encoding: str = Field("latin-1", description="STRING: byte encoding (WSTRING is UTF-16)")
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(None, description="engineering unit of the value, e.g. 1/min")
    map: dict[int, str] | None = Field(None, description="raw integer -> text, e.g. 2: active")

    @field_validator("data_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return _ALIASES.get(upper, upper)
        return value

    @field_validator("address")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_address(value)
        return value

    @cached_property
    def parsed(self) -> S7Address:
        # cached: the adapter consults it for every point of every cycle
        return parse_address(self.address)

    @cached_property
    def type(self) -> str:
        """The data type, defaulted from the address's width letter."""
        return self.data_type or _DEFAULT_TYPE[self.parsed.letter]

    @cached_property
    def width(self) -> int:
        """Bytes the point occupies (timers and counters: elements)."""
        t = self.type
        if self.parsed.is_element:
            return 1
        if t == "STRING":
            return (self.length or 254) + 2
        if t == "WSTRING":
            return 2 * (self.length or 254) + 4
        return FIXED_WIDTH[t]

    @model_validator(mode="after")
    def _consistent(self) -> S7Point:
        a, t = self.parsed, self.type
        if a.is_element:
            want = "S5TIME" if a.area is Area.TIMERS else "COUNTER"
            if t != want:
                raise ValueError(f"{a.text}: a {'timer' if want == 'S5TIME' else 'counter'} "
                                 f"reads as {want}, not {t}")
        elif t in ("S5TIME", "COUNTER"):
            raise ValueError(f"{t} is read from a {'T' if t == 'S5TIME' else 'C'} address, "
                             f"not {a.text}")
        elif a.letter == "X":
            if t != "BOOL":
                raise ValueError(f"{a.text} is a bit: data_type must be BOOL, not {t}")
        elif t == "BOOL":
            raise ValueError(f"BOOL needs a bit address (e.g. DB10.DBX0.3 or M0.1), not {a.text}")
        elif t in FIXED_WIDTH and FIXED_WIDTH[t] <= 4 and FIXED_WIDTH[t] != a.width:
            raise ValueError(
                f"{t} is {FIXED_WIDTH[t]} byte(s) but {a.text} addresses {a.width}: write "
                f"{_width_hint(a, FIXED_WIDTH[t])}"
            )
        elif (t in STRING_TYPES or FIXED_WIDTH.get(t, 0) > 4) and a.letter != "B":
            raise ValueError(
                f"{t} starts at a byte: write {_width_hint(a, 1)} (the first byte), not {a.text}"
            )
        if t == "STRING" and (self.length or 0) > 254:
            raise ValueError("a STRING holds at most 254 characters (WSTRING: 16382)")
        if self.length is not None and t not in STRING_TYPES:
            raise ValueError("'length' is only meaningful with STRING or WSTRING")
        if (self.scale != 1.0 or self.offset != 0.0) and t not in NUMERIC_TYPES:
            raise ValueError(f"scale/offset apply to numeric types only, not {t}")
        if self.scale == 0.0:
            raise ValueError("scale must not be 0")
        if self.map is not None:
            if t not in INTEGER_TYPES | {"BOOL"}:
                raise ValueError(f"'map' needs an integer data_type, not {t}")
            if self.scale != 1.0 or self.offset != 0.0:
                raise ValueError("'map' and scale/offset exclude each other")
        if a.offset + self.width - 1 > 65535:
            raise ValueError(f"{t} at {a.text} would run past byte 65535")
        return self


def _width_hint(a: S7Address, width: int) -> str:
    letter = {1: "B", 2: "W", 4: "D"}[width]
    if a.area is Area.DB:
        return f"DB{a.db}.DB{letter}{a.offset}"
    prefix = {Area.MERKERS: "M", Area.INPUTS: "I", Area.OUTPUTS: "Q"}[a.area]
    return f"{prefix}{letter}{a.offset}"


class S7Settings(AdapterSettings):
    connection: S7Connection
    points: Annotated[list[S7Point], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> S7Settings:
        no_duplicates([p.name for p in self.points])
        return self
