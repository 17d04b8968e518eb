"""Siemens absolute addresses, written the way a PLC programmer writes them.

`DB10.DBD4`, `DB10.DBX0.3`, `DB10.DBW2`, `DB10.DBB1`, `MW20`, `MD4`, `M0.1`, `I0.1`,
`IW2`, `Q0.0`, `QW4`, `T5`, `C3`: the area, then the access width letter (X bit, B byte,
W word, D double word) and the byte offset. German mnemonics are accepted too (E for
inputs, A for outputs, Z for counters), since STEP 7 projects in German show them.

A parsed address is pure data (no I/O): the area code of the S7 protocol, the DB number
(0 outside data blocks), the byte offset (element number for timers and counters), the bit
for X access and the width the letter promises. The adapter's settings check that the data
type agrees with the width: `DB10.DBW2` with `REAL` is refused at load time, because a
4-byte REAL at a 2-byte address is a typo that would otherwise read the neighbour's bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Area", "S7Address", "parse_address"]


class Area(IntEnum):
    """S7 protocol area codes (the same numbers as snap7.type.Area)."""

    INPUTS = 0x81
    OUTPUTS = 0x82
    MERKERS = 0x83
    DB = 0x84
    COUNTERS = 0x1C
    TIMERS = 0x1D


_WIDTH_LETTERS = {"X": 1, "B": 1, "W": 2, "D": 4}
_AREA_LETTERS = {"M": Area.MERKERS, "I": Area.INPUTS, "E": Area.INPUTS,
                 "Q": Area.OUTPUTS, "A": Area.OUTPUTS}
_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_MEMORY = re.compile(r"^([MIEQA])([XBWD]?)(\d+)(?:\.(\d+))?$")
_ELEMENT = re.compile(r"^([TCZ])(\d+)$")
MAX_OFFSET = 65535
MAX_DB = 65535
EXAMPLES = "DB10.DBD4, DB10.DBX0.3, MW20, M0.1, I0.1, QW4, T5, C3"


@dataclass(frozen=True, slots=True)
class S7Address:
    """One parsed address; `letter` is X, B, W, D, or T/C for timers and counters."""

    text: str
    area: Area
    db: int
    offset: int
    letter: str
    bit: int | None = None

    @property
    def width(self) -> int:
        """Bytes the width letter promises (timers and counters: one 2-byte element)."""
        return _WIDTH_LETTERS.get(self.letter, 2)

    @property
    def is_element(self) -> bool:
        """Timers and counters are addressed by element number, not by byte."""
        return self.area in (Area.TIMERS, Area.COUNTERS)


def _number(text: str, what: str, limit: int) -> int:
    value = int(text)
    if value > limit:
        raise ValueError(f"{what} {value} is out of range (0..{limit})")
    return value


def parse_address(text: str) -> S7Address:
    """Parse one address; ValueError says what is wrong and shows valid forms."""
    s = text.strip().upper().replace(" ", "")
    if m := _DB.match(s):
        db = _number(m[1], "DB number", MAX_DB)
        if db == 0:
            raise ValueError(f"{text!r}: data blocks are numbered from 1")
        area, letter, offset, bit = Area.DB, m[2], m[3], m[4]
    elif m := _MEMORY.match(s):
        area, letter, offset, bit = _AREA_LETTERS[m[1]], m[2], m[3], m[4]
        db = 0
        if not letter:
            if bit is None:
                raise ValueError(
                    f"{text!r}: a bit address needs the bit number, e.g. {m[1]}{offset}.0; "
                    f"for a byte, word or double word write {m[1]}B, {m[1]}W or {m[1]}D"
                )
            letter = "X"
    elif m := _ELEMENT.match(s):
        area = Area.TIMERS if m[1] == "T" else Area.COUNTERS
        return S7Address(text, area, 0, _number(m[2], "element", MAX_OFFSET),
                         "T" if area is Area.TIMERS else "C")
    else:
        raise ValueError(f"{text!r} is not an S7 address (examples: {EXAMPLES})")
    number = _number(offset, "byte offset", MAX_OFFSET)
    if letter == "X":
        if bit is None:
            raise ValueError(f"{text!r}: X (bit) access needs .bit, e.g. DB10.DBX{number}.0")
        bit_no = int(bit)
        if bit_no > 7:
            raise ValueError(f"{text!r}: bit {bit_no} does not exist (0..7)")
        return S7Address(text, area, db, number, letter, bit_no)
    if bit is not None:
        raise ValueError(f"{text!r}: only X (bit) access takes a bit number")
    return S7Address(text, area, db, number, letter)
