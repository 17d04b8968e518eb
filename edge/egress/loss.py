"""What the gateway had and could not keep: counted, alarmed on, and told to the platform.

When the outbox cannot store (disk full, I/O error) a batch of records is lost before it
was sealed, so it has no `seq` and no platform could notice the hole from the chain. The
`LossLedger` counts every such record per destination (each one that would have received
it) and per machine, says whether loss is going on now (`failing`, for the data-loss
alarm), and keeps one open `Gap` per machine topic until a signed `gap` record describing it
has been stored for delivery (`Egress` does that with the first envelope stored after
storage recovered).

The ledger lives in memory: the status and `health` show losses since the process started,
and an open gap not yet reported when the process ends is not reported (it could not be
written to the full disk either). Records the outbox refused or evicted after sealing are
not counted here: they have a `seq`, so every platform sees the gap in the chain, and the
outbox counts them (`rejected`, `dropped`) per destination.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.sample import format_ts

GAP_STREAM = "gap"


@dataclass
class Gap:
    """Records lost on one machine since the last report; `topic` is where it is reported."""

    topic: str
    asset: str | None
    first: datetime
    last: datetime
    records: int = 0
    envelopes: int = 0
    streams: Counter[str] = field(default_factory=Counter)
    reason: str = ""

    def as_record(self) -> dict[str, Any]:
        """The body record of the signed `gap` envelope (docs/protocol.md)."""
        return {
            "ts": format_ts(self.last),
            "from": format_ts(self.first),
            "to": format_ts(self.last),
            "records": self.records,
            "envelopes": self.envelopes,
            "streams": dict(sorted(self.streams.items())),
            "reason": self.reason,
        }


def gap_topic(topic: str) -> str:
    """`.../m1/telemetry` -> `.../m1/gap`: the machine's topic tree, stream leaf `gap`."""
    return f"{topic.rsplit('/', 1)[0]}/{GAP_STREAM}"


class LossLedger:
    """Counts of records lost before sealing, and the gaps still to report."""

    def __init__(self) -> None:
        self._by_destination: Counter[str] = Counter()
        self._by_machine: Counter[str] = Counter()
        self._open: dict[str, Gap] = {}
        self._sealing: dict[int, Gap] = {}  # by id(): gaps whose record is being stored
        self._failing: set[str] = set()

    def lost(
        self,
        *,
        topic: str,
        asset: str | None,
        stream: str,
        records: int,
        destinations: Iterable[str],
        at: datetime,
        reason: str,
    ) -> None:
        """`records` of `stream` on `topic` could not be stored for `destinations`."""
        dests = list(destinations)
        for d in dests:
            self._by_destination[d] += records
        self._failing.update(dests)
        self._by_machine[asset or "-"] += records
        key = gap_topic(topic)
        gap = self._open.get(key)
        if gap is None:
            gap = self._open[key] = Gap(key, asset, at, at)
        gap.last = at
        gap.records += records
        gap.envelopes += 1
        gap.streams[stream] += records
        gap.reason = reason

    def stored(self) -> None:
        """The outbox stored an envelope: loss has stopped (until the next `lost`)."""
        self._failing.clear()

    def failing(self, destination: str) -> bool:
        """True from a loss for `destination` until the next envelope was stored."""
        return destination in self._failing

    def unreported(self) -> list[Gap]:
        """Open gaps not yet being reported (see `reporting`)."""
        return list(self._open.values())

    def reporting(self, gap: Gap) -> None:
        """`gap`'s record is signed and on its way to the outbox: losses from now on open a
        new gap (they are not in the signed record), until `reported` or `not_reported`."""
        if self._open.get(gap.topic) is gap:
            del self._open[gap.topic]
        self._sealing[id(gap)] = gap

    def reported(self, gap: Gap) -> None:
        """`gap`'s record is stored for delivery; later losses open a new gap."""
        self._sealing.pop(id(gap), None)
        if self._open.get(gap.topic) is gap:
            del self._open[gap.topic]

    def not_reported(self, gap: Gap) -> None:
        """Storing `gap`'s record failed: it is open again, merged with any newer gap of its
        topic, and reported with the next envelope stored."""
        self._sealing.pop(id(gap), None)
        newer = self._open.get(gap.topic)
        if newer is None:
            self._open[gap.topic] = gap
            return
        newer.first = min(newer.first, gap.first)
        newer.last = max(newer.last, gap.last)
        newer.records += gap.records
        newer.envelopes += gap.envelopes
        newer.streams.update(gap.streams)

    def lost_records(self, destination: str) -> int:
        return self._by_destination[destination]

    def snapshot(self) -> dict[str, Any]:
        """For the retained status and `health`: totals since start, by machine. The gaps not
        yet reported are counted per machine too (`unreported_by_machine`), so a destination
        whose `machines` filter hides a machine is not told of its gaps
        (edge/egress/status_scope.py sums what it may see into `unreported_gaps`)."""
        gaps = Counter(g.asset or "-" for g in (*self._open.values(), *self._sealing.values()))
        return {
            "lost_records": sum(self._by_machine.values()),
            "by_machine": dict(sorted(self._by_machine.items())),
            "unreported_gaps": sum(gaps.values()),
            "unreported_by_machine": dict(sorted(gaps.items())),
        }
