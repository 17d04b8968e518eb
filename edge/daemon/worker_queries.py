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
counts its open bookings in every worker (the parent asks the others and passes the sum).
The parent answers one request at a time, so no other query books between those steps.
Not done across workers: a `reserve` by `process` whose machines run in different workers
is refused with a `bad_request` that says so (deciding it needs every candidate's store in
one transaction).

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
from models.booking import OPEN_STATES, parse_reserve
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

    async def __call__(self, method: str, params: dict[str, Any], platform: Platform) -> Any:
        if method == "describe":
            return describe(self.config())
        if method == "health":
            return self.health()
        if method == "bookings":
            return await self._bookings(params, platform)
        if method == "release":
            return await self._release(params, platform)
        if method == "reserve":
            return await self._reserve(params, platform)
        asset = params.get("asset")
        if asset is None and method in WHOLE_PLANT:
            parts = await self._everywhere(method, params, platform)
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
        self, method: str, params: dict[str, Any], platform: Platform
    ) -> list[Any]:
        """Every worker's answer; the first refusal (in worker order) if any refused."""
        answers = await asyncio.gather(
            *(self._ask(i, method, params, platform) for i in range(self.workers)),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers

    async def _bookings(self, params: dict[str, Any], platform: Platform) -> dict[str, Any]:
        parts = await self._everywhere("bookings", params, platform)
        rows = [row for part in parts for row in part["bookings"]]
        rows.sort(key=lambda r: str(r["created"]), reverse=True)  # RFC 3339 UTC: sortable
        limit = params.get("limit", 100)  # valid: every worker checked it
        return {"bookings": rows[:limit]}

    async def _open(self, reference: str, platform: Platform) -> tuple[int, dict[str, Any]] | None:
        """The newest open booking of `platform` with `reference`, and its worker."""
        parts = await self._everywhere(
            "bookings", {"reference": reference, "state": OPEN, "limit": 1}, platform)
        found = [(str(p["bookings"][0]["created"]), i, p["bookings"][0])
                 for i, p in enumerate(parts) if p["bookings"]]
        if not found:
            return None
        _, index, row = max(found, key=lambda f: f[0])
        return index, row

    async def _release(self, params: dict[str, Any], platform: Platform) -> Any:
        booking, reference = params.get("booking"), params.get("reference")
        if isinstance(booking, str):  # each booking lives in exactly one worker's store
            refusal: QueryError | None = None
            for index in range(self.workers):
                try:
                    return await self._ask(index, "release", params, platform)
                except QueryError as exc:
                    if exc.code != "not_found":
                        raise
                    refusal = refusal or exc
            assert refusal is not None
            raise refusal
        if isinstance(reference, str):
            found = await self._open(reference, platform)
            if found is None:
                raise QueryError("not_found", f"no open booking with reference {reference!r}")
            index, row = found
            return await self._ask(index, "release", {"booking": row["booking"]}, platform)
        return await self._ask(0, "release", params, platform)  # the usual refusal

    async def _reserve(self, params: dict[str, Any], platform: Platform) -> Any:
        try:
            req = parse_reserve(params)  # refused here as one process refuses it
        except ValueError as exc:
            raise QueryError("bad_request", str(exc)) from exc
        asset, process, reference = req.asset, req.process, req.reference
        if asset is None and isinstance(process, str):
            owners = self._process_owners(process, platform)
            if len(owners) > 1:
                raise QueryError(
                    "bad_request",
                    f"the machines offering process {process!r} run in different worker "
                    "processes of this gateway; name params.asset",
                )
            index = owners.pop() if owners else 0
        else:
            index = self._owner(asset)
        if reference:  # asking again returns the open booking, in whichever worker
            found = await self._open(reference, platform)
            if found is not None:
                return {**found[1], "new": False}
        others = [i for i in range(self.workers) if i != index]
        held = await asyncio.gather(
            *(self._call(i, {"op": "usage", "platform": platform.id}) for i in others))
        elsewhere = [sum(float(h) for h, _ in held), sum(int(n) for _, n in held)]
        return await self._ask(index, "reserve", params, platform, elsewhere=elsewhere)

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
