"""Bytes of the PLC -> values, with python-snap7's `snap7.util` getters.

S7 stores everything big-endian, so unlike Modbus there is no byte-order matrix: the
getters of `snap7.util` decode every elementary type, STRING (max length, actual length,
characters) and WSTRING (the same with 16-bit fields, UTF-16BE), DATE_AND_TIME (BCD) and
DTL. Only S5TIME is decoded here: `get_s5time` returns text like "0:00:05", and a duration
in seconds is what a time series wants.

Dates travel as ISO 8601 text without a zone: a PLC clock keeps local time of whatever
zone it was set to, and guessing one would be worse than saying nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from snap7 import util

from adapters.engineering import engineering_value
from models.sample import Quality, Value

from .settings import S7Point

Getter = Callable[[bytearray, int], int | float | str]

_GETTERS: dict[str, Getter] = {
    "BYTE": util.get_byte,
    "WORD": util.get_word,
    "DWORD": util.get_dword,
    "LWORD": util.get_lword,
    "SINT": util.get_sint,
    "USINT": util.get_usint,
    "INT": util.get_int,
    "UINT": util.get_uint,
    "DINT": util.get_dint,
    "UDINT": util.get_udint,
    "LINT": util.get_lint,
    "ULINT": util.get_ulint,
    "REAL": util.get_real,
    "LREAL": util.get_lreal,
    "WSTRING": util.get_wstring,
    "DATE_AND_TIME": util.get_dt,
    "DTL": lambda data, index: util.get_dtl(data, index).isoformat(timespec="microseconds"),
    "TIME": lambda data, index: util.get_dint(data, index) / 1000.0,  # signed ms -> s
}
_S5_BASE = {0: 0.01, 1: 0.1, 2: 1.0, 3: 10.0}


def _bcd(word: int, digits: int) -> int:
    value = 0
    for shift in range((digits - 1) * 4, -1, -4):
        digit = (word >> shift) & 0xF
        if digit > 9:
            raise ValueError(f"{word:#06x} is not BCD")
        value = value * 10 + digit
    return value


def decode_raw(data: bytearray, point: S7Point) -> int | float | bool | str:
    """The value as the PLC stores it (no scale, offset or map); ValueError if malformed."""
    t = point.type
    if t == "BOOL":
        bit = point.parsed.bit
        assert bit is not None  # guaranteed by S7Point validation
        return util.get_bool(data, 0, bit)
    if t in ("STRING", "WSTRING"):
        # checked here: snap7.util logs an error line of its own for every malformed string
        width = 1 if t == "STRING" else 2
        declared = int.from_bytes(data[:width], "big")
        actual = int.from_bytes(data[width:2 * width], "big")
        if actual > declared or 2 * width + actual * width > len(data):
            raise ValueError(f"{t} header says {actual} of {declared} characters")
        if t == "STRING":
            return util.get_string(data, 0, point.encoding)
    if t == "S5TIME":  # time base in bits 12-13, three BCD digits
        word = util.get_word(data, 0)
        return _bcd(word & 0x0FFF, 3) * _S5_BASE[(word >> 12) & 0x3]
    if t == "COUNTER":  # three BCD digits
        return _bcd(util.get_word(data, 0) & 0x0FFF, 3)
    return _GETTERS[t](data, 0)


def interpret(data: bytearray, point: S7Point) -> tuple[Value, Quality]:
    """Engineering value and its quality (map, scale, offset: adapters/engineering.py).

    Bytes the getters reject (a STRING whose length byte exceeds its maximum, a date that
    does not exist, a non-BCD counter) are quality bad: the PLC holds something, but not
    the declared type.
    """
    try:
        raw = decode_raw(data, point)
    except (ValueError, TypeError, IndexError, OverflowError, UnicodeDecodeError):
        return None, Quality.BAD
    return engineering_value(raw, point.map, point.scale, point.offset)
