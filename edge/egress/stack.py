"""The egress side as one stage: signing key, outbox, one transport and sender per
destination, the sealer and the batcher.

Two steps, so a reload can fail without harm: `prepare_egress` does everything that reads
files or secrets (signing key, platform keys, passwords, TLS files) and touches no running
part; `EgressStack.start` then opens the outbox and connects. A reload prepares the new
side completely before it stops the old one, and keeps the old one when preparation fails.
`EgressSlot` is what the other stages hold: a destination change swaps the stack behind
it, so devices keep running and their next batch goes to the new egress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from edge.config.loader import LoadedPlant
from edge.egress.batcher import Egress
from edge.egress.formats import encoder_for
from edge.egress.formats.sparkplug import SparkplugSender, sparkplug_node_for
from edge.egress.formats.sparkplug_node import SparkplugNode
from edge.egress.loss import LossLedger
from edge.egress.outbox import FILENAME as OUTBOX_FILE
from edge.egress.outbox import Outbox, OutboxCap
from edge.egress.sealer import SealedObserver, Sealer
from edge.egress.sender import DestinationSender
from edge.egress.status_scope import seen_by
from edge.egress.unsignable import UnsignableRecords
from edge.egress.writer import OutboxWriter
from edge.signing.jws import Signer
from edge.signing.keystore import KeyStore
from edge.storage.disk import outbox_floors
from edge.storage.writer import WriterThread
from edge.transport.mqtt import Announcement, MqttTransport
from models.envelope import Stream
from models.errors import ConfigurationError
from models.plant import Destination, gateway_topic
from models.sample import format_ts, utc_now

LoopFactory = Callable[[], Coroutine[Any, Any, None]]


class Supervising(Protocol):
    """Background tasks as edge/daemon/supervisor.py runs them."""

    def supervise(self, name: str, loop: LoopFactory) -> asyncio.Task[None]: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    async def cancel_spawned(self) -> None: ...


class RecordSink(Protocol):
    """Where stages hand records for signing and delivery."""

    def emit(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> None: ...

    def add(
        self, topic: str, asset: str, records: list[dict[str, Any]], *, complete: bool = False
    ) -> None: ...


def status_payload(
    loaded: LoadedPlant,
    state: str,
    detail: dict[str, Any] | None = None,
    destination: Destination | None = None,
) -> bytes:
    """The retained `status` message: plain JSON (read by tools that cannot verify JWS).
    Built gateway-wide, then narrowed to what `destination` may see (its `machines` filter,
    its own entry and alarm: edge/egress/status_scope.py), since it goes to its broker."""
    g = loaded.plant.gateway
    body: dict[str, Any] = {
        "state": state,
        "gateway": g.id,
        "site": g.site,
        "ts": format_ts(utc_now()),
        "machines": [m.id for m in loaded.enabled_machines()],
        **(detail or {}),
    }
    if destination is not None:
        body = seen_by(body, destination.id, destination.machines.allows)
    return json.dumps(body, separators=(",", ":")).encode()


def status_birth(loaded: LoadedPlant, destination: Destination) -> Announcement:
    """The retained `online` status published after every connect to `destination`."""
    topic = gateway_topic(loaded.plant, "status")
    return topic, status_payload(loaded, "online", destination=destination), True


def status_will(loaded: LoadedPlant, destination: Destination) -> Announcement:
    """The retained `offline` will registered with every connect to `destination`."""
    topic = gateway_topic(loaded.plant, "status")
    return topic, status_payload(loaded, "offline", destination=destination), True


@dataclass(frozen=True)
class EgressPlan:
    """Everything the egress side needs, read and checked; nothing connected or opened."""

    loaded: LoadedPlant
    destinations: list[Destination]
    keystore: KeyStore
    signer: Signer
    jwks: bytes
    transports: dict[str, MqttTransport]
    nodes: dict[str, SparkplugNode] = field(default_factory=dict)  # sparkplug_b destinations

    def continue_sessions(self, previous: EgressPlan) -> None:
        """Before this plan connects in place of `previous` (a reload): each Sparkplug edge
        node of a destination that stays continues its predecessor's bdSeq and aliases."""
        for dest_id, node in self.nodes.items():
            if dest_id in previous.nodes:
                node.continue_session(previous.nodes[dest_id])


