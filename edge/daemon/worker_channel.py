"""The parent's requests to a worker process (`run --workers N`) and their answers.

Why a socket pair beside the report pipe (edge/daemon/worker_report.py): reports flow one
way, once a second, and may be dropped; a query or a status-page request needs an answer,
so it travels on a channel of its own, one JSON line each way, matched by `id`. The parent
creates the pair and passes one end to the worker (its fd number in $EDGE_WORKER_CHANNEL_FD);
only the parent ever writes a request, so a worker answers only what the parent, which
checked signature, nonce, rate and scope, decided to ask.

Requests (`op`): `query` (`method`, `params`, `platform`: a request the parent admitted,
`hidden`: the machines the destination it came through hides, by the parent's policy;
answered by the worker's own query backend, edge/query/handler.py `answer_locally`; for
`reserve` and `propose`, `elsewhere`: the platform's bookings in the other workers, for
its quota, and `machine`: the one candidate the parent chose for a `reserve` by process),
`usage` (a platform's open bookings in this worker: hours, count) and `status` (the
worker's status-page snapshot, edge/status/snapshot.py). Answers are
`{"id", "ok": true, "result"}` or `{"id", "ok": false, "error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge.query.handler import QueryError
from models.booking import MachineSeen, OtherStores, Usage
from models.errors import EdgeError
from models.plant import Platform

ENV_FD = "EDGE_WORKER_CHANNEL_FD"
LINE_LIMIT = 2**26
"""A line may be a whole worker's AAS environments; beyond this the channel is reset."""


class WorkerUnavailable(EdgeError):
    """The worker is not running (restarting), or did not answer in time."""


class WorkerChannel:
    """The parent's end: `call` sends one request and waits for its answer."""

    def __init__(self, sock: socket.socket, log: FilteringBoundLogger) -> None:
        self.sock = sock
        self.log = log
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self.closed = False

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock,
                                                                  limit=LINE_LIMIT)
        self._reading = asyncio.create_task(self._read(reader), name="worker-channel")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    answer = json.loads(line)
                    future = self._waiting.pop(int(answer["id"]), None)
                    if future is not None and not future.done():
                        future.set_result(answer)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            self.log.warning("worker_channel_broken", error=str(exc))
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(WorkerUnavailable("the worker process stopped"))
        self._waiting.clear()

    async def call(self, request: dict[str, Any], within: float) -> Any:
        """The request's `result`; QueryError for the worker's refusal; WorkerUnavailable
        when the worker is gone or silent for `within` s."""
        if self.closed or self._writer is None:
            raise WorkerUnavailable("the worker process is not running")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            self._writer.write(json.dumps({**request, "id": rid}).encode() + b"\n")
            async with asyncio.timeout(within):
                await self._writer.drain()
                answer = await future
        except (TimeoutError, OSError) as exc:
            raise WorkerUnavailable(f"the worker process did not answer: {exc!r}") from exc
        finally:
            self._waiting.pop(rid, None)
        if answer.get("ok"):
            return answer.get("result")
        error = answer.get("error") or {}
        raise QueryError(str(error.get("code", "internal")), str(error.get("message", "")))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        self._fail_all()


Query = Callable[[str, dict[str, Any], Platform, OtherStores, MachineSeen], Awaitable[Any]]
"""A worker's own answer to an admitted request (QueryError for a refusal), given what the
other workers' booking stores bring to a booking decision."""


class WorkerChannelServer:
    """The worker's end: answers the parent's requests, one at a time, until the parent
    closes the channel (the report pipe notices a parent that is gone)."""

    def __init__(
        self,
        fd: int,
        *,
        query: Query,
        status: Callable[[str | None], dict[str, Any]],
        usage: Callable[[str], Usage],
        log: FilteringBoundLogger,
    ) -> None:
        self.fd = fd
        self.query = query
        self.status = status
        self.usage = usage
        self.log = log

    async def run(self) -> None:
        sock = socket.socket(fileno=self.fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        try:
            while line := await reader.readline():
                writer.write(await self.answer(line) + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def answer(self, line: bytes) -> bytes:
        """One answer line (without its newline) to one request line."""
        rid: Any = None
        try:
            request = json.loads(line)
            rid = request["id"]
            op = request.get("op")
            if op == "status":
                result: Any = self.status(request.get("machine"))
            elif op == "usage":
                held = self.usage(str(request["platform"]))
                result = [held.hours, held.bookings]
            else:
                platform = Platform.model_validate(request["platform"])
                hours, count = request.get("elsewhere") or (0.0, 0)
                others = OtherStores(Usage(float(hours), int(count)), request.get("machine"))
                hidden = frozenset(str(m) for m in request.get("hidden") or ())
                result = await self.query(str(request["method"]), dict(request["params"]),
                                          platform, others, partial(_shown, hidden))
            return _line({"id": rid, "ok": True, "result": result})
        except QueryError as exc:
            return _line({"id": rid, "ok": False,
                          "error": {"code": exc.code, "message": exc.message}})
        except Exception:  # a bug: answer it, keep serving, log the traceback
            self.log.exception("worker_channel_request_failed")
            return _line({"id": rid, "ok": False,
                          "error": {"code": "internal", "message": "internal error"}})


def _shown(hidden: frozenset[str], machine: str) -> bool:
    """The parent's `MachineSeen`, from the machines it said the destination hides."""
    return machine not in hidden


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode()


__all__ = ["ENV_FD", "WorkerChannel", "WorkerChannelServer", "WorkerUnavailable"]
