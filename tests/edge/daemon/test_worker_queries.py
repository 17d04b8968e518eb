"""The parent of `run --workers N` routes admitted queries to its workers
(edge/daemon/worker_queries.py) over the worker channel (edge/daemon/worker_channel.py).

Why: each machine has one owner; a query about it must reach that worker and no other
(for bookings: one writer per machine's store), whole-plant answers must hold every
worker's machines, a booking quota must count every worker's bookings, and a worker that
is gone must make the request fail `unavailable` at once, never hang. The channel here is
a real socket pair served by the worker-side class, in one event loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge.config.loader import LoadedPlant
from edge.config.workers import worker_of
from edge.daemon.worker_channel import WorkerChannel, WorkerChannelServer, WorkerUnavailable
from edge.daemon.worker_queries import WorkerQueries
from edge.query.handler import QueryError
from models.booking import MachineSeen, OtherStores, Usage
from models.plant import Plant, Platform

IDS = ["m1", "m2", "m3", "m4"]  # m4 on worker 0, m1-m3 on worker 1
LOG = structlog.get_logger()
P1 = Platform.model_validate({"id": "p1", "public_key_file": "p1.pem",
                              "methods": ["state", "reserve", "release", "bookings"]})


def loaded() -> LoadedPlant:
    machines = [{"id": i, "area": "a", "line": "l", "adapter": "modbus",
                 "connection": {"host": "127.0.0.1", "port": 502},
                 "capabilities": {"processes": ["milling"] if i in ("m1", "m4") else
                                  ["turning"]}} for i in IDS]
    plant = Plant.model_validate({"gateway": {"id": "gw-1", "site": "s"}, "machines": machines})
    return LoadedPlant(plant, Path("plant.yaml"))


@dataclass
class FakeWorker:
    """A worker's own answers: its machines only, bookings it holds, what it was asked."""

    index: int
    bookings: list[dict[str, Any]] = field(default_factory=list)
    asked: list[tuple[str, dict[str, Any], OtherStores]] = field(default_factory=list)
    proposal: str = "accepted"
    shown: list[list[str]] = field(default_factory=list)  # per request: machines `seen` shows

    @property
    def mine(self) -> list[str]:
        return [i for i in IDS if worker_of(i, 2) == self.index]

    async def query(self, method: str, params: dict[str, Any], platform: Platform,
              others: OtherStores, seen: MachineSeen) -> Any:
        self.asked.append((method, params, others))
        self.shown.append([m for m in IDS if seen(m)])
        asset = params.get("asset")
        milling = [m for m in self.mine if m in ("m1", "m4")]
        if method == "propose":
            return {"state": self.proposal, "machine": milling[0]}
        if asset is not None and asset not in self.mine:
            raise QueryError("not_found", f"unknown machine {asset!r}")
        if method == "bookings":
            return {"bookings": [b for b in self.bookings
                                 if params.get("reference") in (None, b["reference"])]}
        if method == "release":
            if not any(b["booking"] == params.get("booking") for b in self.bookings):
                raise QueryError("not_found", "no booking of this platform")
            return {"booking": params["booking"], "state": "released"}
        if method == "reserve":
            return {"machine": asset or others.machine, "new": True}
        return {"machines": {m: {"worker": self.index} for m in self.mine
                             if asset in (None, m)}}


@dataclass
class Pool:
    workers: list[FakeWorker]
    channels: list[WorkerChannel]
    serving: list[asyncio.Task[None]]

    async def call(self, index: int, request: dict[str, Any], within: float) -> Any:
        return await self.channels[index].call(request, within)

    def router(self) -> WorkerQueries:
        return WorkerQueries(loaded, 2, self.call, lambda: {"state": "online"}, timeout=5.0)


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    workers = [FakeWorker(0), FakeWorker(1)]
    channels, serving = [], []
    for w in workers:
        ours, theirs = socket.socketpair()
        server = WorkerChannelServer(theirs.detach(), query=w.query, status=lambda m: {},
                                     usage=lambda pid, i=w.index: Usage(1.5 + i, 1), log=LOG)
        serving.append(asyncio.create_task(server.run()))
        channel = WorkerChannel(ours, LOG)
        await channel.start()
        channels.append(channel)
    yield Pool(workers, channels, serving)
    for c in channels:
        await c.close()
    await asyncio.gather(*serving, return_exceptions=True)


async def test_one_machine_goes_to_its_owner_and_the_plant_to_everyone(pool: Pool) -> None:
    route = pool.router()
    assert {worker_of(i, 2) for i in IDS} == {0, 1}
    assert await route("state", {"asset": "m4"}, P1) == {"machines": {"m4": {"worker": 0}}}
    assert await route("state", {"asset": "m2"}, P1) == {"machines": {"m2": {"worker": 1}}}
    assert [len(w.asked) for w in pool.workers] == [1, 1]
    whole = await route("state", {}, P1)
    assert list(whole["machines"]) == IDS  # YAML order across both workers
    with pytest.raises(QueryError) as refused:
        await route("state", {"asset": "m9"}, P1)
    assert refused.value.code == "not_found"
    asked = [len(w.asked) for w in pool.workers]
    assert asked[worker_of("m9", 2)] == 3  # m9's would-be owner refused it
    described = await route("describe", {}, P1)  # the configuration: no worker asked
    assert list(described["machines"]) == IDS and [len(w.asked) for w in pool.workers] == asked
    assert await route("health", {}, P1) == {"state": "online"}


