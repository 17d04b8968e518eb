"""The gateway, assembled. The data flow (also drawn in README.md)::

    device --protocol--> adapter --Sample--> runner --> asset twin (AAS) --> OEE engine
                                                             |                    |
                                                             v                    v
                           egress: policy per destination -> envelope (batch, seq, prev hash)
                                   -> signer (JWS Ed25519) -> outbox (SQLite WAL) -> MQTT
    platform --MQTT request--> query handler (authorize) --> twin / OEE / capacity --> signed reply

Built so far: adapter -> runner -> twin (normalized state) -> KPI service (OEE engine,
SQLite store) and egress (batch per topic, seq/prev chain, JWS Ed25519, SQLite outbox,
one sender per destination with its stream filter) -> MQTT. Not yet: the query handler,
capacity offers, per-machine/per-signal egress policies.

`Gateway.run()` owns every task. SIGTERM/SIGINT stop it cleanly (flush batches, publish
the offline status, wait for acknowledgements, disconnect); SIGHUP reloads the YAML: an
invalid file is refused and the running configuration stays; machine changes restart only
the machines that changed; gateway or destination changes restart the egress side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from adapters.base import PollingAdapter
from edge.config import registry
from edge.config.loader import LoadedPlant, load_plant
from edge.daemon import systemd
from edge.daemon.console import MachineRow, console_loop
from edge.daemon.embedded_broker import EmbeddedBroker
from edge.devices.runner import DeviceRunner, DeviceStatus
from edge.devices.twin import AssetTwin
from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME as OUTBOX_FILE
from edge.egress.outbox import Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.sender import DestinationSender
from edge.kpi.service import KpiService
from edge.kpi.store import FILENAME as OEE_FILE
from edge.kpi.store import OeeStore
from edge.observability import get_logger
from edge.query.backend import GatewayViews
from edge.query.handler import QueryHandler, load_platform_keys
from edge.signing.keystore import KeyStore
from edge.transport.mqtt import MqttTransport
from models.envelope import telemetry_record
from models.errors import ConfigurationError, PlantConfigError
from models.plant import Booking, Destination, Machine, gateway_topic, machine_topic
from models.sample import Sample, format_ts, utc_now

EMBEDDED_BROKER = ("127.0.0.1", 1883)


@dataclass
class _Device:
    machine: Machine
    runner: DeviceRunner
    task: asyncio.Task[None]
    twin: AssetTwin


@dataclass
class RunOptions:
    broker_url: str | None = None
    with_simulators: bool = False
    console: bool = False
    console_every: float = 5.0
    embedded_broker: tuple[str, int] = EMBEDDED_BROKER


@dataclass
class _Egress:
    egress: Egress
    senders: list[DestinationSender]
    transports: list[MqttTransport]
    outbox: Outbox
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Gateway(GatewayViews):
    def __init__(self, loaded: LoadedPlant, options: RunOptions | None = None) -> None:
        self.loaded = loaded
        self.options = options or RunOptions()
        self.log = get_logger(gateway=loaded.plant.gateway.id)
        self.devices: dict[str, _Device] = {}
        self.twins: dict[str, AssetTwin] = {}
        self.out: _Egress | None = None
        self.broker: EmbeddedBroker | None = None
        self.simulators: list[Any] = []
        self._stop = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.keystore: KeyStore | None = None
        self.kpi: KpiService | None = None
        self.queries: QueryHandler | None = None
        self.started = utc_now()
        self._bookings_cache: dict[str, list[Booking]] = {}
        self._booking_errors: dict[str, str] = {}
        self.oee_store: OeeStore | None = None
        self._outbox_alarms: set[str] = set()
        self._jwks = b""
        self._reload = asyncio.Event()

    # ---- destinations -------------------------------------------------------------
    def destinations(self) -> list[Destination]:
        if self.options.broker_url:
            return [Destination(id="cli", url=self.options.broker_url)]
        if self.loaded.plant.destinations:
            return list(self.loaded.plant.destinations)
        host, port = self.options.embedded_broker
        return [Destination(id="embedded", url=f"mqtt://{host}:{port}")]

    def _status_payload(self, state: str, detail: bool = False) -> bytes:
        g = self.loaded.plant.gateway
        body: dict[str, Any] = {
            "state": state,
            "gateway": g.id,
            "site": g.site,
            "ts": format_ts(utc_now()),
            "machines": [m.id for m in self.loaded.enabled_machines()],
        }
        if detail and self.out is not None:
            dests = self.destination_stats()
            body["destinations"] = dests
            body["alarms"] = [f"outbox_full_losing_data:{d}" for d in sorted(self._outbox_alarms)]
            body["devices"] = {a: d.runner.status.value for a, d in self.devices.items()}
        return json.dumps(body, separators=(",", ":")).encode()

    def destination_stats(self) -> dict[str, dict[str, Any]]:
        """Exact outbox counters per destination, for status, metrics and the console."""
        if self.out is None:
            return {}
        stats = {}
        for sender, transport in zip(self.out.senders, self.out.transports, strict=True):
            rows, size = self.out.outbox.pending(sender.name)
            counters = self.out.outbox.counters(sender.name)
            stats[sender.name] = {
                "connected": transport.connected,
                "pending": rows,
                "pending_bytes": size,
                "sent": sender.stats.sent,
                "replayed": sender.stats.replayed,
                "dropped": counters["dropped"],
                "rejected": counters["rejected"],
            }
        return stats

    async def _start_egress(self) -> _Egress:
        plant = self.loaded.plant
        status_topic = gateway_topic(plant, "status")
        state_dir = self.loaded.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigurationError(f"cannot create state directory {state_dir}: {exc}") from exc
        keystore = KeyStore(self.loaded.keys_dir)
        signer = keystore.load_or_create(self.log)
        self.keystore = keystore
        self._jwks = json.dumps(keystore.public_jwks(), separators=(",", ":")).encode()
        dests = self.destinations()
        outbox = Outbox(
            state_dir / OUTBOX_FILE,
            caps={
                d.id: OutboxCap(d.outbox.max_bytes, d.outbox.policy, d.outbox.min_free_disk_bytes)
                for d in dests
            },
            logger=self.log,
        )
        transports: dict[str, MqttTransport] = {}
        senders = []
        for dest in dests:
            transport = MqttTransport(
                dest,
                client_id=dest.client_id or f"{plant.gateway.id}-{dest.id}",
                will=(status_topic, self._status_payload("offline"), True),
                birth=(status_topic, self._status_payload("online"), True),
                logger=self.log.bind(destination=dest.id),
            )
            transport.set_announcements([(gateway_topic(plant, "keys"), self._jwks, True)])
            await transport.start()
            transports[dest.id] = transport
            senders.append(
                DestinationSender(
                    dest.id, transport, outbox, self.log, backlog_rate=dest.outbox.backlog_rate
                )
            )
        sealer = Sealer(
            plant.gateway.id,
            signer,
            outbox,
            destinations=dests,
            is_connected=lambda d: transports[d].connected,
        )
        b = plant.gateway.batch
        egress = Egress(
            sealer,
            senders,
            self.log,
            max_records=b.max_records,
            max_bytes=b.max_bytes,
            max_delay=b.max_delay,
        )
        out = _Egress(egress, senders, list(transports.values()), outbox)
        out.tasks = [self._supervise(f"sender-{s.name}", s.run) for s in senders]
        out.tasks.append(self._supervise("egress-batcher", egress.run))
        out.tasks.append(self._supervise("status", lambda: self._status_loop(out)))
        keys = load_platform_keys(plant.platforms, self.loaded.path.parent)
        queries = self.queries = QueryHandler(
            plant, self, signer=lambda: out.egress.sealer.signer, keys=keys, logger=self.log
        )
        for dest_id, tr in transports.items():
            out.tasks.append(
                self._supervise(f"query-{dest_id}", partial(queries.serve, tr, dest_id))
            )
        self.log.info(
            "egress_ready",
            kid=signer.kid,
            outbox=str(state_dir / OUTBOX_FILE),
            pending={d.id: outbox.pending(d.id)[0] for d in dests},
        )
        return out

    async def _status_loop(self, out: _Egress, every: float = 30.0) -> None:
        """Keep the retained status (with exact drop counters) and the JWKS current; both are
        re-published after every reconnect, since a broker restart may lose retained messages,
        and the JWKS again whenever a reload brought a rotated key."""
        plant = self.loaded.plant
        status_topic = gateway_topic(plant, "status")
        published: dict[int, int] = {}
        last_status = 0.0
        loop = asyncio.get_running_loop()
        losses = {d: st["dropped"] + st["rejected"] for d, st in self.destination_stats().items()}
        alarmed = self._outbox_alarms
        while True:
            for dest, st in self.destination_stats().items():
                lost = st["dropped"] + st["rejected"]
                if lost > losses.get(dest, lost) and dest not in alarmed:
                    alarmed.add(dest)  # the alarm: one error line, and `alarms` in the status
                    self.log.error("outbox_full_losing_data", destination=dest, **st)
                    last_status = 0.0
                elif lost == losses.get(dest) and dest in alarmed:
                    alarmed.discard(dest)
                    self.log.info("outbox_no_longer_losing_data", destination=dest, **st)
                losses[dest] = lost
            for i, tr in enumerate(out.transports):
                if tr.connected and published.get(i) != tr.stats["reconnects"]:
                    published[i] = tr.stats["reconnects"]
                    last_status = 0.0  # a new link gets the detailed status at once
            if loop.time() - last_status >= every:
                last_status = loop.time()
                payload = self._status_payload("online", detail=True)
                for tr in out.transports:
                    if tr.connected:
                        self._spawn(tr.publish(status_topic, payload, qos=1, retain=True))
            await asyncio.sleep(1.0)

    def _supervise(
        self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None]:
        """Run a background loop forever: an unexpected exception (a bug, a disk error) is
        logged with its traceback and the loop restarts after a pause, instead of dying
        silently and leaving, say, OEE unpublished while everything looks fine."""

        async def guarded() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("background_task_failed_restarting", task=name)
                    await asyncio.sleep(5.0)

        return asyncio.create_task(guarded(), name=name)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Fire-and-forget publishes (status, keys) that must not block the loop that
        schedules them; kept referenced until done, failures only logged."""
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[None]) -> None:
        self._side_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.debug("side_publish_failed", error=str(task.exception()))

    async def _stop_egress(self, out: _Egress) -> None:
        out.egress.flush_all()
        self.log.debug("shutdown_flushed")
        for s in out.senders:
            try:
                await asyncio.wait_for(s.settle(), timeout=5.0)
            except TimeoutError:
                self.log.warning("egress_inflight_at_shutdown_kept_in_outbox", destination=s.name)
        self.log.debug("shutdown_settled")
        for t in [*out.tasks, *self._side_tasks]:
            t.cancel()
        await asyncio.gather(*out.tasks, *self._side_tasks, return_exceptions=True)
        self.log.debug("shutdown_tasks_cancelled")
        for s in out.senders:
            await s.close()
        status_topic = gateway_topic(self.loaded.plant, "status")
        for tr in out.transports:
            if tr.connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        tr.publish(
                            status_topic, self._status_payload("offline"), qos=1, retain=True
                        ),
                        timeout=2.0,
                    )
            await tr.stop()
        out.outbox.close()

    # ---- devices ------------------------------------------------------------------
    def _on_samples(self, asset: str, batch: Sequence[Sample]) -> None:
        device = self.devices.get(asset)
        if device is None:  # a late batch from a device being stopped or removed
            return
        twin = self.twins[asset]
        machine = device.machine
        new_state, rejected = twin.apply(batch)
        if new_state is not None and self.kpi is not None:
            # the gateway's clock, not the device's: OEE windows are on one time line, and
            # device clocks jump (SHDR recordings, controllers without NTP)
            self.kpi.on_state(asset, new_state, utc_now())
        for signal_name, value in rejected:
            self.log.warning(
                "state_value_not_in_vocabulary", asset=asset, signal=signal_name, value=value
            )
        if self.out is None:
            return
        self.out.egress.add(
            machine_topic(self.loaded.plant, machine, "telemetry"),
            asset,
            [telemetry_record(s) for s in batch],
            complete=issubclass(device.runner.adapter_cls, PollingAdapter),
        )
        if new_state is not None:
            self._emit_state(machine, twin)

    def _emit_state(self, machine: Machine, twin: AssetTwin) -> None:
        if self.out is None:
            return
        twin.announced = True
        record = twin.state.as_record()
        record["ts"] = format_ts(twin.state.since or utc_now())
        self.out.egress.emit(
            machine_topic(self.loaded.plant, machine, "state"), machine.id, "state", [record]
        )

    def _on_status(self, asset: str, status: DeviceStatus, reason: str | None) -> None:
        device = self.devices.get(asset)
        twin = self.twins.get(asset)
        if device is None or twin is None or status is DeviceStatus.UP:
            return
        # a device that never answered is announced too: silence is not a state
        at = utc_now()
        changed = twin.set_available(False, at) is not None
        if changed and self.kpi is not None:
            self.kpi.on_unavailable(asset, at)
        if changed or not twin.announced:
            self._emit_state(device.machine, twin)

    def _start_device(self, machine: Machine) -> None:
        adapter_cls = registry.load(machine.adapter)
        runner = DeviceRunner(
            machine.id,
            adapter_cls,
            settings=self.loaded.settings[machine.id],
            poll_interval=machine.poll_interval,
            on_samples=self._on_samples,
            on_status=self._on_status,
            logger=self.log,
            state_dir=self.loaded.state_dir,
        )
        twin = self.twins.setdefault(machine.id, AssetTwin(machine.id))
        task = asyncio.create_task(runner.run(), name=f"device-{machine.id}")
        self.devices[machine.id] = _Device(machine, runner, task, twin)

    async def _stop_device(self, asset: str) -> None:
        device = self.devices.pop(asset)
        device.runner.stop()
        device.task.cancel()
        done, _ = await asyncio.wait({device.task}, timeout=5.0)
        if not done:
            self.log.warning("device_task_did_not_stop", asset=asset)

    # ---- reload -------------------------------------------------------------------
    async def _apply_reload(self) -> None:
        try:
            new = load_plant(self.loaded.path)
        except PlantConfigError as exc:
            self.log.error(
                "reload_rejected_keeping_running_config", problems=[str(p) for p in exc.problems]
            )
            return
        old = self.loaded
        self.loaded = new
        egress_changed = (
            old.plant.gateway != new.plant.gateway
            or old.plant.destinations != new.plant.destinations
        )
        wanted = {m.id: m for m in new.enabled_machines()}
        for asset in list(self.devices):
            d = self.devices[asset]
            if (
                asset not in wanted
                or d.machine != wanted[asset]
                or old.settings.get(asset) != new.settings.get(asset)
                or egress_changed
            ):
                await self._stop_device(asset)
        if egress_changed and self.out is not None:
            await self._stop_egress(self.out)
            self.out = await self._start_egress()
        elif self.out is not None:
            self._reload_signing_key(self.out)
        if self.kpi is not None:
            self.kpi.reconfigure(new.plant)
        for asset, machine in wanted.items():
            if asset not in self.devices:
                self._start_device(machine)
        self.log.info("reloaded", machines=len(wanted), egress_restarted=egress_changed)

    async def _kpi_loop(self) -> None:
        """Publish OEE on the retained `oee` stream: every machine's current shift at least
        every 60 s, and each shift once more, closed, when it ends."""
        while True:
            assert self.kpi is not None
            for asset, record in self.kpi.tick():
                if self.out is not None and asset in self.devices:
                    machine = self.devices[asset].machine
                    topic = machine_topic(self.loaded.plant, machine, "oee")
                    self.out.egress.emit(topic, asset, "oee", [record])
            delay = (self.kpi.next_due() - utc_now()).total_seconds()
            await asyncio.sleep(min(5.0, max(0.05, delay)))

    def _reload_signing_key(self, out: _Egress) -> None:
        """`edge-gateway keys rotate` wrote a new key: sign with it from now on, and publish
        the JWKS that still holds the previous public key. seq/prev chains continue."""
        if self.keystore is None:
            return
        try:
            signer = self.keystore.load(self.log)
        except ConfigurationError as exc:
            self.log.error("signing_key_reload_failed_keeping_current", error=str(exc))
            return
        if signer.kid != out.egress.sealer.signer.kid:
            self.log.info(
                "signing_key_reloaded", kid=signer.kid, previous=out.egress.sealer.signer.kid
            )
            self._jwks = json.dumps(self.keystore.public_jwks(), separators=(",", ":")).encode()
            keys_topic = gateway_topic(self.loaded.plant, "keys")
            for tr in out.transports:  # the new JWKS goes out before the first new signature
                tr.set_announcements([(keys_topic, self._jwks, True)])
            out.egress.sealer.signer = signer

    # ---- console ------------------------------------------------------------------
    def console_snapshot(self) -> tuple[list[MachineRow], str]:
        rows = []
        for asset, d in self.devices.items():
            st = d.twin.state
            rows.append(
                MachineRow(
                    asset=asset,
                    adapter=d.machine.adapter,
                    status=d.runner.status.value,
                    execution=st.execution.value if st.execution else "-",
                    mode=st.controller_mode.value if st.controller_mode else "-",
                    program=st.program or "-",
                    parts="-"
                    if st.part_count is None
                    else f"{st.part_count}/{st.bad_part_count or 0} bad",
                    alarms=",".join(st.alarms) or "-",
                    samples=d.twin.stats.samples,
                )
            )
        parts = [
            f"{name}: {'connected' if st['connected'] else 'DISCONNECTED'}, sent {st['sent']}, "
            f"outbox {st['pending']}, dropped {st['dropped'] + st['rejected']}"
            for name, st in self.destination_stats().items()
        ]
        if self.out:
            parts.append(
                f"envelopes {self.out.egress.envelopes}, records {self.out.egress.records}"
            )
        return rows, " | ".join(parts)

    # ---- lifecycle ----------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        background: list[asyncio.Task[None]] = []
        try:
            if self.options.with_simulators:
                from edge.daemon.simulation import start_simulators  # noqa: PLC0415 (demo only)

                self.simulators = await start_simulators(self.loaded)
            if not self.options.broker_url and not self.loaded.plant.destinations:
                self.broker = EmbeddedBroker(*self.options.embedded_broker)
                await self.broker.start()
                self.log.info("embedded_broker_started", url=self.destinations()[0].url)
            self.out = await self._start_egress()
            oee = self.loaded.plant.gateway.oee
            self.oee_store = OeeStore(
                self.loaded.state_dir / OEE_FILE,
                raw_retention_days=oee.raw_retention_days,
                window_retention_days=oee.window_retention_days,
                logger=self.log,
            )
            self.kpi = KpiService(
                self.loaded.plant, self.oee_store, publish_every=oee.publish_every, logger=self.log
            )
            background.append(self._supervise("kpi", self._kpi_loop))
            background.append(self._supervise("capacity", self._capacity_loop))
            for machine in self.loaded.enabled_machines():
                self._start_device(machine)
            systemd.notify("READY=1\nSTATUS=running")
            self.log.info(
                "gateway_started",
                machines=len(self.devices),
                destinations=[d.url for d in self.destinations()],
            )
            background.append(asyncio.create_task(systemd.watchdog_loop(), name="watchdog"))
            if self.options.console:
                background.append(
                    asyncio.create_task(
                        console_loop(self.console_snapshot, self.options.console_every),
                        name="console",
                    )
                )
            while not self._stop.is_set():
                stop_wait = asyncio.create_task(self._stop.wait())
                reload_wait = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                reload_wait.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self._apply_reload()
            return 0
        finally:
            systemd.notify("STOPPING=1")
            self.log.info("gateway_stopping")
            for t in background:
                t.cancel()
            await asyncio.gather(*(self._stop_device(a) for a in list(self.devices)))
            self.log.debug("shutdown_devices_stopped")
            if self.kpi is not None and self.oee_store is not None:
                self.kpi.close()
                self.oee_store.close()
            if self.out is not None:
                await self._stop_egress(self.out)
            self.log.debug("shutdown_egress_stopped")
            if self.broker is not None:
                await self.broker.stop()
            for sim in self.simulators:
                await sim.aclose()
            self.log.info("gateway_stopped")
