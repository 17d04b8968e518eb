"""Plain-text tables for terminals and logs: the console, `probe` and `watch` print them.

Left-aligned columns padded to the widest cell, a rule above and below the header: readable
in a terminal, a CI log and `journalctl` alike, with no dependency on a TTY library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The table as lines (no trailing newline), rules included."""
    table = [list(head), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    rule = "-" * max(len(line) for line in lines)
    return [rule, lines[0], rule, *lines[1:], rule]


def cell(value: object, limit: int = 40, digits: int = 4) -> str:
    """A value as one short cell: None is `-`, floats get `digits` significant digits, long
    text is cut with an ellipsis so one string point cannot push the table off the screen."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _number(value, digits) if isinstance(value, float) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float, digits: int) -> str:
    """`digits` significant digits, but a large reading keeps every integer digit and one
    decimal: an energy counter at 12345.6 kWh must not read `1.235e+04`, which hides what
    it counts (and stays the same for hours)."""
    text = f"{value:.{digits}g}"
    if "e+" in text and abs(value) < 1e15:
        text = f"{value:.1f}".removesuffix(".0")
    return text


class Screen:
    """Shows successive frames: redrawn in place on a terminal (cursor home, clear), appended
    as plain blocks anywhere else, so a pipe, a CI log or `journalctl` never gets escape
    codes and a terminal does not scroll a new table every few seconds."""

    HOME_AND_CLEAR = "\x1b[H\x1b[J"

    def __init__(self, out: TextIO, in_place: bool | None = None) -> None:
        self.out = out
        self.in_place = out.isatty() if in_place is None else in_place

    def show(self, frame: str) -> None:
        self.out.write((self.HOME_AND_CLEAR if self.in_place else "") + frame)
        self.out.flush()
