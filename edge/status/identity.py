"""What a status source says of the gateway itself: id, site, version, start, reloads,
recent warnings and query counts.

Why one class: the single-process source (edge/status/gateway_source.py) and the parent of
`run --workers N` (edge/status/worker_source.py) differ in where machine and egress figures
come from, not in how the gateway describes itself; both hold one of these so the page and
`/metrics` read the same header whichever way the gateway runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from edge.status.log_tap import KEEP, LogTap, RecentLog, merged
from edge.status.model import GatewayStatus, QueryCounts
from models.plant import Plant


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    plant: Callable[[], Plant]
    """The plant in force (a reload may replace it)."""
    queries: Callable[[], Mapping[tuple[str, str], int]]
    """(method, result) -> count, from the query handler."""
    version: str
    started: datetime
    tap: LogTap
    workers: Sequence[RecentLog] = ()
    """With `run --workers N`: the parent's copy of each worker's recent warnings (index =
    worker), shown beside the parent's own. Reloads are the parent's only: it logs one
    outcome per SIGHUP for the whole pool (edge/daemon/reload_outcomes.py)."""
    shown: int = 2 * KEEP
    """The newest this many of each kind, however many workers there are."""

    def status(self, kid: str | None, envelopes: int, records: int) -> GatewayStatus:
        """The gateway row, with what only the caller knows: the signing key id and the
        envelopes and records sealed so far."""
        g = self.plant().gateway
        return GatewayStatus(
            id=g.id, site=g.site, version=self.version, kid=kid, started=self.started,
            reloads=merged(self.tap.recent, (), "reloads", self.shown),
            warnings=merged(self.tap.recent, self.workers, "warnings", self.shown),
            envelopes_sealed=envelopes, records_sealed=records,
            reload_counts=dict(self.tap.recent.reload_counts),
        )

    def query_counts(self) -> QueryCounts:
        return QueryCounts(dict(self.queries()))
