"""Which process answers a platform's query when the machines run in N workers.

Why this split: the parent of `run --workers N` is the gateway's one query endpoint (one
subscription, one nonce store, one rate limit per platform, one signing chain for replies);
it runs every check of edge/query/handler.py and then hands the method here. What the
configuration alone answers (`describe`) or the workers' reports already hold (`health`)
is answered in the parent; a method about one machine goes to the worker that owns it
(edge/config/workers.py `owner`, the same hash that placed the machine), over the
worker channel (edge/daemon/worker_channel.py); a whole-plant `state`, `aas` or `capacity`
asks every worker at once and merges the machines in YAML order.

Bookings stay with the machine's owner, so each machine's bookings have one writer (its
store, its signed `bookings` records, its capacity offer): `reserve` with `asset` goes to
the owner after the parent looked for an open booking with the same `reference` in every
worker (asking again returns it, as with one process); `release` goes to the worker that
holds the booking; `bookings` merges every worker's list, newest first; a platform's quota
counts its open bookings in every worker (the parent asks them and passes the others' sum).
A `reserve` by `process` whose candidates run in several workers: each of those workers
proposes what it would decide (`propose`, committing nothing), the parent picks as one
process picks among candidates, and the winner's worker decides again and commits with
that machine as its only candidate; that second decision is the binding one (in its own
transaction, against its store as it is then). The parent answers one request at a time,
so no other query books between those steps (an operator's `edge-gateway bookings accept`
can: the commit then decides on the store as it finds it, never double-booking).

A worker that is restarting, or silent for `timeout` s, makes the request fail with
`unavailable` (docs/protocol.md): the platform asks again, nothing is half done.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Awaitable, Callable
from typing import Any

from edge.config.loader import LoadedPlant
from edge.config.workers import owner, placement, worker_of
from edge.daemon.worker_channel import WorkerUnavailable
from edge.query.backend import describe
from edge.query.handler import QueryError
from models.booking import OPEN_STATES, PROPOSE, MachineSeen, every_machine, parse_reserve
from models.plant import Platform

Call = Callable[[int, dict[str, Any], float], Awaitable[Any]]
"""worker index, request, seconds to wait -> the answer's result (QueryError, WorkerUnavailable)."""
WHOLE_PLANT = ("state", "aas", "capacity")
OPEN = sorted(OPEN_STATES)


