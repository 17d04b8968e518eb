"""Haas Machine Data Collection (MDC) framing and reply parsing, free of I/O.

A request is `?Q<nnn>[ <arg>]` followed by CR LF. A reply, as the Haas operator's manual
("Machine Data Collection", setting 143) describes it, is the comma-separated answer wrapped
in STX (0x02) ... ETB (0x17), followed by CR LF and the `>` prompt. In practice controls and
serial-to-Ethernet bridges differ: some send no STX/ETB, some put the `>` prompt before the
answer (`>PROGRAM, O01000, IDLE, PARTS, 123`), some add blank lines. `ReplyReader` accepts all
of these, so the same parser serves TCP (port 5051 on NGC controls) and RS-232.

Kept free of I/O so the framing rules are unit-tested byte by byte, and the simulator and
the adapter cannot drift apart: both import this module's constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.machine_state import ControllerMode, Execution

STX = 0x02
ETB = 0x17
PROMPT = ord(">")
EOL = b"\r\n"

Q_SERIAL = 100
Q_VERSION = 101
Q_MODEL = 102
Q_MODE = 104
Q_STATUS = 500
Q_MACRO = 600

MAX_REPLY = 4096
"""A reply longer than this without a terminator is garbage, not a slow device."""

# Q104 mode words -> normalized controller mode. Haas shows the mode key pressed last.
MODES: dict[str, ControllerMode] = {
    "MEM": ControllerMode.AUTOMATIC,
    "MEMORY": ControllerMode.AUTOMATIC,
    "DNC": ControllerMode.AUTOMATIC,
    "MDI": ControllerMode.MDI,
    "MDI/DNC": ControllerMode.MDI,
    "JOG": ControllerMode.MANUAL,
    "HAND": ControllerMode.MANUAL,
    "HANDLE": ControllerMode.MANUAL,
    "HAND JOG": ControllerMode.MANUAL,
    "ZERO RET": ControllerMode.MANUAL,
    "ZERO RETURN": ControllerMode.MANUAL,
    "EDIT": ControllerMode.EDIT,
    "LIST PROG": ControllerMode.EDIT,
}

# Q500 status words -> normalized execution. IDLE, BUSY and ALARM are in the Haas manual;
# the others are reported by users of NGC controls and mapped where the meaning is plain.
STATUSES: dict[str, Execution] = {
    "IDLE": Execution.READY,
    "BUSY": Execution.ACTIVE,
    "RUNNING": Execution.ACTIVE,
    "ALARM": Execution.STOPPED,
    "FEED HOLD": Execution.FEED_HOLD,
    "FEEDHOLD": Execution.FEED_HOLD,
    "STOP": Execution.PROGRAM_STOPPED,
    "M00": Execution.PROGRAM_STOPPED,
    "M01": Execution.OPTIONAL_STOP,
    "OPSTOP": Execution.OPTIONAL_STOP,
    "M30": Execution.PROGRAM_COMPLETED,
}


def command(q: int, arg: int | None = None) -> bytes:
    """The bytes of one request: `?Q600 3027\\r\\n`."""
    text = f"?Q{q}" if arg is None else f"?Q{q} {arg}"
    return text.encode("ascii") + EOL


def encode_reply(text: str) -> bytes:
    """Simulator side: the manual's framing, STX answer ETB CR LF `>`."""
    return bytes([STX]) + text.encode("ascii", "replace") + bytes([ETB]) + EOL + b">"


class ReplyReader:
    """Collects bytes until one reply is complete; tolerant of every framing variant above.

    A reply is complete at ETB (when an STX started it) or at the end of a line that holds
    something other than prompts and whitespace. Prompts and blank lines between replies
    are skipped, so a prompt left over from the previous exchange is never taken for data.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while (reply := self._take()) is not None:
            out.append(reply)
        if len(self._buf) > MAX_REPLY:
            raise ValueError(f"no reply terminator within {MAX_REPLY} bytes")
        return out

    def _take(self) -> str | None:
        buf = self._buf
        # drop leading noise: prompts, whitespace, stray ETB
        i = 0
        while i < len(buf) and buf[i] in b"> \t\r\n\x17":
            i += 1
        del buf[:i]
        if not buf:
            return None
        if buf[0] == STX:
            end = buf.find(ETB)
            if end < 0:
                return None
            body = bytes(buf[1:end])
            del buf[: end + 1]
            return _clean(body)
        nl = _first_eol(buf)
        if nl < 0:
            return None
        body = bytes(buf[:nl])
        del buf[: nl + 1]
        text = _clean(body)
        return text if text else self._take()


def _first_eol(buf: bytearray) -> int:
    hits = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
    return min(hits) if hits else -1


def _clean(body: bytes) -> str:
    text = body.decode("ascii", "replace").replace("\x02", "").strip()
    return text.lstrip(">").strip()


def fields(reply: str) -> list[str]:
    """`PROGRAM, O01000, IDLE, PARTS, 123` -> ["PROGRAM", "O01000", "IDLE", "PARTS", "123"]."""
    return [f.strip() for f in reply.split(",")]


def is_error(reply: str) -> bool:
    """Haas answers an unknown command or variable with words instead of data."""
    head = reply.upper()
    return head.startswith(("INVALID", "UNKNOWN", "?", "ERROR"))


def value_of(reply: str) -> str:
    """The answer of a `LABEL, value` reply (Q100, Q101, Q102, Q104, Q600)."""
    parts = fields(reply)
    return parts[-1] if len(parts) > 1 else parts[0]


def mode_word(reply: str) -> str:
    """`MODE, (MEM)` or `MODE, MEM` -> `MEM`."""
    return value_of(reply).strip("()").strip().upper()


@dataclass(frozen=True)
class Status:
    """One Q500 answer. While a program runs Haas answers only `STATUS, BUSY`."""

    status: str
    program: str | None = None
    parts: int | None = None


def parse_status(reply: str) -> Status:
    """Parse Q500: `PROGRAM, O01000, IDLE, PARTS, 123` or `STATUS, BUSY`."""
    parts = fields(reply)
    head = parts[0].upper()
    if head == "STATUS" and len(parts) >= 2:
        return Status(parts[1].upper())
    if head == "PROGRAM" and len(parts) >= 3:
        count: int | None = None
        if len(parts) >= 5 and parts[3].upper() == "PARTS":
            try:
                count = int(float(parts[4]))
            except ValueError:
                raise ValueError(f"Q500 parts count is not a number: {reply!r}") from None
        return Status(parts[2].upper(), parts[1], count)
    raise ValueError(f"not a Q500 reply: {reply!r}")


def program_name(raw: str) -> str:
    """Haas shows five digits (`O01000`); the gateway's canonical form is `O` + at least four
    digits (`O1000`, `O0012`, `O12345`), as FANUC shows them and the FOCAS adapter emits, so
    one plant YAML `programs:` table (ideal cycle times) matches every brand. Names that are
    not O-numbers (NGC file names) pass through unchanged."""
    text = raw.strip()
    if len(text) > 1 and text[0] in "Oo" and text[1:].isdigit():
        return f"O{int(text[1:]):04d}"
    return text


def parse_macro(reply: str) -> float:
    """Parse Q600: `MACRO, 3027.000000` -> 3027.0 (ValueError when not a number)."""
    return float(value_of(reply))
