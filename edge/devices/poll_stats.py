"""How long each poll of a device takes, as cumulative histogram buckets.

Kept by the runner per device (a bisect and an increment per poll, no lock, no label
lookup) and read by the metrics collector at scrape time as a Prometheus histogram.
"""

from __future__ import annotations

from bisect import bisect_left

BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a Modbus TCP poll on a LAN takes milliseconds, a 19200 baud RTU line or a
timed-out device seconds."""


class PollDurations:
    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self._buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self._buckets[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> tuple[int, ...]:
        """Counts of polls <= each bound (Prometheus `le` buckets, +Inf excluded)."""
        out, running = [], 0
        for n in self._buckets[:-1]:
            running += n
            out.append(running)
        return tuple(out)
