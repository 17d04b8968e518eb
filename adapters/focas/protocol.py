"""FOCAS2 Ethernet framing and record layouts, free of I/O.

FANUC does not publish the FOCAS2 wire protocol: the official interface is the Fwlib32/64
library. What follows is the framing as publicly reverse-engineered from packet captures
and described by the `pyfanuc` project (github.com/diohpix/pyfanuc, README "Protocol
samples" and its client), restated here in our own words. It is verified against our
simulator only, not against a real control (see README.md).

Frame (all integers big-endian)::

    magic  A0 A0 A0 A0
    u16    version      1 in requests, 2 in responses (as captured)
    u16    type         0101 open, 0102 open reply, 0201 close, 0202 close reply,
                        2101 data request, 2102 data reply
    u16    length       bytes of body that follow
    body

Open request body: `00 02`. Close request body: empty. A data request body is a u16 count
of sub-requests, each::

    u16 length (including itself) | u16 class (1 CNC, 2 PMC) | u16 1 | u16 function
    | 5 x i32 arguments | optional payload

and a data reply body the same count of sub-replies::

    u16 length (including itself) | u16 class | u16 1 | u16 function
    | i16 error (0 = EW_OK) | 4 bytes 0 | u16 data length | data
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"\xa0\xa0\xa0\xa0"
HEADER = struct.Struct(">4sHHH")
VERSION_REQUEST = 1
VERSION_RESPONSE = 2

OPEN_REQUEST = 0x0101
OPEN_RESPONSE = 0x0102
CLOSE_REQUEST = 0x0201
CLOSE_RESPONSE = 0x0202
DATA_REQUEST = 0x2101
DATA_RESPONSE = 0x2102
OPEN_BODY = b"\x00\x02"

CLASS_CNC = 1

FUNC_PARAMETER = 0x0E  # cnc_rdparam: args first, last, axis
FUNC_MACRO = 0x15  # cnc_rdmacro: args first, last
FUNC_SYSINFO = 0x18  # cnc_sysinfo
FUNC_STATINFO = 0x19  # cnc_statinfo
FUNC_PROGRAM_NUMBER = 0x1C  # cnc_rdprgnum

EW_OK = 0
EW_NUMBER = 3  # data number error (no such parameter / macro variable)
EW_FUNC = 1  # function not available

MAX_BODY = 0xFFFF
_SUB_REQUEST = struct.Struct(">HHHHiiiii")
_SUB_REPLY_HEAD = struct.Struct(">HHHHh4sH")
SYSINFO = struct.Struct(">HH2s2s4s4s2s")
STATINFO = struct.Struct(">7H")
PROGRAM_NUMBER = struct.Struct(">ii")
MACRO = struct.Struct(">ihh")
PARAM_HEAD = struct.Struct(">IhH")


def encode_frame(ftype: int, body: bytes = b"", version: int = VERSION_REQUEST) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"FOCAS body of {len(body)} bytes exceeds {MAX_BODY}")
    return HEADER.pack(MAGIC, version, ftype, len(body)) + body


class FrameReader:
    """Cuts a byte stream into (version, type, body); ValueError when out of sync."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        out: list[tuple[int, int, bytes]] = []
        while len(self._buf) >= HEADER.size:
            magic, version, ftype, length = HEADER.unpack_from(self._buf)
            if magic != MAGIC:
                raise ValueError(f"bad frame magic {bytes(magic).hex()}")
            if len(self._buf) < HEADER.size + length:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            out.append((version, ftype, body))
        return out


@dataclass(frozen=True)
class Request:
    function: int
    args: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    cls: int = CLASS_CNC
    payload: bytes = b""

    def encode(self) -> bytes:
        size = _SUB_REQUEST.size + len(self.payload)
        return _SUB_REQUEST.pack(size, self.cls, 1, self.function, *self.args) + self.payload


@dataclass(frozen=True)
class Reply:
    function: int
    error: int = EW_OK
    data: bytes = b""
    cls: int = CLASS_CNC

    def encode(self) -> bytes:
        size = _SUB_REPLY_HEAD.size + len(self.data)
        return _SUB_REPLY_HEAD.pack(size, self.cls, 1, self.function, self.error, b"\0" * 4,
                                    len(self.data)) + self.data


def encode_requests(requests: list[Request]) -> bytes:
    return struct.pack(">H", len(requests)) + b"".join(r.encode() for r in requests)


def encode_replies(replies: list[Reply]) -> bytes:
    return struct.pack(">H", len(replies)) + b"".join(r.encode() for r in replies)


