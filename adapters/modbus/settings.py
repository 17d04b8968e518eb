"""Settings of one Modbus machine: the `connection:` and `points:` blocks of the plant YAML.

Everything a plant engineer can get wrong about a register map is refused here, at load
time, with the point's path in the message: a point that overruns the 16-bit address space
or the per-request limit would otherwise surface as a device exception at 3 a.m.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from adapters.base import AdapterSettings, no_duplicates

RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
    "bit",
    "string",
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

BIT_KINDS: frozenset[str] = frozenset({"coil", "discrete"})
INTEGER_TYPES: frozenset[str] = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})
NUMERIC_TYPES: frozenset[str] = INTEGER_TYPES | {"float32", "float64"}
_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "bool": 1,
    "bit": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
MAX_ADDRESS = 65535


class ModbusConnection(AdapterSettings):
    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = Field(
        "tcp", description="tcp (MBAP), rtu (serial line), rtu_over_tcp (RTU frames on a socket)"
    )
    host: str | None = Field(None, description="device or serial gateway (tcp, rtu_over_tcp)")
    port: int = Field(502, ge=1, le=65535, description="TCP port (tcp, rtu_over_tcp)")
    port_path: str | None = Field(None, description="serial device, e.g. /dev/ttyUSB0 (rtu)")
    baudrate: int = Field(19200, gt=0, description="rtu only")
    parity: Literal["N", "E", "O"] = Field("N", description="rtu only")
    stopbits: Literal[1, 2] = Field(1, description="rtu only")
    bytesize: Literal[7, 8] = Field(8, description="rtu only")
    unit: int = Field(1, ge=0, le=247, description="default unit (slave) id for every point")
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for one reply")
    max_registers_per_request: int = Field(125, ge=1, le=125)
    max_bits_per_request: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(
        32,
        ge=0,
        description="unused registers/bits that may be read to join two ranges; a "
        "device that refuses such a read (illegal data address) gets it split, once",
    )
    one_request_per_point: bool = Field(
        False, description="no coalescing, for devices that refuse reads spanning several fields"
    )

    @model_validator(mode="after")
    def _endpoint(self) -> ModbusConnection:
        if self.transport in ("tcp", "rtu_over_tcp") and not self.host:
            raise ValueError(f"transport {self.transport!r} needs 'host'")
        if self.transport == "rtu" and not self.port_path:
            raise ValueError("transport 'rtu' needs 'port_path' (e.g. /dev/ttyUSB0)")
        return self


_MODICON_DIGIT = {"discrete": 1, "input": 3, "holding": 4}


def modicon_address(kind: str, number: int) -> int | None:
    """The 0-based address that `number` stands for when it reads as a "Modicon" register
    number of `kind` (40011: holding register 11, 1-based, the leading digit naming the
    table; 400011 in six digits), else None.

    Why: register maps list these numbers, and copied into `address` they are refused by
    the device (illegal data address) or read another register."""
    digit = _MODICON_DIGIT.get(kind)
    if digit is None:
        return None
    for base, last in ((digit * 10_000, 9_999), (digit * 100_000, MAX_ADDRESS + 1)):
        if base < number <= base + last:
            return number - base - 1
    return None


def modicon_advice(kind: str, number: int) -> str:
    """What to write instead of a Modicon number, or ""."""
    address = modicon_address(kind, number)
    if address is None:
        return ""
    return (f"{number} is Modicon numbering (1-based, table digit first): write "
            f"`register: {kind}, address: {address}` (0-based)")


class ModbusPoint(AdapterSettings):
    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=64, description="signal name")
    # `register` in YAML; named `kind` here because pydantic models inherit ABCMeta.register
    kind: RegisterKind = Field(alias="register", description="holding, input, coil or discrete")
    address: int = Field(ge=0, le=MAX_ADDRESS, description="0-based protocol address")
    data_type: DataType = Field(
        "uint16", description="default: bool for coil/discrete, uint16 for registers"
    )
    bit: int | None = Field(None, ge=0, le=15, description="data_type bit: which bit, 0 = LSB")
    length: int | None = Field(None, ge=1, le=125, description="registers (data_type string)")
    byte_order: ByteOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(None, description="engineering unit of the value, e.g. 1/min")
    map: dict[int, str] | None = Field(None, description="raw integer -> text, e.g. 2: active")
    unit_id: int | None = Field(None, ge=0, le=247, description="overrides connection.unit")

    @property
    def width(self) -> int:
        """Registers (or bits, for coil/discrete) the point occupies."""
        if self.kind in BIT_KINDS:
            return 1
        if self.data_type == "string":
            return self.length or 0
        return _WIDTH[self.data_type]

    @field_validator("address", mode="before")
    @classmethod
    def _not_modicon(cls, value: Any, info: ValidationInfo) -> Any:
        """A quoted `"40011"`, or a six-digit 400011 beyond the address space, is a number
        from a register map's Modicon column: refused with the address to write. An unquoted
        five-digit one is a valid address too, so `probe` hints at it when it is refused."""
        kind = info.data.get("kind")
        text = value.strip() if isinstance(value, str) else None
        number = int(text) if text is not None and text.isdigit() else value
        if (text is not None or (isinstance(number, int) and number > MAX_ADDRESS)) and (
            isinstance(number, int) and isinstance(kind, str)
        ):
            advice = modicon_advice(kind, number)
            if advice:
                raise ValueError(advice)
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data_type" not in data and data.get("register") in BIT_KINDS:
            return {**data, "data_type": "bool"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        if self.kind in BIT_KINDS and self.data_type != "bool":
            raise ValueError(
                f"register {self.kind!r} holds single bits: data_type must be 'bool', "
                f"not {self.data_type!r}"
            )
        if (self.data_type == "bit") != (self.bit is not None):
            raise ValueError(
                "data_type 'bit' needs 'bit' (0-15)"
                if self.bit is None
                else "'bit' is only meaningful with data_type 'bit'"
            )
        if (self.data_type == "string") != (self.length is not None):
            raise ValueError(
                "data_type 'string' needs 'length' (in registers)"
                if self.length is None
                else "'length' is only meaningful with data_type 'string'"
            )
        if (self.scale != 1.0 or self.offset != 0.0) and self.data_type not in NUMERIC_TYPES:
            raise ValueError(f"scale/offset apply to numeric types only, not {self.data_type!r}")
        if self.scale == 0.0:
            raise ValueError("scale must not be 0")
        if self.map is not None:
            if self.data_type not in INTEGER_TYPES | {"bool", "bit"}:
                raise ValueError(f"'map' needs an integer data_type, not {self.data_type!r}")
            if self.scale != 1.0 or self.offset != 0.0:
                raise ValueError("'map' and scale/offset exclude each other")
        last = self.address + self.width - 1
        if last > MAX_ADDRESS:
            raise ValueError(
                f"register out of range: {self.data_type} at {self.kind} {self.address} "
                f"spans {self.width} and would end at {last} (> {MAX_ADDRESS})"
            )
        return self


class ModbusSettings(AdapterSettings):
    connection: ModbusConnection
    points: Annotated[list[ModbusPoint], Field(min_length=1)]

    @model_validator(mode="after")
    def _whole_map(self) -> ModbusSettings:
        no_duplicates([p.name for p in self.points])
        c = self.connection
        for p in self.points:
            bits = p.kind in BIT_KINDS
            limit = c.max_bits_per_request if bits else c.max_registers_per_request
            if p.width > limit:
                field = "max_bits_per_request" if bits else "max_registers_per_request"
                raise ValueError(
                    f"point {p.name!r} spans {p.width} registers, more than one request "
                    f"may read ({field} = {limit})"
                )
            if c.transport == "rtu" and (p.unit_id if p.unit_id is not None else c.unit) == 0:
                raise ValueError(
                    f"point {p.name!r}: unit 0 is the RTU broadcast address and never answers"
                )
        return self