def prepare_egress(
    loaded: LoadedPlant, destinations: list[Destination], log: FilteringBoundLogger
) -> EgressPlan:
    """Raise ConfigurationError (naming the file or secret) before anything runs. Platform
    keys are the query side's, loaded beside this by the caller (edge/daemon/reload.py)."""
    plant = loaded.plant
    state_dir = loaded.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(f"cannot create state directory {state_dir}: {exc}") from exc
    keystore = KeyStore(loaded.keys_dir)
    signer = keystore.load_or_create(log)
    jwks = json.dumps(keystore.public_jwks(), separators=(",", ":")).encode()
    transports: dict[str, MqttTransport] = {}
    worker = loaded.worker  # a worker process: its parent owns status and keys topics
    nodes: dict[str, SparkplugNode] = {}
    for dest in destinations:
        # sparkplug_b: the will is the node's NDEATH (a new bdSeq per connect), no JWKS
        node = sparkplug_node_for(dest, plant.gateway) if dest.format == "sparkplug_b" else None
        client_id = dest.client_id or f"{plant.gateway.id}-{dest.id}"
        own_status = node is None and worker is None
        transport = MqttTransport(
            dest,
            client_id=client_id + (worker.suffix if worker else ""),
            will=node.will if node else (status_will(loaded, dest) if own_status else None),
            birth=status_birth(loaded, dest) if own_status else None,
            logger=log.bind(destination=dest.id),
        )
        transport.prepare()
        if own_status:
            transport.set_announcements([(gateway_topic(plant, "keys"), jwks, True)])
        if node is not None:
            nodes[dest.id] = node
        transports[dest.id] = transport
    return EgressPlan(loaded, destinations, keystore, signer, jwks, transports, nodes)


