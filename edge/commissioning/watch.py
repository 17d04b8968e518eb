"""`edge-gateway watch`: what a platform receives, verified, decoded and shown as a table.

The readable counterpart of `verify`: the same live check (signature against the retained
JWKS, seq/prev chains) runs on every envelope, and what verifies is folded into one row per
machine (link state, execution, mode, program, parts, alarms, the running shift's OEE, the
share of its planned time the gateway observed, and the latest telemetry values). With
`--machine` every signal of that machine gets a row. Envelopes that do not verify are never
shown as values; they are reported on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from edge.kpi.oee import observed_share
from edge.platform_kit.capture import verify_live
from edge.text_table import Screen, cell, format_table
from models.errors import TransportError


@dataclass
class MachineView:
    """What the streams have said about one machine so far."""

    state: dict[str, Any] = field(default_factory=dict)
    oee: dict[str, Any] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    envelopes: int = 0
    last: str = "-"


def _percent(x: object) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, (int, float)) else "-"


def _observed(record: dict[str, Any]) -> float | None:
    """The record's observed share (docs/oee.md), from fields every `oee` record carries;
    None when the record lacks them (a body from another producer)."""
    t, losses = record.get("time"), record.get("losses")
    if not isinstance(t, dict) or not isinstance(losses, dict):
        return None
    try:
        return observed_share(float(t["pbt"]), float(t["downtime"].get("no_data", 0.0)),
                              float(losses.get("gap") or 0.0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


class StreamBoard:
    """Folds verified envelope bodies into per-machine views (pure: no I/O, easy to test)."""

    def __init__(self, machine: str | None = None) -> None:
        self.machine = machine
        self.machines: dict[str, MachineView] = {}
        self.seen: set[str] = set()
        """Every machine a verified envelope came from, `--machine` or not."""

    def add(self, topic: str, body: dict[str, Any]) -> None:
        asset = body.get("asset")
        if not isinstance(asset, str):
            return
        self.seen.add(asset)
        if self.machine and asset != self.machine:
            return
        view = self.machines.setdefault(asset, MachineView())
        view.envelopes += 1
        view.last = str(body.get("created", "-"))
        records = [r for r in body.get("records", []) if isinstance(r, dict)]
        stream = body.get("stream")
        if stream == "state" and records:
            view.state = records[-1]
        elif stream == "oee":
            for r in records:
                window = r.get("window") or {}
                if window.get("kind") == "shift" and not window.get("closed"):
                    view.oee = r
        elif stream == "telemetry":
            for r in records:
                if isinstance(r.get("signal"), str):
                    view.values[r["signal"]] = r

    def overview(self) -> list[str]:
        head = ("machine", "availability", "execution", "mode", "program", "parts",
                "alarm", "OEE", "A/E/Q", "observed", "values", "envelopes")
        rows = []
        for asset, v in sorted(self.machines.items()):
            s, o = v.state, v.oee
            parts = "-" if s.get("part_count") is None else (
                f"{s['part_count']}/{s.get('bad_part_count') or 0} bad")
            values = ", ".join(
                f"{name}={cell(r.get('value'), 12)}" for name, r in sorted(v.values.items())
                if r.get("quality") == "good" and isinstance(r.get("value"), (int, float))
                and not isinstance(r.get("value"), bool)
            )
            rows.append((
                asset, cell(s.get("availability")), cell(s.get("execution")),
                cell(s.get("controller_mode")), cell(s.get("program")), parts,
                cell(", ".join(s.get("alarms") or []) or None), _percent(o.get("oee")),
                "/".join(_percent(o.get(k)) for k in ("availability", "effectiveness",
                                                      "quality")) if o else "-",
                _percent(_observed(o)), cell(values or None, 60), str(v.envelopes),
            ))
        return format_table(head, rows)

    def signals(self, asset: str) -> list[str]:
        view = self.machines.get(asset)
        if view is None:
            return [self.unseen(asset) or f"{asset}: nothing verified yet"]
        head = ("signal", "value", "unit", "quality", "ts")
        rows = [(name, cell(r.get("value")), cell(r.get("unit")), cell(r.get("quality")),
                 cell(r.get("ts"))) for name, r in sorted(view.values.items())]
        return format_table(head, rows)

    def unseen(self, asset: str) -> str | None:
        """What to say when other machines' envelopes verified but none of `asset`'s (a
        mistyped `--machine`), else None."""
        if asset in self.seen or not self.seen:
            return None
        return (f"{asset}: no such machine seen on the gateway's topics "
                f"(seen: {', '.join(sorted(self.seen))})")

    def frame(self, footer: str) -> str:
        lines = self.overview()
        if self.machine:
            lines += ["", *self.signals(self.machine)]
        return "\n".join([*lines, footer, ""])


async def watch(
    broker: str,
    topic_filter: str,
    machine: str | None,
    *,
    every: float = 2.0,
    seconds: float | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Until `stop` is set (Ctrl-C, SIGTERM) or `seconds` pass: exit 1 when anything failed
    to verify, 2 when `--machine` names none of the machines whose envelopes verified (a
    mistyped id, a usage error as elsewhere), else 0."""
    out, err = out or sys.stdout, err or sys.stderr
    board = StreamBoard(machine)
    screen = Screen(out)

    linked = asyncio.Event()
    # the listening also ends when the reader of the tables is gone (`watch | head`): the
    # drawer's BrokenPipeError alone ended only the drawer, and watch listened on unseen
    ended = stop if stop is not None else asyncio.Event()

    async def redraw() -> None:
        await linked.wait()  # no empty tables while the broker may not even be there
        while True:
            await asyncio.sleep(every)
            try:
                screen.show(board.frame(f"{broker} {topic_filter}: verified envelopes only"))
            except BrokenPipeError:
                ended.set()
                raise  # out of `await drawer` below: the command line exits 141

    drawer = asyncio.create_task(redraw())
    try:
        report = await verify_live(
            broker, topic_filter, seconds, err, on_verified=board.add, stop=ended,
            connected=linked,
        )
    except TransportError as exc:
        print(f"watch: {exc}", file=err)
        return 1
    finally:
        drawer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawer
    screen.show(board.frame(f"{report.total} envelope(s) checked"))
    unseen = board.unseen(machine) if machine else None
    if unseen is not None:
        print(f"watch: {unseen}", file=err)
        return 2
    return 0 if report.ok else 1
