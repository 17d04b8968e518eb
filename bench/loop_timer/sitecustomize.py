"""Bench-only: time every event-loop callback of a gateway started with
`PYTHONPATH=bench/loop_timer EDGE_LOOP_TIMER_FILE=/tmp/steps.json` (Python imports a
`sitecustomize` it finds on the path at start-up, so the gateway's code stays untouched).

Every 2 s the file is rewritten with the steps over 10 ms (`EDGE_LOOP_TIMER_SLOW_MS`; unix
time, ms, whose step), the total seconds, count and longest of the steps per task name
(digits folded: `device-mN`), and how often a sender found its MQTT in-flight window full.
How section 2n of bench/report-issue17.md found the capacity round and the KPI tick holding
the loop at 500 machines. The timing itself costs ~1 us per step.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import json
import os
import re
import time
from typing import Any

OUT = os.environ.get("EDGE_LOOP_TIMER_FILE")
SLOW = float(os.environ.get("EDGE_LOOP_TIMER_SLOW_MS", "10")) / 1e3


def _install(out: str) -> None:
    run = asyncio.events.Handle._run
    slow: list[tuple[float, float, str]] = []
    totals: collections.defaultdict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    longest: collections.defaultdict[str, float] = collections.defaultdict(float)
    window: collections.Counter[str] = collections.Counter()
    written = [time.time()]

    def name(handle: asyncio.events.Handle) -> str:
        cb = handle._callback  # type: ignore[attr-defined]
        owner = getattr(cb, "__self__", None)
        n = owner.get_name() if isinstance(owner, asyncio.Task) else getattr(
            cb, "__qualname__", repr(cb))
        return re.sub(r"\d+", "N", n)

    def timed(self: asyncio.events.Handle) -> None:
        t = time.perf_counter()
        run(self)
        took = time.perf_counter() - t
        n = name(self)
        totals[n] += took
        counts[n] += 1
        longest[n] = max(longest[n], took)
        if took > SLOW:
            slow.append((round(time.time(), 3), round(took * 1e3, 1), n))
        now = time.time()
        if now - written[0] > 2:
            written[0] = now
            with open(out, "w") as f:
                json.dump({"slow": slow[-5000:],
                           "totals": sorted(totals.items(), key=lambda kv: -kv[1])[:40],
                           "counts": dict(counts.most_common(40)),
                           "longest_ms": {k: round(v * 1e3, 2) for k, v in sorted(
                               longest.items(), key=lambda kv: -kv[1])[:40]},
                           "inflight": dict(window)}, f)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    from edge.egress import inflight  # noqa: PLC0415 - only when the timer is on

    acquire = inflight.InFlight.acquire

    async def counted(self: inflight.InFlight) -> bool:
        window["acquires"] += 1
        window["full"] += self._slots.locked()
        result: Any = await acquire(self)
        return bool(result)

    inflight.InFlight.acquire = counted  # type: ignore[method-assign]


if OUT:
    _install(OUT)