class EgressStack:
    """A started egress side; `stop()` flushes, settles in-flight publishes and closes."""

    def __init__(
        self,
        plan: EgressPlan,
        supervisor: Supervising,
        log: FilteringBoundLogger,
        losses: LossLedger | None = None,
        unsignable: UnsignableRecords | None = None,
        *,
        writes: WriterThread | None = None,
    ) -> None:
        self.plan = plan
        self.losses = losses or LossLedger()
        self.unsignable = unsignable or UnsignableRecords(log.warning)
        self.log = log
        self.supervisor = supervisor
        self.keystore = plan.keystore
        self.jwks = plan.jwks
        self.transports = plan.transports
        state_dir = plan.loaded.state_dir
        self.outbox_path: Path = state_dir / OUTBOX_FILE
        floors, warnings = outbox_floors(plan.destinations, state_dir)
        for warning in warnings:
            log.warning("disk_below_free_floor", detail=warning)
        self.outbox = Outbox(
            self.outbox_path,
            caps={
                d.id: OutboxCap(d.outbox.max_bytes, d.outbox.policy, floors[d.id])
                for d in plan.destinations
            },
            logger=log,
        )
        # every outbox write off the event loop, several to a transaction (writer.py), on
        # the gateway's store writer thread: after the OEE saves queued before them
        self.writer = OutboxWriter(self.outbox, writes)
        self.senders: list[DestinationSender | SparkplugSender] = [
            SparkplugSender(
                d.id,
                plan.transports[d.id],
                self.writer,
                plan.nodes[d.id],
                log,
                primary_host_id=d.sparkplug.primary_host_id,
                backlog_rate=d.outbox.backlog_rate,
            )
            if d.id in plan.nodes
            else DestinationSender(
                d.id,
                plan.transports[d.id],
                self.writer,
                log,
                backlog_rate=d.outbox.backlog_rate,
                encoder=encoder_for(d),
            )
            for d in plan.destinations
        ]
        transports = plan.transports
        self.sealer = Sealer(
            plan.loaded.plant.gateway.id,
            plan.signer,
            self.writer,
            destinations=plan.destinations,
            is_connected=lambda d: transports[d].connected,
            unsignable=self.unsignable,
        )
        b = plan.loaded.plant.gateway.batch
        self.egress = Egress(
            self.sealer,
            self.senders,
            log,
            max_records=b.max_records,
            max_bytes=b.max_bytes,
            max_delay=b.max_delay,
            losses=self.losses,
            polls_per_envelope=b.polls_per_envelope,
        )
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        plan: EgressPlan,
        supervisor: Supervising,
        log: FilteringBoundLogger,
        *,
        losses: LossLedger | None = None,
        unsignable: UnsignableRecords | None = None,
        writes: WriterThread | None = None,
    ) -> EgressStack:
        """`losses` and `unsignable`: the gateway's ledgers, so counts survive a reload
        (default: new ones). `writes`: the gateway's store writer thread, which the outbox
        shares with the OEE store so their commits keep the order they were queued in
        (default: a thread of the outbox's own)."""
        stack = cls(plan, supervisor, log, losses, unsignable, writes=writes)
        for transport in plan.transports.values():
            await transport.start()
        for s in stack.senders:
            stack.attach(f"sender-{s.name}", s.run)
        stack.attach("egress-batcher", stack.egress.run)
        log.info(
            "egress_ready",
            kid=plan.signer.kid,
            outbox=str(stack.outbox_path),
            pending={d.id: stack.outbox.pending(d.id)[0] for d in plan.destinations},
        )
        return stack

    def signed_transports(self) -> dict[str, MqttTransport]:
        """The transports of `envelope` and `json` destinations: where queries are served and
        status and the JWKS are published (a Sparkplug broker gets only `spBv1.0/...`)."""
        return {k: t for k, t in self.transports.items() if k not in self.plan.nodes}

    def attach(self, name: str, loop: LoopFactory) -> None:
        """A loop that lives and dies with this stack (status, query serving)."""
        self.tasks.append(self.supervisor.supervise(name, loop))

    def destination_stats(self) -> dict[str, dict[str, Any]]:
        """Exact outbox counters per destination, for status, health and the console."""
        stats = {}
        for sender in self.senders:
            rows, size = self.outbox.pending(sender.name)
            counters = self.outbox.counters(sender.name)
            transport = self.transports[sender.name]
            stats[sender.name] = {
                "connected": transport.connected,
                "broker": transport.broker,  # the node of `urls` in use (or tried next)
                "failovers": transport.stats["failovers"],
                "pending": rows,
                "pending_bytes": size,
                "sent": sender.stats.sent,
                "replayed": sender.stats.replayed,
                "dropped": counters["dropped"],
                "rejected": counters["rejected"],
                "lost_records": self.losses.lost_records(sender.name),
            }
        return stats

    def reload_signing_key(self) -> None:
        """`edge-gateway keys rotate` wrote a new key: sign with it from now on, and publish
        the JWKS that still holds the previous public key. seq/prev chains continue."""
        try:
            signer = self.keystore.load(self.log)
        except ConfigurationError as exc:
            self.log.error("signing_key_reload_failed_keeping_current", error=str(exc))
            return
        if signer.kid == self.sealer.signer.kid:
            return
        self.log.info("signing_key_reloaded", kid=signer.kid, previous=self.sealer.signer.kid)
        self.jwks = json.dumps(self.keystore.public_jwks(), separators=(",", ":")).encode()
        keys_topic = gateway_topic(self.plan.loaded.plant, "keys")
        for tr in self.signed_transports().values():  # JWKS before the first new signature
            tr.set_announcements([(keys_topic, self.jwks, True)])
        self.sealer.signer = signer

    async def stop(self, offline: LoadedPlant | None) -> None:
        """`offline`: the plant whose `offline` status to leave behind, retained, at each
        destination as that destination may see it (None: a worker's parent does)."""
        self.egress.flush_all()
        await self.writer.drain()  # the flushed envelopes stored, their senders woken
        self.log.debug("shutdown_flushed")
        for s in self.senders:
            try:
                await asyncio.wait_for(s.settle(), timeout=5.0)
            except TimeoutError:
                self.log.warning("egress_inflight_at_shutdown_kept_in_outbox", destination=s.name)
        self.log.debug("shutdown_settled")
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, self.supervisor.cancel_spawned(), return_exceptions=True)
        self.log.debug("shutdown_tasks_cancelled")
        for s in self.senders:
            await s.close()
        status_topic = gateway_topic(self.plan.loaded.plant, "status")
        signed = self.signed_transports()
        for dest in self.plan.destinations:
            tr = self.transports[dest.id]
            if tr.connected and offline is not None and dest.id in signed:
                payload = status_payload(offline, "offline", destination=dest)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        tr.publish(status_topic, payload, qos=1, retain=True), timeout=2.0
                    )
            await tr.stop()
        await self.writer.close()  # the deletes of the last PUBACKs committed
        self.outbox.close()


