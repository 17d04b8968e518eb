"""The current shift's state timeline as inline SVG: one coloured bar per stretch.

Drawn on the server so it shows with JavaScript off, and as presentation attributes (no
inline style) so the page's Content-Security-Policy can forbid inline styles and scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from edge.status.model import Segment

COLOURS = {
    "running": "#2e7d32",
    "waiting": "#f9a825",
    "feed_hold": "#ef6c00",
    "setup": "#1565c0",
    "alarm": "#c62828",
    "unavailable": "#424242",
    "gap": "#9e9e9e",
    "no_data": "#e0e0e0",
}
WIDTH, BAR, AXIS = 1000.0, 28, 16


def timeline_svg(
    segments: Sequence[Segment],
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    zone: ZoneInfo | None = None,
) -> str:
    """Hour ticks and hover labels in `zone` (the shift calendar's), default UTC."""
    tz = zone or ZoneInfo("UTC")
    if start is None or end is None or end <= start:
        return "<p>No shift is running.</p>"
    span = (end - start).total_seconds()

    def x(t: datetime) -> float:
        return round(WIDTH * min(max((t - start).total_seconds() / span, 0.0), 1.0), 2)

    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH:g} {BAR + AXIS + 2}" role="img" '
        f'aria-label="state timeline of the current shift" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="0" y="0" width="{WIDTH:g}" height="{BAR}" fill="#fafafa" stroke="#bbb"/>',
    ]
    for seg in segments:
        x0, x1 = x(seg.start), x(seg.end)
        if x1 <= x0:
            continue
        a, b = seg.start.astimezone(tz), seg.end.astimezone(tz)
        label = f"{seg.state.replace('_', ' ')} {a:%H:%M:%S}-{b:%H:%M:%S}"
        parts.append(
            f'<rect x="{x0}" y="0" width="{round(x1 - x0, 2)}" height="{BAR}" '
            f'fill="{COLOURS.get(seg.state, "#777")}" data-state="{escape(seg.state)}">'
            f"<title>{escape(label)}</title></rect>"
        )
    parts.append(f'<line x1="{x(now)}" x2="{x(now)}" y1="0" y2="{BAR}" stroke="#000"/>')
    # whole hours of the local clock (the zone may be off UTC by a half hour)
    tick = start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    while tick <= end:
        if tick >= start:
            # a label centred on either edge of the view box is cut in half ("22:00" read
            # ":00"): the shift's first and last ticks lean inwards
            at = x(tick)
            anchor = "start" if at <= 0 else "end" if at >= WIDTH else "middle"
            parts.append(
                f'<text x="{at}" y="{BAR + AXIS - 3}" font-size="11" '
                f'text-anchor="{anchor}" fill="#333">{tick:%H:%M}</text>'
            )
        tick = (tick.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
    parts.append("</svg>")
    seen = sorted({s.state for s in segments})
    legend = "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{COLOURS.get(s, "#777")}"/></svg> {escape(s.replace("_", " "))}</li>'
        for s in seen
    )
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'