def _items(body: bytes) -> list[bytes]:
    if len(body) < 2:
        raise ValueError("data body shorter than its count")
    (count,) = struct.unpack_from(">H", body)
    pos, items = 2, []
    for _ in range(count):
        if pos + 2 > len(body):
            raise ValueError("data body ends inside a sub-packet header")
        (size,) = struct.unpack_from(">H", body, pos)
        if size < 2 or pos + size > len(body):
            raise ValueError(f"sub-packet length {size} overruns the body")
        items.append(body[pos : pos + size])
        pos += size
    return items


def decode_requests(body: bytes) -> list[Request]:
    out = []
    for item in _items(body):
        if len(item) < _SUB_REQUEST.size:
            raise ValueError("sub-request shorter than 28 bytes")
        _, cls, _, func, *args = _SUB_REQUEST.unpack_from(item)
        out.append(Request(func, (args[0], args[1], args[2], args[3], args[4]), cls,
                           item[_SUB_REQUEST.size :]))
    return out


def decode_replies(body: bytes) -> list[Reply]:
    out = []
    for item in _items(body):
        if len(item) < _SUB_REPLY_HEAD.size:
            raise ValueError("sub-reply shorter than its header")
        _, cls, _, func, error, _, length = _SUB_REPLY_HEAD.unpack_from(item)
        data = item[_SUB_REPLY_HEAD.size : _SUB_REPLY_HEAD.size + length]
        if len(data) != length:
            raise ValueError("sub-reply data shorter than announced")
        out.append(Reply(func, error, data, cls))
    return out


@dataclass(frozen=True)
class SysInfo:
    """ODBSYS: what cnc_sysinfo returns."""

    addinfo: int
    max_axis: int
    cnc_type: str
    mt_type: str
    series: str
    version: str
    axes: str

    @classmethod
    def decode(cls, data: bytes) -> SysInfo:
        add, max_axis, *text = SYSINFO.unpack(data[: SYSINFO.size])
        s = [t.decode("ascii", "replace").strip("\0 ") for t in text]
        return cls(add, max_axis, *s)

    def encode(self) -> bytes:
        def b(text: str, n: int) -> bytes:
            return text.encode("ascii")[:n].rjust(n)
        return SYSINFO.pack(self.addinfo, self.max_axis, b(self.cnc_type, 2), b(self.mt_type, 2),
                            b(self.series, 4), b(self.version, 4), b(self.axes, 2))

    @property
    def model(self) -> str:
        """`FANUC Series 31i-M`: cnc type, `i` when addinfo bit 1 says so, machine type."""
        i = "i" if self.addinfo & 0x02 else ""
        return f"FANUC Series {self.cnc_type}{i}-{self.mt_type}".rstrip("-")


@dataclass(frozen=True)
class StatInfo:
    """ODBST as sent by 30i-class controls (7 shorts)."""

    aut: int
    run: int
    motion: int
    mstb: int
    emergency: int
    alarm: int
    edit: int

    @classmethod
    def decode(cls, data: bytes) -> StatInfo:
        return cls(*STATINFO.unpack(data[: STATINFO.size]))

    def encode(self) -> bytes:
        return STATINFO.pack(self.aut, self.run, self.motion, self.mstb, self.emergency,
                             self.alarm, self.edit)


def encode_macro(value: float | None, decimals: int = 3) -> bytes:
    """One macro value: i32 mantissa, i16 base 10, i16 decimals; empty (`<vacant>`) = -1."""
    if value is None:
        return MACRO.pack(0, 10, -1)
    return MACRO.pack(round(value * 10**decimals), 10, decimals)


def decode_macro(data: bytes) -> float | None:
    mantissa, base, decimals = MACRO.unpack(data[: MACRO.size])
    if decimals == -1:
        return None
    return float(mantissa / (base or 10) ** decimals)


PARAM_BYTE, PARAM_BITS, PARAM_SHORT, PARAM_LONG = 0, 1, 2, 3


def encode_parameter(number: int, value: int, max_axis: int, kind: int = PARAM_LONG) -> bytes:
    """One non-axis parameter record: u32 number, i16 axis (0), u16 type, max_axis x i32."""
    return PARAM_HEAD.pack(number, 0, kind) + struct.pack(">i", value) + b"\0" * 4 * (max_axis - 1)


def decode_parameter(data: bytes) -> tuple[int, int]:
    """(number, value) of the first value of a parameter record."""
    number, _axis, kind = PARAM_HEAD.unpack_from(data)
    raw = data[PARAM_HEAD.size : PARAM_HEAD.size + 4]
    if len(raw) < 4:
        raise ValueError("parameter record too short")
    if kind in (PARAM_BYTE, PARAM_BITS):
        return number, raw[-1]
    if kind == PARAM_SHORT:
        return number, int(struct.unpack(">h", raw[2:])[0])
    return number, int(struct.unpack(">i", raw)[0])
