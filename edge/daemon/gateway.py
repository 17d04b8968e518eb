"""The gateway, assembled from its stages. The data flow (also drawn in README.md)::

    device --protocol--> adapter --Sample--> runner --> asset twin (AAS) --> OEE engine
                                                             |                    |
                                                             v                    v
                           egress: policy per destination -> envelope (batch, seq, prev hash)
                                   -> signer (JWS Ed25519) -> outbox (SQLite WAL) -> MQTT
    platform --MQTT request--> query handler (authorize) --> twin / OEE / capacity --> signed reply

Stages (docs/architecture.md): `DeviceFleet` (edge/devices/fleet.py), `EgressStack` behind an
`EgressSlot` (edge/egress/stack.py) with its `StatusReporter` (edge/egress/status.py),
`OeePublisher` (edge/kpi/publisher.py), `CapacityPublisher` (edge/capacity/), `QueryHandler`
over a `QueryBackend` (edge/query/), all background loops under one `Supervisor`. This
module only wires them and runs: signals, start and stop order, reload dispatch.

SIGTERM/SIGINT stop it cleanly (devices first, then flush, offline status, disconnect).
SIGHUP reloads the YAML (edge/daemon/reload.py decides what changed): parsed off the event
loop with size and nesting limits, the new egress/query side prepared before the old one
stops, the running configuration kept when anything fails, and only what changed restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from edge import package_version
from edge.bookings.board import BookingBoard
from edge.bookings.desk import BookingDesk, OperatorDesk, PlantHolds, capacity_held, part_links
from edge.bookings.publisher import BookingPublisher, WindowEvidence
from edge.bookings.store import FILENAME as BOOKINGS_FILE
from edge.bookings.store import BookingStore
from edge.capacity.bookings import BookingsFiles
from edge.capacity.publisher import CapacityPublisher, CapacityRecords
from edge.config.loader import LoadedPlant
from edge.daemon import systemd
from edge.daemon.console import MachineRow, console_loop, machine_rows
from edge.daemon.embedded_broker import EmbeddedBroker
from edge.daemon.reload import Reloader
from edge.daemon.signal_loop import SignalLoop
from edge.daemon.supervisor import Supervisor, cancel_all
from edge.daemon.worker_channel import WorkerChannelServer
from edge.daemon.worker_report import WorkerReporter
from edge.devices.fleet import DeviceFleet
from edge.egress.loss import LossLedger
from edge.egress.stack import EgressPlan, EgressSlot, EgressStack, prepare_egress
from edge.egress.status import StatusReporter
from edge.egress.status_scope import device_detail
from edge.egress.unsignable import UnsignableRecords
from edge.egress.writer import LINGER
from edge.kpi.publisher import OeePublisher
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME as OEE_FILE
from edge.kpi.store import OeeStore
from edge.observability import get_logger
from edge.parts.energy import EnergyWindows
from edge.parts.recorder import PartRecorder
from edge.parts.store import FILENAME as PARTS_FILE
from edge.parts.store import PartStore
from edge.query.backend import QueryBackend
from edge.query.handler import QueryHandler, load_platform_keys
from edge.query.nonces import NONCE_FILE, NonceStore
from edge.status.gateway_source import GatewayStatusSource
from edge.status.log_keep import keep as keep_recent_log
from edge.status.log_tap import TAP, LogNews
from edge.status.snapshot import worker_snapshot
from edge.storage.wal import WalStore, checkpoint_loop
from edge.storage.writer import StoreWriter, WriterThread
from models.plant import Destination
from models.sample import utc_now

if TYPE_CHECKING:
    from edge.web.server import StatusWeb

EMBEDDED_BROKER = ("127.0.0.1", 1883)
EXIT_RESTART = 75
"""What `run` returns when a SIGHUP changed the worker count: everything stopped as by
SIGTERM, and edge/cli.py starts the command again (in the same process), which moves the
machines' state to their new workers (edge/daemon/repartition.py) and starts the new pool."""


@dataclass
class RunOptions:
    broker_url: str | None = None
    with_simulators: bool = False
    console: bool = False
    console_every: float = 5.0
    embedded_broker: tuple[str, int] = EMBEDDED_BROKER
    stats_fd: int | None = None  # a worker process: where it reports to its parent
    channel_fd: int | None = None  # a worker process: where its parent asks it
    workers: int | None = None  # `run --workers` (0: auto); None: the YAML's gateway.workers


