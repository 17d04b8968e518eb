"""Whether a device that answers is worth anything: all of its points bad for N polls.

Why: a Modbus unit answering exception 4 to every request, or an OPC UA server none of
whose nodes resolve, keeps the connection up; the runner saw batches and said `up`, the twin
said `available`, and OEE counted the time while every value was `null/bad` (issue 12 item
7). Here a device is *degraded* when the latest sample of every point it reported is bad,
and has stayed so for `polls` batches in a row or `polls` poll intervals, whichever comes
first. The latest sample per point, not the batch alone:
subscription adapters (OPC UA, MTConnect) only send changes, so one all-bad batch followed by
silence is all-bad, and a quiet healthy device is not. `availability` is left out: adapters
synthesize it (OPC UA says `available` on connect even when no node resolved).

Pure bookkeeping with an injected clock: the runner feeds batches and ticks, and acts on the
transitions returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from models.machine_state import SIG_AVAILABILITY
from models.sample import Quality, Sample

__all__ = ["PointHealth", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """A transition: `degraded` with the failing points, or back to healthy."""

    degraded: bool
    failing: tuple[str, ...] = ()

    def reason(self, polls: int) -> str:
        shown = ", ".join(self.failing[:10]) + (" ..." if len(self.failing) > 10 else "")
        return f"no good value from any point for {polls} polls ({shown})"


class PointHealth:
    """Latest quality per point; says when the device turns all-bad for long enough, and when
    a good value comes back."""

    def __init__(self, polls: int, poll_interval: float) -> None:
        self.polls = polls
        self._window = polls * poll_interval
        self._bad: dict[str, bool] = {}
        self._all_bad_since: float | None = None
        self._all_bad_batches = 0
        self.degraded = False

    def reset(self) -> None:
        """A new connection: what the old one said is no evidence any more."""
        self._bad.clear()
        self._all_bad_since = None
        self._all_bad_batches = 0

    def observe(self, batch: Iterable[Sample], now: float) -> Verdict | None:
        for s in batch:
            if s.signal != SIG_AVAILABILITY:
                self._bad[s.signal] = s.quality is Quality.BAD
        if self._bad and all(self._bad.values()):
            if self._all_bad_since is None:
                self._all_bad_since = now
            self._all_bad_batches += 1
        else:
            self._all_bad_since = None
            self._all_bad_batches = 0
            if self.degraded and self._bad:
                self.degraded = False
                return Verdict(False)
        return self.tick(now)

    @property
    def pending(self) -> bool:
        """Whether a `tick` could say anything: all bad, and not yet degraded. Otherwise
        ticks are skipped (one timer per device per poll interval, for nothing)."""
        return not self.degraded and self._all_bad_since is not None

    def tick(self, now: float) -> Verdict | None:
        """Called every poll interval too: a subscription that went quiet sends no batch."""
        since = self._all_bad_since
        if self.degraded or since is None:
            return None
        if self._all_bad_batches < self.polls and now - since < self._window:
            return None
        self.degraded = True
        return Verdict(True, tuple(sorted(self._bad)))
