"""The terminal view of `make demo`: one line per machine, refreshed every few seconds.

Printed as a plain block (no cursor tricks) so it reads the same in a terminal, a CI log
or `journalctl`; logs keep flowing on stderr between blocks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from edge.devices.fleet import FleetView


@dataclass
class MachineRow:
    asset: str
    adapter: str
    status: str
    execution: str
    mode: str
    program: str
    parts: str
    alarms: str
    samples: int


def machine_rows(fleet: FleetView) -> list[MachineRow]:
    rows = []
    for asset in fleet.assets():
        d = fleet.device(asset)
        st = d.twin.state
        parts = "-" if st.part_count is None else f"{st.part_count}/{st.bad_part_count or 0} bad"
        rows.append(
            MachineRow(
                asset=asset,
                adapter=d.machine.adapter,
                status=d.runner.status.value,
                execution=st.execution.value if st.execution else "-",
                mode=st.controller_mode.value if st.controller_mode else "-",
                program=st.program or "-",
                parts=parts,
                alarms=",".join(st.alarms) or "-",
                samples=d.twin.stats.samples,
            )
        )
    return rows


def render(rows: list[MachineRow], rates: dict[str, float], footer: str) -> str:
    head = (
        "machine",
        "adapter",
        "link",
        "execution",
        "mode",
        "program",
        "parts",
        "alarm",
        "samples/s",
    )
    table = [head] + [
        (
            r.asset,
            r.adapter,
            r.status,
            r.execution,
            r.mode,
            r.program,
            r.parts,
            r.alarms,
            f"{rates.get(r.asset, 0.0):.1f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, lines[0], rule, *lines[1:], rule, footer, ""])


async def console_loop(
    snapshot: Callable[[], tuple[list[MachineRow], str]],
    every: float = 5.0,
    out: TextIO = sys.stdout,
) -> None:
    loop = asyncio.get_running_loop()
    last: dict[str, int] = {}
    last_t = loop.time()
    while True:
        await asyncio.sleep(every)
        rows, footer = snapshot()
        now = loop.time()
        dt = max(now - last_t, 1e-6)
        rates = {r.asset: (r.samples - last.get(r.asset, r.samples)) / dt for r in rows}
        last = {r.asset: r.samples for r in rows}
        last_t = now
        out.write(render(rows, rates, footer))
        out.flush()