def restarting_notice(workers: int | None) -> str:
    """What systemd hears when the gateway stops: STOPPING, or, before the same process
    starts again with another worker count, RELOADING (the unit is not being stopped; the
    new start sends READY)."""
    if workers is None:
        return "STOPPING=1"
    return f"RELOADING=1\nSTATUS=moving machines to {workers} worker(s)"


def destinations(loaded: LoadedPlant, options: RunOptions) -> list[Destination]:
    if options.broker_url:
        return [Destination(id="cli", url=options.broker_url)]
    if loaded.plant.destinations:
        return list(loaded.plant.destinations)
    host, port = options.embedded_broker
    return [Destination(id="embedded", url=f"mqtt://{host}:{port}")]


class Gateway:
    def __init__(self, loaded: LoadedPlant, options: RunOptions | None = None) -> None:
        self.loaded = loaded
        self.options = options or RunOptions()
        role = loaded.worker  # `run --workers N`: say which process a line comes from
        self.log: FilteringBoundLogger = get_logger(
            gateway=loaded.plant.gateway.id, **({"worker": role.index} if role else {})
        )
        self.supervisor = Supervisor(self.log)
        self.slot = EgressSlot()
        self.losses = LossLedger()  # survives reloads: counts since the process started
        self.unsignable = UnsignableRecords(self.log.warning)  # likewise
        oee = loaded.plant.gateway.oee
        self.oee_store = OeeStore(
            loaded.state_dir / OEE_FILE,
            raw_retention_days=oee.raw_retention_days,
            window_retention_days=oee.window_retention_days,
            logger=self.log,
        )
        # ONE writer thread commits the OEE store's and the outbox's writes, in the order
        # the loop queued them (edge/storage/writer.py): a part count's save is queued
        # (`KpiService.on_state`) before the state envelope showing it is sealed, so it
        # commits before that envelope's append and a SIGKILL never loses a part the
        # platform has seen (tests/end_to_end/test_oee_gap.py). Two threads would not
        # order them. In a worker (`run --workers N`) this is the worker's own thread,
        # over the worker's own stores.
        self.store_writes = WriterThread(name="store-writer", linger=LINGER)
        self.kpi = KpiService(
            loaded.plant,
            self.oee_store,
            publish_every=oee.publish_every,
            logger=self.log,
            writes=StoreWriter(self.oee_store, self.store_writes),
        )
        config = self.current
        self.parts_store = PartStore(loaded.state_dir / PARTS_FILE, logger=self.log,
                                     writes=self.store_writes)
        # decisions committed on the store writer thread, the reply waiting for them
        self.bookings_store = BookingStore(loaded.state_dir / BOOKINGS_FILE, logger=self.log,
                                           writes=self.store_writes)
        self.parts = PartRecorder(
            config, self.parts_store, self.slot, self.log,
            booking_of=part_links(self.bookings_store),
        )
        self.slot.observe_sealed("part", self.parts.on_sealed)
        self.energy = EnergyWindows(config, self.parts_store, self.parts)
        self.fleet = DeviceFleet(config, self.slot, self.kpi, self.log, observers=[self.parts])
        files = BookingsFiles(self.log)
        self.capacity = CapacityRecords(
            config, self.fleet, self.kpi, files, held=capacity_held(config, self.bookings_store),
            energy=self.energy.by_program,
        )
        self.capacity_publisher = CapacityPublisher(
            self.capacity, self.fleet, self.slot, config, self.log
        )
        self.booking_publisher = BookingPublisher(
            self.bookings_store,
            self.slot,
            config,
            refresh=self.capacity_publisher.refresh_now,
            evidence=WindowEvidence(self.kpi.window, self.parts.records, self.parts),
            log=self.log,
        )
        holds = PlantHolds(config, files)
        # the status page's decisions: the command line's desk, published at once
        self.booking_board = BookingBoard(
            OperatorDesk(config, self.bookings_store, holds),
            self.booking_publisher.flush,
            self.log,
        )
        self.desk = desk = BookingDesk(
            config,
            self.bookings_store,
            holds,
            self.capacity.busy_until,
            self.booking_publisher.flush,
        )
        backend = QueryBackend(
            config,
            self.fleet,
            self.kpi,
            self.capacity,
            stats=self.slot.destination_stats,
            counts=lambda: dict(self.queries.counts),
            losses=self.losses.snapshot,
            unsignable=self.unsignable.snapshot,
            bookings=desk,
            parts=self.parts_store,
            energy=self.energy,
        )
        # nonces on disk, for the life of the process: neither a reload nor a restart
        # opens a replay window (docs/protocol.md, "Query refusals, nonces and scope")
        # (committed on the store writer thread, the reply waiting for them)
        self.nonces = NonceStore(loaded.state_dir / NONCE_FILE, logger=self.log,
                                 writes=self.store_writes)
        self.queries = QueryHandler(
            loaded.plant,
            backend,
            signer=self.slot.signer,
            keys={},
            logger=self.log,
            nonces=self.nonces,
        )
        self.status = GatewayStatusSource(
            plant=lambda: self.loaded.plant,
            devices=lambda: self.fleet.devices,
            kpi=lambda: self.kpi,
            egress=lambda: self.slot.current,
            queries=lambda: self.queries.by_method,
            unsignable=self.unsignable.by_machine,
            version=package_version(),
            started=utc_now(),
            tap=TAP,
        )
        self.reloader = Reloader(self)
        self.signals = SignalLoop(self.reloader, self.log)
        self._stop = self.signals.stop
        self._reload = self.signals.reload
        self.restart_as: int | None = None  # a SIGHUP asked for this many workers
        self._reporter: WorkerReporter | None = None

    def current(self) -> LoadedPlant:
        return self.loaded

    def _wal_stores(self) -> list[WalStore]:
        """The SQLite stores whose WAL `checkpoint_loop` truncates (the outbox may change)."""
        stack = self.slot.current
        own: list[WalStore] = [self.oee_store, self.bookings_store, self.nonces]
        return own if stack is None else [*own, stack.outbox]

    def destinations(self, loaded: LoadedPlant | None = None) -> list[Destination]:
        return destinations(loaded or self.loaded, self.options)

    async def start_egress(self, plan: EgressPlan) -> int:
        """Start a prepared egress side with its status loop and query serving, and put it
        behind the slot; returns how many offers held during a swap went to it."""
        stack = await EgressStack.start(plan, self.supervisor, self.log, losses=self.losses,
                                        unsignable=self.unsignable, writes=self.store_writes)
        report = self._worker_reporter()
        if report is not None:  # the parent has status
            stack.attach("worker-report", report.run)
            return self.slot.attach(stack)
        status = StatusReporter(stack, self.fleet, self.current, self.supervisor, self.log)
        stack.attach("status", status.run)
        for dest_id, tr in stack.signed_transports().items():
            stack.attach(f"query-{dest_id}", partial(self.queries.serve, tr, dest_id))
        return self.slot.attach(stack)

    def _worker_reporter(self) -> WorkerReporter | None:
        """A worker's reporter to its parent, one for the process's life (every egress
        stack runs it): a reload must neither report the log entries already sent again
        nor drop the end of a line the pipe cut short. None when not a worker."""
        role, fd = self.loaded.worker, self.options.stats_fd
        if role is None or fd is None:
            return None
        if self._reporter is None:
            self._reporter = WorkerReporter(
                role,
                fd,
                stats=self.slot.destination_stats,
                devices=self.fleet.statuses,
                losses=self.losses.snapshot,
                detail=lambda: {**device_detail(self.fleet),
                                "unsignable": self.unsignable.snapshot()},
                on_orphaned=self.request_stop,
                log=self.log,
                news=LogNews(TAP.recent),
            )
        return self._reporter

    async def stop_egress(self, loaded: LoadedPlant) -> None:
        old = self.slot.detach()
        if old is not None:
            await old.stop(None if loaded.worker else loaded)

    def console_snapshot(self) -> tuple[list[MachineRow], str]:
        return machine_rows(self.fleet, self.kpi.current_shift_result), self.slot.footer()

    def request_stop(self) -> None:
        self._stop.set()

    def restart_with_workers(self, count: int) -> None:
        """Stop as SIGTERM stops, then `run` returns `EXIT_RESTART` (a SIGHUP changed the
        worker count)."""
        self.restart_as = count
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload.set)
            # a worker starts with SIGHUP blocked (edge/daemon/workers.py `sighup_held`):
            # one its parent passed on while it was starting is taken now, applied below
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        background: list[asyncio.Task[None]] = []
        broker: EmbeddedBroker | None = None
        web: StatusWeb | None = None
        simulators = []
        try:
            if self.options.with_simulators:
                from edge.daemon.simulation import start_simulators  # noqa: PLC0415 (demo only)

                simulators = await start_simulators(self.loaded)
            if not self.options.broker_url and not self.loaded.plant.destinations:
                broker = EmbeddedBroker(*self.options.embedded_broker)
                await broker.start()
                self.log.info("embedded_broker_started", url=self.destinations()[0].url)
            plant = self.loaded.plant
            self.queries.reconfigure(plant, load_platform_keys(plant.platforms))
            await self.start_egress(prepare_egress(self.loaded, self.destinations(), self.log))
            oee = OeePublisher(
                self.kpi, self.fleet, self.slot, self.current, self.energy.for_oee_record
            )
            if self.loaded.worker is None:  # workers: each would see a slice (README)
                # imported here: a worker serves no page, and aiohttp with prometheus_client
                # cost each worker ~10 MB of RSS (bench/report-issue17.md, RSS per worker)
                from edge.web.server import start_status_web  # noqa: PLC0415

                web = await start_status_web(
                    plant.gateway.web, self.status, self.log, title=f"plant {plant.gateway.site}",
                    bookings=self.booking_board,
                )
            background.append(self.supervisor.supervise("kpi", oee.run))
            background.append(
                self.supervisor.supervise(
                    "wal-checkpoint", partial(checkpoint_loop, self._wal_stores)
                )
            )
            background.append(self.supervisor.supervise("capacity", self.capacity_publisher.run))
            background.append(self.supervisor.supervise("bookings", self.booking_publisher.run))
            background.append(self.supervisor.supervise("parts", self.parts.run))
            if self.options.channel_fd is not None:  # a worker: its parent's queries, page
                channel = WorkerChannelServer(
                    self.options.channel_fd,
                    query=self.queries.answer_locally,
                    status=partial(worker_snapshot, self.status),
                    usage=self.desk.usage,
                    log=self.log,
                )
                background.append(asyncio.create_task(channel.run(), name="worker-channel"))
            self.fleet.start_missing()
            systemd.notify("READY=1\nSTATUS=running")
            self.log.info(
                "gateway_started",
                machines=len(self.fleet.assets()),
                destinations=[d.brokers for d in self.destinations()],
            )
            background.append(asyncio.create_task(systemd.watchdog_loop(), name="watchdog"))
            if self.options.console:
                background.append(
                    asyncio.create_task(
                        console_loop(self.console_snapshot, self.options.console_every),
                        name="console",
                    )
                )
            await self.signals.serve()
            return 0 if self.restart_as is None else EXIT_RESTART
        finally:
            systemd.notify(restarting_notice(self.restart_as))
            self.log.info("gateway_stopping")
            await cancel_all(background)
            if web is not None:
                await web.stop()
            await self.fleet.stop_all()
            self.log.debug("shutdown_devices_stopped")
            self.kpi.close()
            self.parts.close()  # the trackers' last saves, queued
            await self.store_writes.drain()  # the last OEE and part saves committed
            self.oee_store.close()
            await self.stop_egress(self.loaded)
            await self.store_writes.close()  # the last acks' deletes were drained with egress
            # after the query tasks, which stop with egress, and the last sealed parts'
            # envelopes, attached on the writer thread
            self.nonces.close()
            self.bookings_store.close()
            self.parts_store.close()
            self.log.debug("shutdown_egress_stopped")
            if broker is not None:
                await broker.stop()
            for sim in simulators:
                await sim.aclose()
            self.log.info("gateway_stopped")
            if self.restart_as is not None:  # the page's history for the restarted command
                keep_recent_log(self.loaded.state_dir, TAP.recent, (), self.log)