async def test_bookings_stay_with_the_machines_worker(pool: Pool) -> None:
    route = pool.router()
    w0, w1 = pool.workers
    w0.bookings = [{"booking": "b-0", "reference": "po-0", "created": "2026-12-06T08:00:00Z"}]
    w1.bookings = [{"booking": "b-1", "reference": "po-1", "created": "2026-12-06T09:00:00Z"}]
    listed = await route("bookings", {}, P1)
    assert [b["booking"] for b in listed["bookings"]] == ["b-1", "b-0"]  # newest first
    params = {"asset": "m2", "reference": "po-9", "start": "2030-01-01T08:00:00Z",
              "end": "2030-01-01T09:00:00Z"}
    assert await route("reserve", params, P1) == {"machine": "m2", "new": True}
    method, _, others = w1.asked[-1]
    assert method == "reserve" and others.usage == Usage(1.5, 1)  # worker 0's bookings
    assert not [a for a in w0.asked if a[0] == "reserve"]
    again = await route("reserve", {**params, "reference": "po-0"}, P1)
    assert again["booking"] == "b-0" and again["new"] is False  # open in the other worker
    assert await route("release", {"booking": "b-0"}, P1) == {"booking": "b-0",
                                                              "state": "released"}
    released = await route("release", {"reference": "po-1"}, P1)
    assert released["booking"] == "b-1"
    turning = await route("reserve", {"process": "turning", "reference": "y",
                                      "start": "2030-01-01T08:00:00Z",
                                      "end": "2030-01-01T09:00:00Z"}, P1)
    assert turning == {"machine": None, "new": True}  # m2, m3: worker 1 alone decides
    assert w1.asked[-1][0] == "reserve" and w1.asked[-1][2].machine is None


async def test_a_booking_by_process_over_two_workers_is_decided_as_one_process_would(
    pool: Pool,
) -> None:
    """milling: m1 (worker 1) and m4 (worker 0); m1 comes first in the YAML."""
    route = pool.router()
    w0, w1 = pool.workers
    params = {"process": "milling", "reference": "x", "start": "2030-01-01T08:00:00Z",
              "end": "2030-01-01T09:00:00Z"}
    assert await route("reserve", params, P1) == {"machine": "m1", "new": True}
    assert [a[0] for a in w0.asked] == ["bookings", "propose"]  # nothing committed there
    assert [a[0] for a in w1.asked] == ["bookings", "propose", "reserve"]
    assert w1.asked[-1][2].machine == "m1"
    w1.proposal = "requested"  # m1 would wait for a person, m4 is free: m4 wins
    assert await route("reserve", {**params, "reference": "x2"}, P1) == {"machine": "m4",
                                                                           "new": True}
    assert w0.asked[-1][0] == "reserve" and w0.asked[-1][2].machine == "m4"
    assert w0.asked[-1][2].usage == Usage(2.5, 1)  # worker 1's bookings count for the quota
    w0.proposal = w1.proposal = "declined"  # all refuse: the first candidate's refusal
    await route("reserve", {**params, "reference": "x3"}, P1)
    assert w1.asked[-1][0] == "reserve" and w1.asked[-1][2].machine == "m1"
    with pytest.raises(QueryError) as bad:
        await route("reserve", {"asset": "m1"}, P1)
    assert bad.value.code == "bad_request"  # refused in the parent, as one process does


async def test_a_gone_worker_makes_the_request_unavailable_at_once(pool: Pool) -> None:
    route = pool.router()
    pool.serving[0].cancel()
    await asyncio.gather(pool.serving[0], return_exceptions=True)  # its socket closes
    with pytest.raises(QueryError) as gone:
        async with asyncio.timeout(2):
            await route("state", {"asset": "m4"}, P1)
    assert gone.value.code == "unavailable"
    assert await route("state", {"asset": "m1"}, P1)  # the other worker still answers
    with pytest.raises(WorkerUnavailable):
        await pool.channels[0].call({"op": "status"}, 1.0)


async def test_the_destinations_hidden_machines_reach_every_worker_asked(pool: Pool) -> None:
    """A worker applies the parent's policy to the platform's bookings (edge/bookings/desk.py):
    the machines the destination hides travel with each booking request, to each worker."""
    route = pool.router()
    await route("bookings", {}, P1, lambda m: m != "m2")
    assert [w.shown for w in pool.workers] == [[["m1", "m3", "m4"]], [["m1", "m3", "m4"]]]
    await route("bookings", {}, P1)  # through no destination: every machine
    assert pool.workers[0].shown[-1] == IDS
