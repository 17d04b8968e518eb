"""An S7 PLC with known values, for the S7 adapter's tests (not the project's simulator).

python-snap7's own server holds memory images written here byte by byte with `struct` and
hand-made BCD, independently of `snap7.util` (which the adapter decodes with) and of
simulators/s7_server.py: a layout or decoding bug shows up as a disagreement.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from snap7.server import Server
from snap7.type import SrvArea

DB = 5
BIG_DB = 6
SHORT_DB = 8  # 4 bytes only: reading past it is refused with "invalid address"


def _bcd(n: int) -> int:
    return (n // 10) << 4 | n % 10


def _s7_string(text: str, max_len: int) -> bytes:
    raw = text.encode("latin-1")
    return bytes([max_len, len(raw)]) + raw.ljust(max_len, b"\0")


def _s7_wstring(text: str, max_len: int) -> bytes:
    raw = text.encode("utf-16-be")
    return struct.pack(">HH", max_len, len(text)) + raw.ljust(2 * max_len, b"\0")


def _db() -> bytearray:
    db = bytearray(120)
    db[0] = 0b0000_1000  # DBX0.3
    db[1] = 0xAB
    struct.pack_into(">H", db, 2, 0xBEEF)
    struct.pack_into(">I", db, 4, 0xDEADBEEF)
    struct.pack_into(">h", db, 8, -1234)
    struct.pack_into(">i", db, 10, -123456789)
    struct.pack_into(">f", db, 14, 3.5)
    struct.pack_into(">d", db, 18, 2.718281828459045)
    db[26:38] = _s7_string("Hello", 10)
    db[38:58] = _s7_wstring("Grüße", 8)
    # DATE_AND_TIME 2024-03-15 13:45:30.123, a Friday (weekday 6, Sunday = 1), all BCD
    db[58:66] = bytes([_bcd(24), _bcd(3), _bcd(15), _bcd(13), _bcd(45), _bcd(30),
                       _bcd(12), 3 << 4 | 6])
    # DTL 2024-03-15 13:45:30.123456789: year u16, month, day, weekday, h, min, s, ns u32
    db[66:78] = struct.pack(">HBBBBBBI", 2024, 3, 15, 6, 13, 45, 30, 123456789)
    struct.pack_into(">i", db, 78, -5000)  # TIME -5 s
    struct.pack_into(">H", db, 82, 2)  # execution code, mapped
    struct.pack_into(">I", db, 84, 4711)  # part count
    struct.pack_into(">bBHqQQ", db, 88, -7, 250, 65000, -(2**40), 2**63 + 5, 0x0102030405060708)
    return db


EXPECTED: dict[str, Any] = {
    "door_closed": True,
    "status_byte": 0xAB,
    "status_word": 0xBEEF,
    "status_dword": 0xDEADBEEF,
    "temperature": -1234,
    "position": -123456789,
    "spindle_speed": 3.5,
    "feed": 2.718281828459045,
    "program": "Hello",
    "operator": "Grüße",
    "last_change": "2024-03-15T13:45:30.123000",
    "cycle_start": "2024-03-15T13:45:30.123456",
    "cycle_time": -5.0,
    "execution": "active",
    "part_count": 4711,
    "sint": -7,
    "usint": 250,
    "uint": 65000,
    "lint": -(2**40),
    "ulint": str(2**63 + 5),  # beyond 2**53: as text, exact (adapters/engineering.py)
    "lword": str(0x0102030405060708),
    "long_text": "x" * 254,
    "merker_word": 4321,
    "merker_bit": True,
    "merker_real": -0.25,
    "input_bit": True,
    "input_word": 7,
    "output_bit": True,
    "output_word": 99,
    "timer": 2.0,
    "counter": 123,
}

POINTS: list[dict[str, Any]] = [
    {"name": "door_closed", "address": "DB5.DBX0.3"},
    {"name": "status_byte", "address": "DB5.DBB1"},
    {"name": "status_word", "address": "DB5.DBW2"},
    {"name": "status_dword", "address": "DB5.DBD4", "data_type": "DWORD"},
    {"name": "temperature", "address": "DB5.DBW8", "data_type": "INT"},
    {"name": "position", "address": "DB5.DBD10", "data_type": "DINT"},
    {"name": "spindle_speed", "address": "DB5.DBD14", "data_type": "REAL", "unit": "1/min"},
    {"name": "feed", "address": "DB5.DBB18", "data_type": "LREAL"},
    {"name": "program", "address": "DB5.DBB26", "data_type": "STRING", "length": 10},
    {"name": "operator", "address": "DB5.DBB38", "data_type": "WSTRING", "length": 8},
    {"name": "last_change", "address": "DB5.DBB58", "data_type": "DATE_AND_TIME"},
    {"name": "cycle_start", "address": "DB5.DBB66", "data_type": "DTL"},
    {"name": "cycle_time", "address": "DB5.DBD78", "data_type": "TIME", "unit": "s"},
    {"name": "execution", "address": "DB5.DBW82", "data_type": "INT",
     "map": {0: "ready", 1: "stopped", 2: "active"}},
    {"name": "part_count", "address": "DB5.DBD84", "data_type": "UDINT"},
    {"name": "sint", "address": "DB5.DBB88", "data_type": "SINT"},
    {"name": "usint", "address": "DB5.DBB89", "data_type": "USINT"},
    {"name": "uint", "address": "DB5.DBW90", "data_type": "UINT"},
    {"name": "lint", "address": "DB5.DBB92", "data_type": "LINT"},
    {"name": "ulint", "address": "DB5.DBB100", "data_type": "ULINT"},
    {"name": "lword", "address": "DB5.DBB108", "data_type": "LWORD"},
    {"name": "long_text", "address": "DB6.DBB0", "data_type": "STRING"},
    {"name": "merker_word", "address": "MW20"},
    {"name": "merker_bit", "address": "M0.1"},
    {"name": "merker_real", "address": "MD4", "data_type": "REAL"},
    {"name": "input_bit", "address": "I0.1"},
    {"name": "input_word", "address": "IW2", "data_type": "INT"},
    {"name": "output_bit", "address": "Q0.0"},
    {"name": "output_word", "address": "QW4"},
    {"name": "timer", "address": "T5", "unit": "s"},
    {"name": "counter", "address": "C3"},
]
REFUSED: list[dict[str, Any]] = [
    {"name": "missing_db", "address": "DB77.DBW0", "data_type": "INT"},
    {"name": "past_the_end", "address": "DB8.DBD2", "data_type": "DINT"},
]


@dataclass
class KnownPlc:
    server: Server
    port: int
    images: dict[tuple[SrvArea, int], bytearray]

    def set_bytes(self, area: SrvArea, index: int, offset: int, data: bytes) -> None:
        self.images[(area, index)][offset:offset + len(data)] = data


def _images() -> dict[tuple[SrvArea, int], bytearray]:
    big = bytearray(_s7_string("x" * 254, 254))
    merkers = bytearray(32)
    merkers[0] = 0b10
    struct.pack_into(">f", merkers, 4, -0.25)
    struct.pack_into(">H", merkers, 20, 4321)
    inputs = bytearray(8)
    inputs[0] = 0b10
    struct.pack_into(">h", inputs, 2, 7)
    outputs = bytearray(8)
    outputs[0] = 0b1
    struct.pack_into(">H", outputs, 4, 99)
    timers = bytearray(2 * 16)
    struct.pack_into(">H", timers, 2 * 5, 1 << 12 | 0x020)  # base 100 ms, BCD 020 -> 2.0 s
    counters = bytearray(2 * 16)
    struct.pack_into(">H", counters, 2 * 3, 0x0123)  # BCD 123
    return {
        (SrvArea.DB, DB): _db(), (SrvArea.DB, BIG_DB): big, (SrvArea.DB, SHORT_DB): bytearray(4),
        (SrvArea.MK, 0): merkers, (SrvArea.PE, 0): inputs, (SrvArea.PA, 0): outputs,
        (SrvArea.TM, 0): timers, (SrvArea.CT, 0): counters,
    }


@contextmanager
def known_plc() -> Iterator[KnownPlc]:
    """A python-snap7 server on a free port of 127.0.0.1 holding the known values."""
    server = Server(log=False)
    images = _images()
    for (area, index), image in images.items():
        server.register_area(area, index, image)
    server.start_to("127.0.0.1", 0)
    assert server.server_socket is not None
    port = int(server.server_socket.getsockname()[1])
    try:
        yield KnownPlc(server, port, images)
    finally:
        server.stop()
