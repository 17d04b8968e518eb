"""Registers <-> values, for every data type and byte order.

Modbus only defines 16-bit big-endian registers; how a device lays a 32/64-bit number or a
string across them is the vendor's choice. We follow the Telegraf/Neuron letters, where the
big-endian bytes of the value are A B C D (E F G H for 64 bits):

- ABCD: registers in big-endian order, bytes big-endian inside each (the Modbus default)
- CDAB: word-swapped (least significant register first), bytes big-endian inside each
- BADC: registers big-endian, bytes swapped inside each
- DCBA: both swapped, i.e. the value is little-endian end to end

16-bit types only see the byte swap; strings see only the byte swap (two characters per
register, first character in the high byte for ABCD). `struct` is used instead of
pymodbus's helpers because those cover only part of this matrix.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from adapters.engineering import MAX_SAFE_INTEGER, Raw, engineering_value
from models.sample import Quality, Value

from .settings import BIT_KINDS, INTEGER_TYPES, NUMERIC_TYPES, ModbusPoint

Decoder = Callable[[Sequence[int], int], tuple[Value, Quality]]
"""`(registers of a reply, offset of the point in it) -> (value, quality)`."""

_STRUCT: dict[str, str] = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}


def register_count(point: ModbusPoint) -> int:
    """Registers (or bits for coil/discrete) one read of the point needs."""
    return point.width


def _word_swapped(point: ModbusPoint) -> bool:
    return point.byte_order in ("CDAB", "DCBA")


def _byte_swapped(point: ModbusPoint) -> bool:
    return point.byte_order in ("BADC", "DCBA")


def _to_bytes(registers: Sequence[int], point: ModbusPoint) -> bytes:
    """Undo the device's layout: the result is the value's big-endian bytes."""
    words = list(registers)
    if _word_swapped(point) and point.data_type != "string":
        words.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if _byte_swapped(point):
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return raw


def _to_registers(data: bytes, point: ModbusPoint) -> list[int]:
    if _byte_swapped(point):
        data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if _word_swapped(point) and point.data_type != "string":
        words.reverse()
    return words


def decode_raw(registers: Sequence[int], point: ModbusPoint) -> Raw:
    """The value as the device stores it: no scale, offset or map applied."""
    need = register_count(point)
    if len(registers) != need:
        raise ValueError(
            f"{point.name}: {point.data_type} needs {need} registers, got {len(registers)}"
        )
    if point.kind in BIT_KINDS:
        return bool(registers[0])
    if point.data_type == "bool":
        return registers[0] != 0
    data = _to_bytes(registers, point)
    if point.data_type == "bit":
        assert point.bit is not None  # guaranteed by ModbusPoint validation
        return bool((int.from_bytes(data, "big") >> point.bit) & 1)
    if point.data_type == "string":
        return data.decode("utf-8", errors="replace").rstrip("\x00 ")
    value: int | float = struct.unpack(">" + _STRUCT[point.data_type], data)[0]
    return value


def interpret(registers: Sequence[int], point: ModbusPoint) -> tuple[Value, Quality]:
    """Engineering value and its quality (rules in adapters/engineering.py)."""
    return engineering_value(decode_raw(registers, point), point.map, point.scale, point.offset)


def point_decoder(point: ModbusPoint) -> Decoder:
    """`interpret(registers[offset:offset + width], point)`, built once per point.

    Why: the read loop decodes every point of every poll, and the generic path (a slice, a
    bytes join, a format lookup and the engineering rules, per point) was most of the
    poll loop's own CPU (bench/report-issue17.md). Numeric register points get a decoder
    specialised for their type, byte order, map and scale; strings, bits and bools keep the
    generic path. Exactly `interpret` (value, type and quality): a property test compares
    the two over every data type, byte order, scale, offset and map.
    """
    width = point.width
    if point.kind in BIT_KINDS or point.data_type not in NUMERIC_TYPES:
        return lambda registers, at: interpret(registers[at : at + width], point)
    raw = _raw_decoder(point)
    value_map = point.map
    if value_map is not None:  # integer types only (settings)

        def mapped(registers: Sequence[int], at: int) -> tuple[Value, Quality]:
            code = int(raw(registers, at))
            text = value_map.get(code)
            return (text, Quality.GOOD) if text is not None else (str(code), Quality.UNCERTAIN)

        return mapped
    scale, offset = point.scale, point.offset
    if scale != 1.0 or offset != 0.0:
        return lambda registers, at: engineering_value(raw(registers, at), None, scale, offset)
    if point.data_type in ("float32", "float64"):

        def real(registers: Sequence[int], at: int) -> tuple[Value, Quality]:
            value = raw(registers, at)
            return (value, Quality.GOOD) if math.isfinite(value) else (None, Quality.BAD)

        return real
    if point.data_type in ("int64", "uint64"):

        def wide(registers: Sequence[int], at: int) -> tuple[Value, Quality]:
            value = raw(registers, at)
            return (str(value) if abs(value) > MAX_SAFE_INTEGER else value), Quality.GOOD

        return wide
    return lambda registers, at: (raw(registers, at), Quality.GOOD)  # |value| < 2**32


def _raw_decoder(point: ModbusPoint) -> Callable[[Sequence[int], int], float]:
    """`decode_raw` of a numeric register point. Registers are 0..65535 (pymodbus unpacks
    them as such). A byte swap inside each word is a little-endian word."""
    width, swap_bytes = point.width, _byte_swapped(point)
    if width == 1:
        signed = point.data_type == "int16"
        if swap_bytes:
            if signed:
                return lambda r, at: ((v := ((r[at] & 0xFF) << 8) | (r[at] >> 8))
                                      - ((v & 0x8000) << 1))
            return lambda r, at: ((r[at] & 0xFF) << 8) | (r[at] >> 8)
        if signed:
            return lambda r, at: r[at] - ((r[at] & 0x8000) << 1)
        return lambda r, at: r[at]
    pack = struct.Struct(("<" if swap_bytes else ">") + "H" * width).pack
    unpack = struct.Struct(">" + _STRUCT[point.data_type]).unpack
    if _word_swapped(point):
        return lambda r, at: unpack(pack(*reversed(r[at : at + width])))[0]
    return lambda r, at: unpack(pack(*r[at : at + width]))[0]


def decode(registers: Sequence[int], point: ModbusPoint) -> Value:
    """Engineering value of the point (raw * scale + offset, or the mapped text)."""
    return interpret(registers, point)[0]


def encode(value: Value, point: ModbusPoint) -> list[int]:
    """Registers a device would hold for this engineering value (inverse of `decode`).

    Used by the simulator and tests. Mapped points accept the text or the raw code; a `bit`
    point yields its register with only that bit set.
    """
    if value is None:
        raise ValueError(f"{point.name}: cannot encode None")
    if point.map is not None and isinstance(value, str):
        codes = [k for k, v in point.map.items() if v == value]
        if not codes:
            raise ValueError(f"{point.name}: {value!r} is not in the map")
        value = codes[0]
    if point.kind in BIT_KINDS or point.data_type == "bool":
        return [1 if value else 0]
    if point.data_type == "bit":
        assert point.bit is not None
        data = ((1 << point.bit) if value else 0).to_bytes(2, "big")
        return _to_registers(data, point)
    if point.data_type == "string":
        data = str(value).encode("utf-8")
        size = 2 * register_count(point)
        if len(data) > size:
            raise ValueError(f"{point.name}: {len(data)} bytes do not fit in {size}")
        return _to_registers(data.ljust(size, b"\x00"), point)
    if isinstance(value, str) and point.data_type in INTEGER_TYPES and value.lstrip("-").isdigit():
        value = int(value)  # a 64-bit value beyond 2**53 travels as text (engineering.py)
    if isinstance(value, str):
        raise ValueError(f"{point.name}: {point.data_type} cannot hold {value!r}")
    raw: int | float
    if isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
        raw = value  # exact: a float detour would lose 64-bit precision
    else:
        raw = (float(value) - point.offset) / point.scale
        if point.data_type in INTEGER_TYPES:
            raw = round(raw)
    try:
        data = struct.pack(">" + _STRUCT[point.data_type], raw)
    except struct.error as exc:
        raise ValueError(f"{point.name}: {value!r} does not fit in {point.data_type}") from exc
    return _to_registers(data, point)
