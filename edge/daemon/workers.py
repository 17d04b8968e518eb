"""`run --workers N`: the plant's machines spread over N worker processes on one host.

Why processes: one asyncio process tops out at one core (polling, decoding and signing
hold the GIL; only the stores' commits release it, on their writer thread); N processes
use N cores. Each worker is an ordinary gateway
(edge/daemon/gateway.py) over its slice of the machines (edge/config/workers.py: a
machine belongs to exactly one worker, so each topic's chain is written by one process),
with its own outbox, OEE, parts and bookings stores (`<state_dir>/worker-<i>/`) and MQTT
client ids (`...-w<i>`), but the gateway's signing key and identity: the same gateway id,
topics and JWKS. This parent owns what must exist once per gateway: the retained `status`
(with its will, aggregated from the workers' reports over a pipe,
edge/daemon/worker_report.py), the `keys` topic, the query endpoint (checks, nonces and
reply signing here; a machine's methods answered by its worker over a socket pair,
edge/daemon/worker_queries.py) and the status page, `/metrics` and console table, built
from worker snapshots asked for when due (edge/status/worker_source.py); the gateway
view's recent warnings are each worker's too, which ride on its reports and are kept
here across its restarts (edge/status/log_tap.py); its reloads are the parent's, one per
SIGHUP for the pool (below). Its bookings page
reads every worker's bookings store, and a decision taken there is written to the store
holding the booking, as `edge-gateway bookings accept|decline` does (edge/bookings/board.py
`WorkerDesks`); that worker signs and publishes it. It creates the signing key before any
worker starts, so workers never race to create it.

Supervision: a worker that exits unexpectedly is logged and restarted after a back-off
(1 s, doubling to 30 s, reset once a worker ran 60 s); the others are not touched, and the
restarted worker resumes its chains from its own outbox. SIGTERM/SIGINT: every worker gets
SIGTERM (each stops as a single gateway does: devices, flush, settle) and is killed if it
has not exited within `stop_timeout` (15 s, inside the unit's TimeoutStopSec); then the
parent publishes `offline` and disconnects.
SIGHUP: the parent republishes the JWKS if `keys rotate` changed the key, reads the YAML
(a file it refuses is refused once, the workers not asked), passes the SIGHUP to every
worker (each reloads its slice; a machine added to the YAML is picked up by the worker it
hashes to; one still starting takes it once it can, `sighup_held`), waits for each
worker's outcome and logs one for the pool (edge/daemon/reload_outcomes.py: one SIGHUP is
one entry on the page and one count in `edge_gateway_reloads_total`, `partial` when some
workers kept their running configuration), then takes the YAML for its status and queries
unless every worker refused it. A SIGHUP that changes N (the YAML's
`gateway.workers`, unless `--workers` was given) stops every worker as SIGTERM does and
makes `run` return `EXIT_RESTART` (the gateway view's history written for the next start,
edge/status/log_keep.py): edge/cli.py starts the command again in this process,
which moves the machines' state to their new workers (edge/daemon/repartition.py) before
the new pool starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from structlog.typing import FilteringBoundLogger

from edge import package_version
from edge.bookings.board import BookingBoard, WorkerDesks
from edge.bookings.desk import OperatorDesk, PlantHolds
from edge.bookings.store import FILENAME as BOOKINGS_FILE
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import LoadedPlant
from edge.config.workers import WorkerRole, as_worker, assignment, workers_for
from edge.daemon import systemd
from edge.daemon.console import console_loop, status_footer, status_rows
from edge.daemon.embedded_broker import EmbeddedBroker
from edge.daemon.gateway import EXIT_RESTART, RunOptions, destinations, restarting_notice
from edge.daemon.preflight import load_for_reload
from edge.daemon.reload_outcomes import (
    NOT_RUNNING,
    STOPPED,
    WorkerOutcome,
    pool_outcome,
    reported,
)
from edge.daemon.signal_loop import SignalLoop
from edge.daemon.supervisor import Supervisor, cancel_all
from edge.daemon.worker_channel import ENV_FD as CHANNEL_FD
from edge.daemon.worker_channel import WorkerChannel, WorkerUnavailable
from edge.daemon.worker_queries import WorkerQueries
from edge.daemon.worker_report import ENV_FD
from edge.egress.stack import (
    EgressPlan,
    prepare_egress,
    status_birth,
    status_payload,
    status_will,
)
from edge.egress.status import LossAlarms
from edge.egress.writer import LINGER
from edge.observability import get_logger
from edge.query.backend import health
from edge.query.handler import QueryHandler, load_platform_keys
from edge.query.nonces import NONCE_FILE, NonceStore
from edge.status.log_keep import keep as keep_recent_log
from edge.status.log_tap import TAP, RecentLog
from edge.status.worker_source import WorkerStatusSource
from edge.storage.writer import WriterThread
from edge.web.server import StatusWeb, start_status_web
from models.errors import EdgeError, PlantConfigError
from models.plant import Destination, gateway_topic
from models.sample import utc_now

Command = Callable[[WorkerRole], list[str]]
"""The argv that starts worker `role` (the parent's own command line, plus `--worker`)."""

_SYSTEMD_ONLY_PARENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_SUMMED = ("pending", "pending_bytes", "sent", "replayed", "dropped", "rejected",
           "lost_records", "failovers")


@contextlib.contextmanager
def sighup_held() -> Iterator[None]:
    """SIGHUP blocked in this thread (the event loop's) meanwhile. Why: a process spawned
    meanwhile keeps the block across exec, so a SIGHUP passed to a worker that is still
    importing and loading the YAML (seconds on a busy box, and systemd lets a reload
    through once the parent is READY) waits, pending, until the worker's gateway has its
    handler and unblocks it (edge/daemon/gateway.py `Gateway.run`), instead of ending it
    (SIGHUP's default action) and its reload with it. One sent to the parent meanwhile
    waits too, until the mask is restored (or another thread of the parent takes it)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class RestartBackoff:
    """How long to wait before restarting a worker that exited: `first` s, doubling while it
    keeps failing, at most `cap` s, back to `first` once a run lasted `healthy_after` s.
    Why: a worker that crashes at start (a broken device library, a full disk) must not spin
    a core restarting; one that crashed after a long healthy run comes back at once."""

    def __init__(self, first: float = 1.0, cap: float = 30.0,
                 healthy_after: float = 60.0) -> None:
        self.first, self.cap, self.healthy_after = first, cap, healthy_after
        self._next = first

    def delay(self, ran: float) -> float:
        """The wait before the next start, after a run of `ran` s."""
        if ran >= self.healthy_after:
            self._next = self.first
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay


@dataclass
class WorkerState:
    """One worker process as the parent sees it."""

    role: WorkerRole
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    channel: WorkerChannel | None = None
    recent: RecentLog = field(default_factory=RecentLog)
    """Its recent warnings as its reports brought them; kept when it restarts (its new
    process starts empty), for the status page."""
    ended: int = 0
    """How many of its processes have ended, their reports read to the last (a reload
    waits for the outcome of the process it signalled, or for that process's end)."""

    def summary(self, machines: list[str]) -> dict[str, Any]:
        alive = self.process is not None and self.process.returncode is None
        return {"index": self.role.index, "pid": self.process.pid if alive and self.process
                else None, "alive": alive, "restarts": self.restarts, "machines": machines}


def aggregate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' reports as one gateway's status detail: counters summed per
    destination, `connected` only when every worker is, devices and losses merged (each
    machine is in one worker's report only)."""
    dests: dict[str, dict[str, Any]] = {}
    devices: dict[str, str] = {}
    per_device: dict[str, dict[str, Any]] = {"device_reasons": {}, "device_faults": {}}
    lost, by_machine, gaps, gaps_by_machine = 0, {}, 0, {}
    refused: dict[str, Any] = {"replaced": 0, "dropped": 0, "by_machine": {}}
    for rep in reports:
        for name, st in rep.get("destinations", {}).items():
            agg = dests.setdefault(name, {"connected": True, **dict.fromkeys(_SUMMED, 0)})
            agg["connected"] = agg["connected"] and bool(st.get("connected"))
            agg["broker"] = st.get("broker")
            for key in _SUMMED:
                agg[key] += int(st.get(key, 0))
        devices.update(rep.get("devices", {}))
        for key, merged in per_device.items():
            merged.update(rep.get(key, {}))
        unsignable = rep.get("unsignable", {})
        for key in ("replaced", "dropped"):
            refused[key] += int(unsignable.get(key, 0))
        refused["by_machine"].update(unsignable.get("by_machine", {}))
        losses = rep.get("losses", {})
        lost += int(losses.get("lost_records", 0))
        by_machine.update(losses.get("by_machine", {}))
        gaps += int(losses.get("unreported_gaps", 0))
        gaps_by_machine.update(losses.get("unreported_by_machine", {}))
    return {
        "destinations": dests,
        "devices": dict(sorted(devices.items())),
        "losses": {"lost_records": lost, "by_machine": dict(sorted(by_machine.items())),
                   "unreported_gaps": gaps,
                   "unreported_by_machine": dict(sorted(gaps_by_machine.items()))},
        "unsignable": {**refused, "by_machine": dict(sorted(refused["by_machine"].items()))},
        **{key: dict(sorted(m.items())) for key, m in per_device.items() if m},
    }


def polls_nothing(loaded: LoadedPlant) -> LoadedPlant:
    """`loaded` without the adapters' settings: the parent opens no device, and they are
    the plant's largest part per machine (validated points, decoders' inputs)."""
    return replace(loaded, settings={})


def status_news(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """True when a worker's report holds what one process's status says within a second
    (edge/egress/status.py, docs/protocol.md "Status"): a device changed state, a link to
    a destination came or went, or the signer began refusing a machine's values. The
    counters alone wait for the periodic status."""

    def links(report: dict[str, Any]) -> dict[str, Any]:
        return {d: st.get("connected") for d, st in report.get("destinations", {}).items()}

    def refused(report: dict[str, Any]) -> set[str]:
        return set(report.get("unsignable", {}).get("by_machine", {}))

    return (
        before.get("devices") != after.get("devices")
        or links(before) != links(after)
        or not refused(after) <= refused(before)
    )


class WorkerPool:
    """Starts, reports on and supervises the worker processes of one gateway."""

    def __init__(
        self,
        loaded: LoadedPlant,
        plan: EgressPlan,
        count: int,
        command: Command,
        log: FilteringBoundLogger,
        *,
        status_every: float = 30.0,
        stop_timeout: float = 15.0,  # below the unit's TimeoutStopSec=20s: room for offline
        console_every: float | None = None,
        workers_arg: int | None = None,
        reload_within: float = 60.0,
    ) -> None:
        self.loaded = polls_nothing(loaded)
        self.plan = plan
        self.log = log
        self.workers_arg = workers_arg  # `run --workers` (0: auto), else the YAML decides
        self.restart_as: int | None = None  # a SIGHUP asked for this many workers
        self.command = command
        self.status_every = status_every
        self.stop_timeout = stop_timeout
        self.console_every = console_every  # None: no console table
        self.workers = [WorkerState(WorkerRole(i, count)) for i in range(count)]
        # the single gateway's signal loop: a SIGTERM abandons a reload still parsing
        self.signals = SignalLoop(self, log)
        self._stopping = self.signals.stop
        self._spawning = asyncio.Lock()  # one spawn at a time: each restores the mask it found
        self._reload = self.signals.reload
        self._changed = asyncio.Event()
        self._reported = asyncio.Event()  # a report came, or a worker process ended
        self.reload_within = reload_within  # a worker's reload outcome, its start included
        self._jwks = plan.jwks
        # outbox_full_losing_data, from the workers' summed counters as one process does
        self.alarms = LossAlarms(log)
        self._signer = plan.signer
        self.started = utc_now()
        # the gateway's one query endpoint: nonces in the same file as one process keeps,
        # committed on the parent's own writer thread, off its event loop (each worker
        # has its own for its stores)
        self.query_writes = WriterThread(name="query-writer", linger=LINGER)
        self.nonces = NonceStore(loaded.state_dir / NONCE_FILE, logger=log,
                                 writes=self.query_writes)
        self.queries = QueryHandler(
            loaded.plant, None, signer=lambda: self._signer, keys={}, logger=log,
            nonces=self.nonces,
            dispatch=WorkerQueries(lambda: self.loaded, count, self.call, self.health),
        )
        # the bookings page: every worker's store, read (and decided in) as the command
        # line does; each worker signs and publishes what changed in its own store
        holds = PlantHolds(lambda: self.loaded, BookingsFiles(log))
        self.booking_desks = WorkerDesks(
            [as_worker(loaded, w.role).state_dir / BOOKINGS_FILE for w in self.workers],
            lambda store: OperatorDesk(lambda: self.loaded, store, holds), log)
        self.booking_board = BookingBoard(self.booking_desks, lambda: None, log)
        self.status = WorkerStatusSource(
            plant=lambda: self.loaded.plant, workers=count, fetch=self._snapshot,
            kid=lambda: self._signer.kid, queries=lambda: self.queries.by_method,
            version=package_version(), started=self.started, tap=TAP,
            worker_logs=[w.recent for w in self.workers],
        )

    # --- what the parent asks of its workers ------------------------------------------

    async def call(self, index: int, request: dict[str, Any], within: float) -> Any:
        """Worker `index`'s answer to `request` (edge/daemon/worker_channel.py)."""
        channel = self.workers[index].channel
        if channel is None:
            raise WorkerUnavailable(f"worker {index} is not running")
        return await channel.call(request, within)

    async def _snapshot(self, index: int, machine: str | None) -> dict[str, Any]:
        answer = await self.call(index, {"op": "status", "machine": machine}, 5.0)
        if not isinstance(answer, dict):
            raise WorkerUnavailable(f"worker {index} sent no status")
        return answer

    def health(self) -> dict[str, Any]:
        """`health` from the workers' reports, with the parent's query counters."""
        d = self.status_detail()
        return health(self.started, devices=d["devices"],
                      detail={k: d[k] for k in ("device_reasons", "device_faults") if k in d},
                      destinations=d["destinations"], losses=d["losses"],
                      unsignable=d["unsignable"], queries=dict(self.queries.counts))

    # --- status -----------------------------------------------------------------------

    def status_detail(self) -> dict[str, Any]:
        slices = assignment(self.loaded.enabled_machines(), len(self.workers))
        detail = aggregate([w.report for w in self.workers])
        detail["workers"] = [w.summary(slices[w.role.index]) for w in self.workers]
        return detail

    def payload(self, destination: Destination) -> bytes:
        """The aggregated status as `destination` may see it (edge/egress/status_scope.py)."""
        detail = self.status_detail()
        # the single-process status's order: `alarms` right after `destinations`
        detail = {"destinations": detail.pop("destinations"), "alarms": self.alarms.names(),
                  **detail}
        return status_payload(self.loaded, "online", detail, self._current(destination))

    def _current(self, destination: Destination) -> Destination:
        """`destination` as the YAML says now: a reload keeps the parent's links but may
        narrow a destination's `machines` (the workers' streams and the queries obey the
        new filter at once, so the status does too)."""
        return next((d for d in self.loaded.plant.destinations if d.id == destination.id),
                    destination)

    async def _status_loop(self) -> None:
        """Publish the aggregated status every `status_every` s, at once after a worker
        starts or exits or reports a change one process would publish at once
        (`status_news`), and after every reconnect (a broker restart loses retained)."""
        topic = gateway_topic(self.loaded.plant, "status")
        seen: dict[str, int] = {}
        last = 0.0
        loop = asyncio.get_running_loop()
        while True:
            for name, tr in self.plan.transports.items():
                if tr.connected and seen.get(name) != tr.stats["reconnects"]:
                    seen[name] = tr.stats["reconnects"]
                    last = 0.0
            if self._changed.is_set():
                self._changed.clear()
                last = 0.0
            if self.alarms.check(self.status_detail()["destinations"]):
                last = 0.0
            if loop.time() - last >= self.status_every:
                last = loop.time()
                for dest in self.plan.destinations:  # each sees its own part only
                    tr = self.plan.transports[dest.id]
                    if tr.connected:
                        with contextlib.suppress(EdgeError):
                            await tr.publish(topic, self.payload(dest), qos=1, retain=True)
                            self.alarms.carried(dest.id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._changed.wait()

    # --- one worker -------------------------------------------------------------------

    async def _read_reports(self, worker: WorkerState, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**22)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        try:
            while line := await reader.readline():
                with contextlib.suppress(ValueError):  # a torn line: the next one follows
                    report = json.loads(line)
                    news = report.pop("log", None)
                    if not worker.report or status_news(worker.report, report):
                        self._changed.set()
                    worker.report = report
                    self._reported.set()
                    if news:
                        with contextlib.suppress(TypeError, KeyError):  # ValueError: above
                            worker.recent.absorb(news)
        finally:
            transport.close()

    async def _supervise(self, worker: WorkerState) -> None:
        """Run worker `worker` until the pool stops, restarting it when it exits."""
        backoff = RestartBackoff()
        while not self._stopping.is_set():
            read_fd, write_fd = os.pipe()
            ours, theirs = socket.socketpair()  # the worker channel: requests and answers
            # systemd takes READY and watchdog pings from the main process only (the
            # parent); a worker that sent them would fill the journal with refusals
            env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ONLY_PARENT}
            env[ENV_FD] = str(write_fd)
            env[CHANNEL_FD] = str(theirs.fileno())
            try:
                # its own process group: a terminal's Ctrl-C reaches the parent only, which
                # stops each worker with SIGTERM; a worker still importing when the Ctrl-C
                # came printed a KeyboardInterrupt traceback. SIGHUP held until it can
                # reload (`sighup_held`).
                async with self._spawning:
                    with sighup_held():
                        worker.process = await asyncio.create_subprocess_exec(
                            *self.command(worker.role), env=env,
                            pass_fds=(write_fd, theirs.fileno()), process_group=0)
            except BaseException:
                ours.close()
                raise
            finally:
                os.close(write_fd)
                theirs.close()
            worker.channel = WorkerChannel(ours, self.log)
            await worker.channel.start()
            worker.started = time.monotonic()
            worker.report = {}
            self.log.info("worker_started", worker=worker.role.index,
                          pid=worker.process.pid, restarts=worker.restarts)
            reading = asyncio.create_task(self._read_reports(worker, read_fd))
            code = await worker.process.wait()
            await asyncio.gather(reading, return_exceptions=True)
            worker.ended += 1
            self._reported.set()
            channel, worker.channel = worker.channel, None
            await channel.close()  # a request still waiting is answered `unavailable`
            self._changed.set()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - worker.started
            delay = backoff.delay(ran)
            self.log.error("worker_exited_restarting", worker=worker.role.index,
                           exit_code=code, ran_s=round(ran, 1), restart_in_s=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            worker.restarts += 1

    def _signal_all(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.process is not None and w.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.process.send_signal(sig)

    # --- the parent -------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        plant = self.loaded.plant
        self.queries.reconfigure(plant, load_platform_keys(plant.platforms))
        for tr in self.plan.transports.values():
            await tr.start()
        tasks = [asyncio.create_task(self._supervise(w), name=f"worker-{w.role.index}")
                 for w in self.workers]
        status = asyncio.create_task(self._status_loop(), name="status")
        watchdog = asyncio.create_task(systemd.watchdog_loop(), name="watchdog")
        supervisor = Supervisor(self.log)
        serving = [supervisor.supervise(f"query-{name}", partial(self.queries.serve, tr, name))
                   for name, tr in self.plan.transports.items() if name not in self.plan.nodes]
        web: StatusWeb | None = await start_status_web(
            plant.gateway.web, self.status, self.log, title=f"plant {plant.gateway.site}",
            prepare=self.status.refresh, bookings=self.booking_board)
        if self.console_every is not None:
            serving.append(asyncio.create_task(console_loop(
                lambda: (status_rows(self.status), status_footer(self.status)),
                self.console_every, prepare=self.status.refresh), name="console"))
        systemd.notify("READY=1\nSTATUS=running")
        self.log.info("gateway_started", workers=len(self.workers),
                      machines=len(self.loaded.enabled_machines()))
        try:
            await self.signals.serve()
        finally:
            systemd.notify(restarting_notice(self.restart_as))
            self.log.info("gateway_stopping")
            self._stopping.set()
            await cancel_all(serving)
            if web is not None:
                await web.stop()
            self._signal_all(signal.SIGTERM)
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            if pending:
                self.log.error("workers_not_stopped_killing", count=len(pending))
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(pending)
            for task in (status, watchdog):
                task.cancel()
            await asyncio.gather(status, watchdog, return_exceptions=True)
            topic = gateway_topic(self.loaded.plant, "status")
            for dest in self.plan.destinations:
                tr = self.plan.transports[dest.id]
                if tr.connected:
                    offline = status_payload(self.loaded, "offline",
                                             destination=self._current(dest))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(tr.publish(topic, offline, qos=1, retain=True),
                                               timeout=2.0)
                await tr.stop()
            await self.query_writes.close()
            self.nonces.close()
            self.booking_desks.close()
            self.log.info("gateway_stopped")
            if self.restart_as is not None:  # the page's history for the restarted command
                keep_recent_log(self.loaded.state_dir, TAP.recent,
                                [w.recent for w in self.workers], self.log)
        return 0 if self.restart_as is None else EXIT_RESTART

    committing = False
    """For the signal loop (`ReloadStep`): `apply` awaits only its parse and the workers'
    outcomes, so a stop may always abandon it (the workers are stopped next)."""

    async def apply(self) -> None:
        """The parent republishes the JWKS first (`keys rotate`: the new public key goes
        out before any worker signs with it), then every worker reloads its own slice; the
        parent logs one outcome for the pool and, unless every worker refused the file,
        takes it for the machine list of its status and its queries."""
        self._announce_keys()
        self.log.info("reload_started", file=str(self.loaded.path))
        # A file the parent refuses is refused once, as by a single process
        # (edge/daemon/reload.py): the parent logs what the page's reload list and
        # `edge_gateway_reloads_total` count, and the workers are not asked, so the pool
        # neither counts it once per worker nor applies a file the parent kept out
        try:
            new = await load_for_reload(self.loaded.path, self.loaded.share)
            count = workers_for(new, self.workers_arg)  # a `gateway.workers` host refuses
            keys = load_platform_keys(new.plant.platforms)
        except PlantConfigError as exc:
            self.log.error("reload_rejected_keeping_running_config", problems=exc.lines())
            return
        except (EdgeError, OSError) as exc:
            self.log.error("reload_preparation_failed_keeping_running_config", error=str(exc))
            return
        if count != len(self.workers):  # stop all, move the machines, start the new pool
            self.log.warning("workers_changed_restarting", running=len(self.workers),
                             workers=count)
            self.restart_as = count
            self._stopping.set()
            return
        result, lines = pool_outcome(await self._reload_workers())
        if result == "rejected":  # no worker runs the file: neither does the parent
            self.log.error("reload_rejected_keeping_running_config", pool=lines)
            return
        self.queries.reconfigure(new.plant, keys)
        self.loaded = polls_nothing(new)
        self._renew_birth_and_will()
        self._changed.set()
        if result == "ok":
            self.log.info("reloaded", pool=lines)
        else:
            self.log.error("reload_partially_applied", pool=lines)

    async def _reload_workers(self) -> list[WorkerOutcome]:
        """Pass the SIGHUP to every running worker and return each worker's outcome: the
        first reload it began after the signal (a worker still starting takes the signal
        once it can, `sighup_held`), the end of its process, or silence for
        `reload_within` s. A worker not running reads the file as it starts."""
        since = time.monotonic()  # the host's clock, as the workers' `LastReload.began`
        asked = {w.role.index: (w.process, w.ended) for w in self.workers
                 if w.process is not None and w.process.returncode is None}
        self._signal_all(signal.SIGHUP)
        found = {w.role.index: WorkerOutcome(w.role.index, "ok", NOT_RUNNING)
                 for w in self.workers if w.role.index not in asked}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reload_within
        while True:
            self._reported.clear()
            for index, (process, ended) in asked.items():
                worker = self.workers[index]
                if index in found:
                    continue
                last = reported(worker.report) if worker.process is process else None
                if last is not None and last.began >= since:
                    found[index] = WorkerOutcome(index, last.result, last.why)
                elif worker.ended != ended:
                    found[index] = WorkerOutcome(index, "unknown", STOPPED)
            if len(found) == len(self.workers) or loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._reported.wait()
        silent = f"no outcome within {self.reload_within:g} s"
        return [found.get(w.role.index) or WorkerOutcome(w.role.index, "unknown", silent)
                for w in self.workers]

    def _renew_birth_and_will(self) -> None:
        """Each destination's birth and will as the reloaded YAML says (its `machines`
        filter may be narrower, the machine list other): the detailed status that follows
        at once replaces the retained message, the birth is what the next connect
        publishes, and the will is registered with the next connect (the broker keeps the
        current link's until then; edge/transport/mqtt.py `set_birth_and_will`)."""
        for dest in self.plan.destinations:
            if dest.format != "sparkplug_b":  # its will is the node's NDEATH
                current = self._current(dest)
                self.plan.transports[dest.id].set_birth_and_will(
                    status_birth(self.loaded, current), status_will(self.loaded, current))

    def _announce_keys(self) -> None:
        try:
            jwks = json.dumps(self.plan.keystore.public_jwks(), separators=(",", ":")).encode()
            signer = self.plan.keystore.load(self.log) if jwks != self._jwks else self._signer
        except EdgeError as exc:
            self.log.error("signing_key_reload_failed_keeping_current", error=str(exc))
            return
        if jwks != self._jwks:
            self._jwks = jwks
            self._signer = signer  # query replies are signed in the parent
            keys = gateway_topic(self.loaded.plant, "keys")
            for tr in self.plan.transports.values():
                tr.set_announcements([(keys, jwks, True)])
            self.log.info("signing_key_reloaded")


async def serve(loaded: LoadedPlant, options: RunOptions, count: int, command: Command) -> int:
    """Run `loaded` as `count` workers under one parent (see the module docstring). With
    no destinations the parent runs the embedded broker and workers are pointed at it."""
    log = get_logger(gateway=loaded.plant.gateway.id)
    broker: EmbeddedBroker | None = None
    if not options.broker_url and not loaded.plant.destinations:
        broker = EmbeddedBroker(*options.embedded_broker)
        await broker.start()
        log.info("embedded_broker_started", url=destinations(loaded, options)[0].url)
    try:
        plan = prepare_egress(loaded, destinations(loaded, options), log)  # creates the key
        console = options.console_every if options.console else None
        return await WorkerPool(loaded, plan, count, command, log,
                                console_every=console, workers_arg=options.workers).run()
    finally:
        if broker is not None:
            await broker.stop()


__all__ = ["RestartBackoff", "WorkerPool", "aggregate", "serve"]
