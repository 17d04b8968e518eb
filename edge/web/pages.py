"""The status pages as HTML, and the same figures as cell maps for live updates.

Each page is built from one function returning its cells (`key -> text`); the HTML puts
every cell in an element with `data-k="key"`, and the live stream (Server-Sent Events)
sends the same map every few seconds, which static/app.js writes into those elements. So
the page reads the same with JavaScript off (plain tables, reload to refresh) and the two
can never disagree. Everything is escaped here; no template engine, no external asset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from edge.bookings.board import BookingsView
from edge.bookings.store import BookingRow
from edge.status.model import (
    DestinationStatus,
    LogEntry,
    MachineStatus,
    OeeStatus,
    PointStatus,
    StatusSource,
)
from edge.text_table import cell
from edge.web.timeline import timeline_svg
from models.sample import utc_now

Cells = dict[str, str]


@dataclass(frozen=True)
class Live:
    """One live update: the cells, the timeline (machine page) and the page's shape (the
    row keys; a changed shape makes the browser reload, e.g. when a point first appears)."""

    cells: Cells
    shape: str
    svg: str | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"cells": self.cells, "shape": self.shape}
        if self.svg is not None:
            out["svg"] = self.svg
        return out


def _shape(keys: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(keys).encode(), usedforsecurity=False).hexdigest()[:12]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never"
    s = max(0.0, (now - ts).total_seconds())
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def duration(seconds: float | None) -> str:
    """`1 h 05 min`, `4 min 09 s`; a negative span keeps its sign in front (a speed loss
    below zero, the parts made faster than their ideal cycle time, read `-1 h 59 min` for
    -5 s when divmod floored the negative number)."""
    if seconds is None:
        return "-"
    sign = "-" if round(seconds) < 0 else ""
    m, s = divmod(abs(round(seconds)), 60)
    h, m = divmod(m, 60)
    return sign + (f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s")


def text(value: object) -> str:
    return cell(value, limit=500, digits=6)


# ---- plant ----------------------------------------------------------------------------

NOT_RATED = "\u2014"
"""An em dash: a figure that does not apply (a meter's A/E/Q), unlike `-`, not known yet."""
PLANT_COLUMNS = ("link", "execution", "mode", "program", "parts", "oee", "aeq", "observed",
                 "alarm", "age")
PLANT_HEAD = ("machine", "link", "execution", "mode", "program", "parts good/bad",
              "OEE (shift)", "A / E / Q", "observed", "alarm", "last sample")


def _machine_cells(m: MachineStatus, oee: OeeStatus | None, now: datetime) -> Cells:
    good = None if m.part_count is None else m.part_count - (m.bad_part_count or 0)
    alarm = ", ".join(m.alarms)
    if m.alarm_text and alarm:
        alarm = f"{alarm}: {m.alarm_text}"
    link = m.link if not m.link_reason or m.link == "up" else f"{m.link} ({m.link_reason})"
    meter = m.meter_reading  # a meter makes no parts: its reading, not an OEE
    return {
        f"{m.id}/link": link,
        f"{m.id}/execution": text(m.execution),
        f"{m.id}/mode": text(m.mode),
        f"{m.id}/program": text(m.program),
        f"{m.id}/parts": "-" if good is None else f"{good} / {m.bad_part_count or 0}",
        f"{m.id}/oee": meter or (pct(oee.oee) if oee else "-"),
        f"{m.id}/aeq": NOT_RATED if meter else " / ".join(
            pct(x) for x in (oee.availability, oee.effectiveness, oee.quality)) if oee else "-",
        # how much of the shift's planned time the figures rest on (a low A right after a
        # start is planned time before the gateway saw the machine: `no_data` downtime)
        f"{m.id}/observed": NOT_RATED if meter else pct(oee.observed) if oee else "-",
        f"{m.id}/alarm": alarm or "-",
        f"{m.id}/age": age(m.last_sample, now),
    }


def plant_live(source: StatusSource) -> Live:
    now = utc_now()
    cells: Cells = {}
    machines = source.machines()
    for m in machines:
        cells.update(_machine_cells(m, source.oee(m.id), now))
    return Live(cells, _shape(m.id for m in machines))


def _td(key: str, value: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<td data-k="{escape(key)}"{c}>{escape(value)}</td>'


def _table(head: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{h}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def plant_page(source: StatusSource) -> tuple[str, Live]:
    live = plant_live(source)
    rows = []
    for m in source.machines():
        link = f'<th scope="row"><a href="/machines/{escape(m.id)}">{escape(m.id)}</a>'
        if m.name and m.name != m.id:
            link += f'<br><small>{escape(m.name)}</small>'
        cells = "".join(_td(f"{m.id}/{c}", live.cells[f"{m.id}/{c}"], c)
                        for c in PLANT_COLUMNS)
        rows.append(f'<tr data-machine="{escape(m.id)}">{link}</th>{cells}</tr>')
    return _table(PLANT_HEAD, rows, "machines"), live


# ---- one machine -------------------------------------------------------------------------

POINT_HEAD = ("point", "address / node", "raw", "value", "unit", "quality", "last change",
              "read")


def _point_cells(machine: str, p: PointStatus, now: datetime) -> Cells:
    k = f"{machine}.{p.name}"
    return {
        f"{k}/raw": p.raw or "-",
        f"{k}/value": text(p.value),
        f"{k}/quality": p.quality,
        f"{k}/changed": age(p.changed, now) + " ago",
        f"{k}/ts": age(p.ts, now) + " ago",
    }


def loss_tree(oee: OeeStatus | None) -> Cells:
    """The ISO 22400 time model of the running shift, as cells of one nested list."""
    if oee is None:
        return {"loss/shift": "no shift running"}
    downtime = sum(oee.downtime.values())
    cells = {
        "loss/shift": f"{oee.shift or 'shift'} since "
        f"{oee.start.astimezone(ZoneInfo(oee.timezone)):%H:%M} ({oee.timezone})",
        "loss/planned": duration(oee.planned_seconds),
        "loss/observed": observed(oee),
        "loss/downtime": duration(downtime),
        "loss/running": duration(oee.running_seconds),
        "loss/speed": duration(oee.speed_loss_seconds),
        "loss/scrap": duration(oee.scrap_seconds),
        "loss/parts": f"{oee.good_parts} good of {oee.parts}",
        "loss/oee": pct(oee.oee),
        "loss/a": pct(oee.availability),
        "loss/e": pct(oee.effectiveness),
        "loss/q": pct(oee.quality),
    }
    for reason, seconds in sorted(oee.downtime.items()):
        cells[f"loss/down/{reason}"] = duration(seconds)
    return cells


def observed(oee: OeeStatus) -> str:
    """`42 min 00 s of 5 h 50 min (12.0 %)`: the planned time the gateway watched."""
    share = oee.observed
    if share is None:
        return "-"
    return (f"{duration(share * oee.planned_seconds)} of {duration(oee.planned_seconds)} "
            f"({pct(share)})")


def machine_live(source: StatusSource, machine_id: str) -> Live | None:
    m = next((x for x in source.machines() if x.id == machine_id), None)
    if m is None:
        return None
    now = utc_now()
    oee = source.oee(machine_id)
    cells = _machine_cells(m, oee, now)
    points = source.points(machine_id)
    for p in points:
        cells.update(_point_cells(machine_id, p, now))
    tree = loss_tree(oee)
    if m.meter_reading:  # not "no shift running": a meter has no OEE in any shift
        tree = {"loss/shift": f"{m.meter_reading}; an energy meter makes no parts, so it has "
                "no OEE (its energy counts for the machine it meters)"}
    cells.update(tree)
    # a meter has no shift timeline: "No shift is running" under it was wrong in a shift
    svg = None if m.meter_reading else timeline_svg(
        source.timeline(machine_id), oee.start if oee else None, oee.end if oee else None,
        now, ZoneInfo(oee.timezone) if oee else None)
    return Live(cells, _shape([*(p.name for p in points), *sorted(tree)]), svg)


def machine_page(source: StatusSource, machine_id: str) -> tuple[str, Live] | None:
    live = machine_live(source, machine_id)
    if live is None:
        return None
    c = live.cells
    m = machine_id
    summary = _table(PLANT_HEAD[1:], [
        "<tr>" + "".join(_td(f"{m}/{col}", c[f"{m}/{col}"], col) for col in PLANT_COLUMNS)
        + "</tr>"
    ], "machines")
    rows = []
    for p in source.points(m):
        k = f"{m}.{p.name}"
        rows.append(
            f'<tr><th scope="row">{escape(p.name)}</th><td class="address">{escape(p.address)}'
            f"</td>{_td(k + '/raw', c[k + '/raw'], 'address')}"
            f"{_td(k + '/value', c[k + '/value'], 'value')}<td>{escape(p.unit or '')}</td>"
            f"{_td(k + '/quality', c[k + '/quality'], 'quality')}"
            f"{_td(k + '/changed', c[k + '/changed'])}{_td(k + '/ts', c[k + '/ts'])}</tr>"
        )
    points = _table(POINT_HEAD, rows, "points") if rows else "<p>No value read yet.</p>"
    tree = _loss_tree_html(c)
    html = (
        f"<h2>State</h2>{summary}"
        f'<h2>Current shift</h2><div id="timeline">{live.svg or ""}</div>{tree}'
        f"<h2>Points</h2>{points}"
    )
    return html, live


def _li(label: str, key: str, c: Cells, inner: str = "") -> str:
    return f'<li>{escape(label)}: <span data-k="{key}">{escape(c.get(key, "-"))}</span>{inner}</li>'


def _loss_tree_html(c: Cells) -> str:
    if "loss/planned" not in c:
        return f'<p data-k="loss/shift">{escape(c["loss/shift"])}</p>'
    down = "".join(_li(k.split("/")[-1].replace("_", " "), k, c)
                   for k in sorted(c) if k.startswith("loss/down/"))
    return (
        f'<p>OEE <strong data-k="loss/oee">{escape(c["loss/oee"])}</strong> = availability '
        f'<span data-k="loss/a">{escape(c["loss/a"])}</span> x effectiveness '
        f'<span data-k="loss/e">{escape(c["loss/e"])}</span> x quality '
        f'<span data-k="loss/q">{escape(c["loss/q"])}</span> '
        f'(<span data-k="loss/shift">{escape(c["loss/shift"])}</span>)</p>'
        f'<p>The gateway observed <span data-k="loss/observed">'
        f'{escape(c["loss/observed"])}</span> of the planned time; planned time it did not '
        "observe (before it first saw the machine, or while it was down) counts as downtime "
        "(no data, unavailable).</p>"
        '<ul class="loss-tree">'
        + _li("planned busy time", "loss/planned", c, "<ul>"
              + _li("downtime", "loss/downtime", c, f"<ul>{down}</ul>")
              + _li("running (actual production time)", "loss/running", c, "<ul>"
                    + _li("speed loss", "loss/speed", c)
                    + _li("scrap time", "loss/scrap", c)
                    + _li("parts", "loss/parts", c) + "</ul>")
              + "</ul>")
        + "</ul>"
    )


# ---- destinations and the gateway --------------------------------------------------------

DEST_HEAD = ("destination", "url", "protocol", "format", "streams", "link", "pending",
             "pending bytes", "sent", "acked", "dropped", "rejected", "lost records",
             "last PUBACK")


def _dest_cells(d: DestinationStatus, now: datetime) -> Cells:
    k = d.id
    return {
        f"{k}/link": "connected" if d.connected else "DISCONNECTED",
        f"{k}/pending": str(d.pending),
        f"{k}/pending_bytes": str(d.pending_bytes),
        f"{k}/sent": str(d.sent),
        f"{k}/acked": str(d.acked),
        f"{k}/dropped": str(d.dropped),
        f"{k}/rejected": str(d.rejected),
        f"{k}/lost_records": str(d.lost_records),  # never stored (disk full): no envelope
        f"{k}/last_ack": age(d.last_ack, now) + (" ago" if d.last_ack else ""),
    }


def destinations_live(source: StatusSource) -> Live:
    now = utc_now()
    cells: Cells = {}
    dests = source.destinations()
    for d in dests:
        cells.update(_dest_cells(d, now))
    return Live(cells, _shape(d.id for d in dests))


def destinations_page(source: StatusSource) -> tuple[str, Live]:
    live = destinations_live(source)
    rows = []
    for d in source.destinations():
        dynamic = "".join(
            _td(f"{d.id}/{col}", live.cells[f"{d.id}/{col}"], col)
            for col in ("link", "pending", "pending_bytes", "sent", "acked", "dropped",
                        "rejected", "lost_records", "last_ack")
        )
        rows.append(
            f'<tr><th scope="row">{escape(d.id)}</th><td>{escape(d.url)}</td>'
            f"<td>{escape(d.protocol)}</td><td>{escape(d.format)}</td>"
            f"<td>{escape(', '.join(d.streams))}</td>{dynamic}</tr>"
        )
    return _table(DEST_HEAD, rows, "destinations"), live


def gateway_live(source: StatusSource) -> Live:
    g = source.gateway()
    now = utc_now()
    cells = {
        "gw/uptime": duration((now - g.started).total_seconds()),
        "gw/kid": g.kid or "-",
        "gw/envelopes": str(g.envelopes_sealed),
        "gw/records": str(g.records_sealed),
    }
    for kind, entries in (("reload", g.reloads), ("warning", g.warnings)):
        cells.update(_entry_cells(kind, entries))
    # rows and the `from` column come with the counts (a rebuild); a full list updates
    # in place
    return Live(cells, _shape([str(len(g.reloads)), str(len(g.warnings)),
                               *(k for k in ("gw/reload/0/from", "gw/warning/0/from")
                                 if k in cells)]))


def _entry_cells(kind: str, entries: Sequence[LogEntry]) -> Cells:
    """Newest first: `gw/<kind>/<row>/when|text`, and `.../from` once any entry came
    from a worker (`run --workers N`; one process shows no such column)."""
    origins = any(e.worker is not None for e in entries)
    cells: Cells = {}
    for row, e in enumerate(reversed(entries)):
        key = f"gw/{kind}/{row}"
        cells[f"{key}/when"] = f"{e.when:%Y-%m-%d %H:%M:%S}"
        if origins:
            cells[f"{key}/from"] = e.origin
        cells[f"{key}/text"] = e.text
    return cells


def _entry_table(kind: str, head: str, count: int, cells: Cells, cls: str = "") -> str:
    cols = ["when", *(["from"] if f"gw/{kind}/0/from" in cells else []), "text"]
    titles = {"when": "when (UTC)", "from": "from", "text": head}
    return _table([titles[c] for c in cols], (
        "<tr>" + "".join(_td(f"gw/{kind}/{row}/{c}", cells[f"gw/{kind}/{row}/{c}"])
                         for c in cols) + "</tr>"
        for row in range(count)
    ), cls)


def gateway_page(source: StatusSource) -> tuple[str, Live]:
    g = source.gateway()
    live = gateway_live(source)
    c = live.cells
    facts = (
        f"<tr><th>gateway</th><td>{escape(g.id)} at site {escape(g.site)}</td></tr>"
        f"<tr><th>version</th><td>{escape(g.version)}</td></tr>"
        f"<tr><th>signing key id</th>{_td('gw/kid', c['gw/kid'])}</tr>"
        f"<tr><th>started</th><td>{g.started:%Y-%m-%d %H:%M:%S} UTC</td></tr>"
        f"<tr><th>uptime</th>{_td('gw/uptime', c['gw/uptime'])}</tr>"
        f"<tr><th>envelopes signed</th>{_td('gw/envelopes', c['gw/envelopes'])}</tr>"
        f"<tr><th>records signed</th>{_td('gw/records', c['gw/records'])}</tr>"
    )
    reloads = (_entry_table("reload", "outcome", len(g.reloads), c) if g.reloads
               else "<p>No reload since start.</p>")
    warnings = (_entry_table("warning", "warning", len(g.warnings), c, "warnings")
                if g.warnings else "<p>No warning.</p>")
    html = (f'<table class="facts">{facts}</table><h2>Reloads</h2>{reloads}'
            f"<h2>Recent warnings</h2>{warnings}")
    return html, live


# ---- bookings ------------------------------------------------------------------------------

WAITING_HEAD = ("booking", "machine", "platform / reference", "window (UTC)", "job",
                "waits for", "held until (UTC)", "decide within")
UPCOMING_HEAD = ("booking", "machine", "platform / reference", "window (UTC)", "job", "starts")
RECENT_HEAD = ("when (UTC)", "booking", "machine", "platform / reference", "state", "reason",
               "changed")
REASON_MAX = 500
"""Characters of a reason typed on the page; it goes into the signed record."""


@dataclass(frozen=True)
class DecisionForm:
    """What the page's accept/decline forms carry: the process's CSRF token, and the
    machine filter to come back to."""

    csrf: str
    machine: str | None = None


def ahead(ts: datetime | None, now: datetime) -> str:
    """`in 12 min`, or `now` once passed."""
    if ts is None:
        return "-"
    s = (ts - now).total_seconds()
    return "now" if s <= 0 else f"in {duration(s)}"


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else f"{ts:%Y-%m-%d %H:%M:%S}"


def _window(row: BookingRow) -> str:
    return f"{_when(row.start)} .. {_when(row.end)}"


def _job(row: BookingRow) -> str:
    what = row.request.get("program") or row.request.get("process") or "-"
    quantity = row.request.get("quantity")
    return f"{what} x {quantity}" if quantity else str(what)


def bookings_live(view: BookingsView, form: DecisionForm | None = None) -> Live:
    """Counters that run while the page is open; any booking changing section (or a new
    one) changes the shape, so the browser reloads the page."""
    cells: Cells = {}
    for r in view.waiting:
        cells[f"{r.id}/left"] = ahead(r.expires, view.now)
    for r in view.upcoming:
        cells[f"{r.id}/starts"] = "running" if r.start and r.start <= view.now else ahead(
            r.start, view.now)
    for r in view.recent:
        cells[f"{r.id}/changed"] = age(r.updated, view.now) + " ago"
    keys = [f"w {r.id}" for r in view.waiting] + [f"u {r.id}" for r in view.upcoming] + [
        f"r {r.id} {r.state} {r.updated.isoformat()}" for r in view.recent]
    return Live(cells, _shape([*keys, "decide" if form else "read-only"]))


def _decide_form(row: BookingRow, form: DecisionForm) -> str:
    back = (f'<input type="hidden" name="machine" value="{escape(form.machine)}">'
            if form.machine else "")
    return (
        f'<form method="post" action="/bookings/{escape(row.id)}" class="decide">'
        f'<input type="hidden" name="csrf" value="{escape(form.csrf)}">{back}'
        f'<label>reason <input name="reason" maxlength="{REASON_MAX}" size="24"></label> '
        '<button type="submit" name="decision" value="accept">Accept</button> '
        '<button type="submit" name="decision" value="decline">Decline</button></form>'
    )


def _who(row: BookingRow) -> str:
    return escape(f"{row.platform} / {row.reference}")


def _machine_link(machine: str) -> str:
    return f'<td><a href="/machines/{escape(machine)}">{escape(machine)}</a></td>'


def bookings_page(view: BookingsView, form: DecisionForm | None = None,
                  notice: str | None = None) -> tuple[str, Live]:
    """`form` None: read-only, no buttons (gateway.web.allow_decisions off)."""
    live = bookings_live(view, form)
    c = live.cells
    waiting = []
    for r in view.waiting:
        waits = "; ".join(r.waits_for) or "-"
        action = f"<td>{_decide_form(r, form)}</td>" if form else ""
        waiting.append(
            f'<tr data-booking="{escape(r.id)}" data-state="requested">'
            f'<th scope="row">{escape(r.id)}</th>{_machine_link(r.machine)}<td>{_who(r)}</td>'
            f"<td>{_window(r)}</td><td>{escape(_job(r))}</td><td>{escape(waits)}</td>"
            f"<td>{_when(r.expires)}</td>{_td(f'{r.id}/left', c[f'{r.id}/left'])}{action}</tr>"
        )
    head = (*WAITING_HEAD, "decision") if form else WAITING_HEAD
    upcoming = [
        f'<tr data-booking="{escape(r.id)}" data-state="accepted">'
        f'<th scope="row">{escape(r.id)}</th>{_machine_link(r.machine)}<td>{_who(r)}</td>'
        f"<td>{_window(r)}</td><td>{escape(_job(r))}</td>"
        f"{_td(f'{r.id}/starts', c[f'{r.id}/starts'])}</tr>"
        for r in view.upcoming
    ]
    recent = [
        f'<tr data-booking="{escape(r.id)}" data-state="{escape(r.state)}">'
        f"<td>{_when(r.updated)}</td><th scope=\"row\">{escape(r.id)}</th>"
        f"{_machine_link(r.machine)}<td>{_who(r)}</td><td>{escape(r.state)}</td>"
        f"<td>{escape(r.reason or '-')}</td>{_td(f'{r.id}/changed', c[f'{r.id}/changed'])}</tr>"
        for r in view.recent
    ]
    mode = ("Accept or decline a waiting request here or with <code>edge-gateway bookings "
            "accept|decline</code>; each decision is a signed record on the bookings stream."
            if form else "Read-only: decide with <code>edge-gateway bookings accept|decline"
            "</code> (or set <code>gateway.web.allow_decisions</code>, with a token).")
    html = (
        (f'<p class="notice" role="status">{escape(notice)}</p>' if notice else "")
        + f"<p>{mode}</p><h2>Waiting for a decision</h2>"
        + (_table(head, waiting, "bookings waiting") if waiting
           else "<p>No request waits for a decision.</p>")
        + "<h2>Accepted, upcoming</h2>"
        + (_table(UPCOMING_HEAD, upcoming, "bookings upcoming") if upcoming
           else "<p>No accepted booking ahead.</p>")
        + "<h2>Recent decisions</h2>"
        + (_table(RECENT_HEAD, recent, "bookings recent") if recent
           else "<p>No decision yet.</p>")
    )
    return html, live
