"""The terminal view of `make demo`: one line per machine, refreshed every few seconds.

On a terminal the table is redrawn in place; in a pipe, a CI log or `journalctl` it is
printed as a plain block each time (no escape codes), with logs flowing on stderr between.
Each row carries the running shift's OEE (with A/E/Q), how much of the shift's planned time
the gateway observed (so a low availability right after a start explains itself: planned
time before the gateway saw the machine is `no_data` downtime, docs/oee.md) and the alarm
with its text when the machine gives one, so a glance tells what the machine is doing and
what it is worth.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from edge.devices.fleet import FleetView
from edge.kpi.oee import OeeResult
from edge.status.gateway_source import meter_values
from edge.status.model import OeeStatus, StatusSource, meter_text
from edge.text_table import Screen, format_table

ShiftOee = Callable[[str], OeeResult | None]
"""The running shift's figures of a machine (KpiService.current_shift_result)."""


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
    oee: str = "-"
    """The running shift's OEE and A/E/Q, e.g. `71% (90/85/93)`; `-` outside any shift."""
    observed: str = "-"
    """The share of the running shift's planned time the gateway observed, e.g. `12%`."""


def machine_rows(fleet: FleetView, shift_oee: ShiftOee | None = None) -> list[MachineRow]:
    """One row per machine; `shift_oee(asset)` gives the running shift's figures."""
    rows = []
    for asset in fleet.assets():
        d = fleet.device(asset)
        st = d.twin.state
        parts = "-" if st.part_count is None else f"{st.part_count}/{st.bad_part_count or 0} bad"
        text = d.twin.last_values.get("alarm_text")
        shift = shift_oee(asset) if shift_oee is not None else None
        meter = d.machine.meter_for
        reading = None if meter is None else meter_text(
            meter, *meter_values(d.machine, d.twin.last_values))
        rows.append(
            MachineRow(
                asset=asset,
                adapter=d.machine.adapter,
                status=d.runner.status.value,
                execution=st.execution.value if st.execution else "-",
                mode=st.controller_mode.value if st.controller_mode else "-",
                program=st.program or "-",
                parts=parts,
                alarms=alarm_cell(st.alarms, str(text.value) if text and text.value else None),
                samples=d.twin.stats.samples,
                oee=reading or shift_cell(shift),
                observed="-" if shift is None else percent(shift.observed),
            )
        )
    return rows


def status_rows(source: StatusSource) -> list[MachineRow]:
    """`machine_rows` from a status source: the parent of `run --workers N`, whose machines
    run in its workers (edge/status/worker_source.py)."""
    rows = []
    for m in source.machines():
        parts = "-" if m.part_count is None else f"{m.part_count}/{m.bad_part_count or 0} bad"
        shift = source.oee(m.id)
        rows.append(MachineRow(
            asset=m.id, adapter=m.adapter, status=m.link, execution=m.execution or "-",
            mode=m.mode or "-", program=m.program or "-", parts=parts,
            alarms=alarm_cell(m.alarms, m.alarm_text), samples=m.samples,
            oee=m.meter_reading or shift_cell(shift),
            observed="-" if shift is None else percent(shift.observed),
        ))
    return rows


def status_footer(source: StatusSource) -> str:
    """The egress line of the console (EgressSlot.footer) from a status source."""
    parts = [
        f"{d.id}: {'connected' if d.connected else 'DISCONNECTED'}, sent {d.sent}, "
        f"outbox {d.pending}, dropped {d.dropped + d.rejected}"
        for d in source.destinations()
    ]
    g = source.gateway()
    parts.append(f"envelopes {g.envelopes_sealed}, records {g.records_sealed}")
    return " | ".join(parts)


def alarm_cell(codes: tuple[str, ...], text: str | None) -> str:
    """`E1042 Spindle overload` when the machine sends a text with its code, else codes."""
    if not codes:
        return "-"
    joined = ",".join(codes)
    return f"{joined} {text}" if text and text not in codes else joined


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def shift_cell(shift: OeeResult | OeeStatus | None) -> str:
    """`71% (90/85/93)`, or `-` outside any shift."""
    if shift is None:
        return "-"
    return oee_cell(shift.oee, shift.availability, shift.effectiveness, shift.quality)


def oee_cell(oee: float | None, a: float | None, e: float | None, q: float | None) -> str:
    if oee is None and a is None:
        return "-"
    return f"{_pct(oee)}% ({_pct(a)}/{_pct(e)}/{_pct(q)})"


def percent(x: float | None) -> str:
    """`12%`, or `-` when unknown."""
    return "-" if x is None else f"{_pct(x)}%"


def render(rows: list[MachineRow], rates: dict[str, float], footer: str) -> str:
    head = ("machine", "adapter", "link", "execution", "mode", "program", "parts",
            "OEE (A/E/Q)", "observed", "alarm", "samples/s")
    table = format_table(
        head,
        [
            (r.asset, r.adapter, r.status, r.execution, r.mode, r.program, r.parts, r.oee,
             r.observed, r.alarms, f"{rates.get(r.asset, 0.0):.1f}")
            for r in rows
        ],
    )
    return "\n".join([*table, footer, ""])


async def console_loop(
    snapshot: Callable[[], tuple[list[MachineRow], str]],
    every: float = 5.0,
    out: TextIO | None = None,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Print the table every `every` s; `prepare` brings the figures up to date first."""
    screen = Screen(out or sys.stdout)
    loop = asyncio.get_running_loop()
    last: dict[str, int] = {}
    last_t = loop.time()
    while True:
        await asyncio.sleep(every)
        if prepare is not None:
            await prepare()
        rows, footer = snapshot()
        now = loop.time()
        dt = max(now - last_t, 1e-6)
        rates = {r.asset: (r.samples - last.get(r.asset, r.samples)) / dt for r in rows}
        last = {r.asset: r.samples for r in rows}
        last_t = now
        screen.show(render(rows, rates, footer))