class WorkerQueries:
    """The parent's `Dispatch` for its QueryHandler."""

    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        workers: int,
        call: Call,
        health: Callable[[], dict[str, Any]],
        *,
        timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.workers = workers
        self.call = call
        self.health = health
        self.timeout = timeout

    async def __call__(
        self, method: str, params: dict[str, Any], platform: Platform,
        seen: MachineSeen = every_machine,
    ) -> Any:
        # the destination's policy, decided in the parent, as data a worker can apply
        hidden = [m.id for m in self.config().plant.machines if not seen(m.id)]
        if method == "describe":
            return describe(self.config())
        if method == "health":
            return self.health()
        if method == "bookings":
            return await self._bookings(params, platform, hidden)
        if method == "release":
            return await self._release(params, platform, hidden)
        if method == "reserve":
            return await self._reserve(params, platform, hidden)
        asset = params.get("asset")
        if asset is None and method in WHOLE_PLANT:
            parts = await self._everywhere(method, params, platform, hidden)
            found = {a: v for part in parts for a, v in part["machines"].items()}
            order = [m.id for m in self.config().enabled_machines() if m.id in found]
            return {"machines": {a: found[a] for a in order}}
        # one machine; without one (an error) any worker gives the usual refusal
        return await self._ask(self._owner(asset), method, params, platform)

    def _owner(self, asset: Any) -> int:
        if not isinstance(asset, str):
            return 0
        return owner(self.config().plant, asset, self.workers)

    async def _ask(
        self, index: int, method: str, params: dict[str, Any], platform: Platform,
        **extra: Any,
    ) -> Any:
        request = {"op": "query", "method": method, "params": params,
                   "platform": platform.model_dump(mode="json"), **extra}
        return await self._call(index, request)

    async def _call(self, index: int, request: dict[str, Any]) -> Any:
        try:
            return await self.call(index, request, self.timeout)
        except WorkerUnavailable as exc:
            raise QueryError(
                "unavailable", "a worker process of this gateway is restarting; ask again"
            ) from exc

    async def _everywhere(
        self, method: str, params: dict[str, Any], platform: Platform, hidden: list[str]
    ) -> list[Any]:
        """Every worker's answer; the first refusal (in worker order) if any refused."""
        answers = await asyncio.gather(
            *(self._ask(i, method, params, platform, hidden=hidden)
              for i in range(self.workers)),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers

    async def _bookings(
        self, params: dict[str, Any], platform: Platform, hidden: list[str]
    ) -> dict[str, Any]:
        parts = await self._everywhere("bookings", params, platform, hidden)
        rows = [row for part in parts for row in part["bookings"]]
        rows.sort(key=lambda r: str(r["created"]), reverse=True)  # RFC 3339 UTC: sortable
        limit = params.get("limit", 100)  # valid: every worker checked it
        return {"bookings": rows[:limit]}

    async def _open(
        self, reference: str, platform: Platform, hidden: list[str]
    ) -> tuple[int, dict[str, Any]] | None:
        """The newest open booking of `platform` with `reference`, and its worker."""
        parts = await self._everywhere(
            "bookings", {"reference": reference, "state": OPEN, "limit": 1}, platform, hidden)
        found = [(str(p["bookings"][0]["created"]), i, p["bookings"][0])
                 for i, p in enumerate(parts) if p["bookings"]]
        if not found:
            return None
        _, index, row = max(found, key=lambda f: f[0])
        return index, row

    async def _release(
        self, params: dict[str, Any], platform: Platform, hidden: list[str]
    ) -> Any:
        booking, reference = params.get("booking"), params.get("reference")
        if isinstance(booking, str):  # each booking lives in exactly one worker's store
            refusal: QueryError | None = None
            for index in range(self.workers):
                try:
                    return await self._ask(index, "release", params, platform, hidden=hidden)
                except QueryError as exc:
                    if exc.code != "not_found":
                        raise
                    refusal = refusal or exc
            assert refusal is not None
            raise refusal
        if isinstance(reference, str):
            found = await self._open(reference, platform, hidden)
            if found is None:
                raise QueryError("not_found", f"no open booking with reference {reference!r}")
            index, row = found
            return await self._ask(index, "release", {"booking": row["booking"]}, platform,
                                   hidden=hidden)
        return await self._ask(0, "release", params, platform, hidden=hidden)  # the usual refusal

    async def _reserve(
        self, params: dict[str, Any], platform: Platform, hidden: list[str]
    ) -> Any:
        try:
            req = parse_reserve(params)  # refused here as one process refuses it
        except ValueError as exc:
            raise QueryError("bad_request", str(exc)) from exc
        if req.reference:  # asking again returns the open booking, in whichever worker
            found = await self._open(req.reference, platform, hidden)
            if found is not None:
                return {**found[1], "new": False}
        held = await asyncio.gather(*(self._call(i, {"op": "usage", "platform": platform.id})
                                      for i in range(self.workers)))

        def elsewhere(index: int) -> list[float]:  # the platform's bookings in the others
            others = [h for i, h in enumerate(held) if i != index]
            return [sum(float(h) for h, _ in others), sum(int(n) for _, n in others)]

        if req.asset is not None or req.process is None:
            index = self._owner(req.asset)
            return await self._ask(index, "reserve", params, platform, hidden=hidden,
                                   elsewhere=elsewhere(index))
        owners = self._process_owners(req.process, platform)
        if len(owners) <= 1:  # one worker holds every candidate (or none: its refusal)
            index = owners.pop() if owners else 0
            return await self._ask(index, "reserve", params, platform, hidden=hidden,
                                   elsewhere=elsewhere(index))
        # candidates in several workers: each proposes (commits nothing), the parent picks
        # as one process would (the first candidate, in YAML order, that is accepted, else
        # the first that waits, else the first refused), and the winner's worker decides
        # again and commits with that machine as its only candidate
        involved = sorted(owners)
        proposals = await asyncio.gather(*(
            self._ask(i, PROPOSE, params, platform, hidden=hidden, elsewhere=elsewhere(i))
            for i in involved))
        order = {m.id: n for n, m in enumerate(self.config().enabled_machines())}
        rank = {"accepted": 0, "requested": 1}
        index, best = min(zip(involved, proposals, strict=True),
                          key=lambda p: (rank.get(p[1]["state"], 2),
                                         order.get(p[1]["machine"], len(order))))
        return await self._ask(index, "reserve", params, platform, hidden=hidden,
                               elsewhere=elsewhere(index), machine=best["machine"])

    def _process_owners(self, process: str, platform: Platform) -> set[int]:
        """The workers of the machines a `reserve` by process may go to (as BookingDesk
        chooses them: enabled, offering the process, shared with the platform)."""
        wanted = process.strip().lower()
        return {
            worker_of(placement(m), self.workers)
            for m in self.config().enabled_machines()
            if m.capabilities is not None and wanted in m.capabilities.processes
            and any(fnmatch.fnmatchcase(m.id, p) for p in platform.machines)
        }


__all__ = ["WorkerQueries"]