class EgressSlot:
    """The current egress stack. While a reload swaps stacks, records are held (bounded)
    and handed to the new stack, so devices keep running and lose nothing; before the
    first stack, and past the bound, records are dropped and counted."""

    def __init__(self, hold_limit: int = 10_000) -> None:
        self.current: EgressStack | None = None
        self.hold_limit = hold_limit
        self.dropped = 0
        self._held: list[Callable[[EgressStack], None]] | None = None
        self._observers: dict[str, list[SealedObserver]] = {}

    def observe_sealed(self, stream: Stream, observer: SealedObserver) -> None:
        """Call `observer` with every envelope of `stream` sealed by this and later stacks."""
        self._observers.setdefault(stream, []).append(observer)
        if self.current is not None:
            self.current.sealer.observers = self._observers

    def _offer(self, call: Callable[[EgressStack], None]) -> None:
        if self.current is not None:
            call(self.current)
        elif self._held is not None and len(self._held) < self.hold_limit:
            self._held.append(call)
        else:
            self.dropped += 1

    def emit(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> None:
        self._offer(lambda s: s.egress.emit(topic, asset, stream, records))

    def add(
        self, topic: str, asset: str, records: list[dict[str, Any]], *, complete: bool = False
    ) -> None:
        self._offer(lambda s: s.egress.add(topic, asset, records, complete=complete))

    def detach(self) -> EgressStack | None:
        """Take the running stack out (to stop it); hold records until `attach`."""
        old, self.current, self._held = self.current, None, []
        return old

    def attach(self, stack: EgressStack) -> int:
        """Put `stack` behind the slot; returns how many held offers it received."""
        held, self._held = self._held or [], None
        self.current = stack
        stack.sealer.observers = self._observers
        for call in held:
            call(stack)
        return len(held)

    def signer(self) -> Signer:
        if self.current is None:
            raise ConfigurationError("no egress running: nothing signs")
        return self.current.sealer.signer

    def destination_stats(self) -> dict[str, dict[str, Any]]:
        return {} if self.current is None else self.current.destination_stats()

    def footer(self) -> str:
        """The console's egress line."""
        parts = [
            f"{name}: {'connected' if st['connected'] else 'DISCONNECTED'}, sent {st['sent']}, "
            f"outbox {st['pending']}, dropped {st['dropped'] + st['rejected']}"
            for name, st in self.destination_stats().items()
        ]
        if self.current is not None:
            e = self.current.egress
            parts.append(f"envelopes {e.envelopes}, records {e.records}")
        return " | ".join(parts)
