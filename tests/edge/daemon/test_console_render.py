"""The console table: OEE and alarm text columns; redrawn in place only on a terminal."""

from __future__ import annotations

import io

from edge.daemon.console import MachineRow, alarm_cell, oee_cell, percent, render
from edge.text_table import Screen, cell


def test_oee_and_alarm_text_columns() -> None:
    row = MachineRow("mill-01", "opcua", "up", "active", "automatic", "O1000", "12/2 bad",
                     alarm_cell(("E1042",), "Spindle overload"), 10,
                     oee_cell(0.684, 0.9, 0.8, 0.95), percent(0.123))
    text = render([row], {"mill-01": 2.0}, "footer")
    head, line = text.splitlines()[1], text.splitlines()[3]
    assert "OEE (A/E/Q)" in head and "observed" in head
    assert "68% (90/80/95)" in line and "E1042 Spindle overload" in line
    assert " 12% " in line and percent(None) == "-"
    assert alarm_cell((), "ignored") == "-"
    assert alarm_cell(("7",), "7") == "7"
    assert oee_cell(None, None, None, None) == "-"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_screen_redraws_in_place_on_a_terminal_only() -> None:
    tty, pipe = _Tty(), io.StringIO()
    for out in (tty, pipe):
        Screen(out).show("one\n")
        Screen(out).show("two\n")
    assert tty.getvalue() == "\x1b[H\x1b[Jone\n\x1b[H\x1b[Jtwo\n"
    assert pipe.getvalue() == "one\ntwo\n"


def test_a_meter_reading_keeps_its_digits_in_probe_watch_and_page_cells() -> None:
    """`watch` showed an energy meter at `import_energy_kwh=1.235e+04`: the counter's
    digits were lost (and the cell froze for hours). Large numbers keep every integer
    digit and one decimal; small ones keep their significant digits."""
    assert cell(12345.6) == "12345.6"
    assert cell(12345.0) == "12345"
    assert cell(1234567.84, digits=6) == "1234567.8"
    assert cell(-25000.25) == "-25000.2"
    assert cell(28.1934) == "28.19" and cell(0.000012) == "1.2e-05"
    assert cell(3.2e20) == "3.2e+20"  # beyond any counter: the exponent says more
