"""`StatusSource` of the parent of `run --workers N`: the workers' figures, merged.

Why on demand: the figures live in the worker processes, and the status page and
`/metrics` promise to cost nothing while nobody looks. So the web server calls `refresh`
before it builds a page, a live update or a scrape (edge/web/server.py `prepare`); it asks
every worker for a snapshot over the worker channel (edge/status/snapshot.py), at most once
per `max_age` seconds however many viewers there are. A worker that does not answer (it is
restarting) keeps its machines on the page from its last snapshot, with the link shown as
`down` and the reason, rather than letting them vanish. The gateway row's recent warnings
are not asked for: they come with the workers' periodic reports, so a worker that nobody
looked at before it crashed has still handed them over (edge/status/log_tap.py); its
reloads are the parent's, one per SIGHUP for the pool (edge/daemon/reload_outcomes.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from edge.config.workers import owner
from edge.status.identity import GatewayIdentity
from edge.status.log_tap import LogTap, RecentLog
from edge.status.model import (
    DestinationStatus,
    GatewayStatus,
    MachineStatus,
    OeeStatus,
    PointStatus,
    PollHistogram,
    QueryCounts,
    Segment,
)
from edge.status.snapshot import WorkerSnapshot
from models.errors import EdgeError
from models.plant import Plant

Fetch = Callable[[int, str | None], Awaitable[Mapping[str, Any]]]
"""worker index, machine whose points are wanted -> that worker's `worker_snapshot`."""
RESTARTING = "worker process restarting"


class WorkerStatusSource:
    def __init__(
        self,
        *,
        plant: Callable[[], Plant],
        workers: int,
        fetch: Fetch,
        kid: Callable[[], str | None],
        queries: Callable[[], Mapping[tuple[str, str], int]],
        version: str,
        started: datetime,
        tap: LogTap,
        worker_logs: Sequence[RecentLog] = (),
        max_age: float = 1.0,
    ) -> None:
        """`worker_logs`: the parent's copy of each worker's recent warnings
        (from its reports, edge/daemon/workers.py), merged into `gateway()`."""
        self._plant = plant
        self.workers = workers
        self._fetch = fetch
        self._kid = kid
        self._identity = GatewayIdentity(plant, queries, version, started, tap,
                                         worker_logs)
        self.max_age = max_age
        self.snapshots: list[WorkerSnapshot] = [WorkerSnapshot() for _ in range(workers)]
        self._fresh: list[tuple[float, str | None]] = [(-1e9, None)] * workers
        self._lock = asyncio.Lock()

    async def refresh(self, machine: str | None = None) -> None:
        """Ask every worker whose snapshot is older than `max_age` (or lacks `machine`'s
        points) for a new one, all at once."""
        async with self._lock:
            now = time.monotonic()
            owner = None if machine is None else self._owner_of(machine)
            due = [
                i for i in range(self.workers)
                if now - self._fresh[i][0] >= self.max_age
                or (i == owner and self._fresh[i][1] != machine)
            ]
            results = await asyncio.gather(
                *(self._fetch(i, machine if i == owner else None) for i in due),
                return_exceptions=True,
            )
            for i, result in zip(due, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, EdgeError | KeyError | ValueError | TypeError):
                        raise result
                    self.snapshots[i] = _restarting(self.snapshots[i])
                    self._fresh[i] = (now, None)
                else:
                    self.snapshots[i] = WorkerSnapshot.parse(result)
                    self._fresh[i] = (now, machine if i == owner else None)

    def _owner_of(self, machine_id: str) -> int:
        return owner(self._plant(), machine_id, self.workers)

    def _owner(self, machine_id: str) -> WorkerSnapshot:
        return self.snapshots[self._owner_of(machine_id)]

    def machines(self) -> Sequence[MachineStatus]:
        found = {m.id: m for s in self.snapshots for m in s.machines}
        order = [m.id for m in self._plant().machines if m.id in found]
        return [found[i] for i in order]

    def points(self, machine_id: str) -> Sequence[PointStatus]:
        return self._owner(machine_id).points

    def oee(self, machine_id: str) -> OeeStatus | None:
        return self._owner(machine_id).oee.get(machine_id)

    def timeline(self, machine_id: str) -> Sequence[Segment]:
        return self._owner(machine_id).timeline

    def poll_durations(self, machine_id: str) -> PollHistogram | None:
        return self._owner(machine_id).polls.get(machine_id)

    def destinations(self) -> Sequence[DestinationStatus]:
        """One row per destination: counters summed over the workers, connected only when
        every worker's link is, the newest acknowledgement."""
        merged: dict[str, DestinationStatus] = {}
        for snap in self.snapshots:
            for d in snap.destinations:
                seen = merged.get(d.id)
                if seen is None:
                    merged[d.id] = d
                    continue
                acks = [t for t in (seen.last_ack, d.last_ack) if t is not None]
                merged[d.id] = dataclasses.replace(
                    seen, connected=seen.connected and d.connected,
                    pending=seen.pending + d.pending,
                    pending_bytes=seen.pending_bytes + d.pending_bytes,
                    sent=seen.sent + d.sent, acked=seen.acked + d.acked,
                    dropped=seen.dropped + d.dropped, rejected=seen.rejected + d.rejected,
                    reconnects=seen.reconnects + d.reconnects,
                    lost_records=seen.lost_records + d.lost_records,
                    last_ack=max(acks) if acks else None,
                )
        return list(merged.values())

    def gateway(self) -> GatewayStatus:
        return self._identity.status(self._kid(), sum(s.sealed[0] for s in self.snapshots),
                                     sum(s.sealed[1] for s in self.snapshots))

    def queries(self) -> QueryCounts:
        return self._identity.query_counts()


def _restarting(snap: WorkerSnapshot) -> WorkerSnapshot:
    """The last snapshot of a worker that did not answer, its links shown down."""
    machines = tuple(dataclasses.replace(m, link="down", link_reason=RESTARTING)
                     for m in snap.machines)
    destinations = tuple(dataclasses.replace(d, connected=False) for d in snap.destinations)
    return dataclasses.replace(snap, machines=machines, destinations=destinations)


__all__ = ["WorkerStatusSource"]
