"""MQTT egress: one connection to one destination broker, paho-mqtt driven by the asyncio loop.

Why it is built this way:

* **No thread per client.** As in aiomqtt 2.x, paho's socket callbacks hand its socket to the
  event loop (`add_reader` -> `loop_read`; writes by `loop_write`) and a small task calls
  `loop_misc` every second for keep-alive. Once connected, what one loop iteration published
  is written by one `loop_write` at its end, and the selector watches the socket only when it
  would not take it all (a selector round per envelope was a measurable share of the CPU per
  sample, issue 17). Nagle is off on the socket: a query's reply written right after the
  request's PUBACK would wait for the broker's delayed ACK (~40 ms). Only the blocking part
  of connecting (DNS, TCP connect, TLS handshake: paho has no non-blocking connect) runs in
  the default executor, and paho's callbacks fired from there are marshalled back onto the
  loop.
* **The transport owns delivery, not paho.** Every connection attempt uses a fresh paho
  client with a clean session. Each `publish()` stays pending, in call order, until the broker
  acknowledges it (PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS 0);
  after a reconnect everything still pending is re-sent before anything new. So nothing is
  lost while the process lives and the protocol may change between attempts (auto fallback)
  without dropping queued messages. A message whose PUBACK was lost with the connection is
  sent again: QoS 1 is at-least-once, and the envelope's per-topic `seq` lets subscribers drop
  duplicates. Surviving a restart is the outbox's job: it deletes a record only after
  `publish()` returned.
* **Protocol `auto`.** MQTT 5 first. A broker that only speaks 3.1.1 says so in one of three
  ways. (1) A 3.1.1 CONNACK with return code 1, which paho reports as reason 132 "Unsupported
  protocol version" (amqtt 0.12 does this for a v5 CONNECT without a will): 3.1.1 is then
  used for the life of the transport. (2) Closing the connection before any CONNACK, or
  (3) never answering at all (amqtt 0.12's own listener with a v5 CONNECT that carries a will
  and a client id: its 3.1.1 parser fails and leaves the socket open), which the CONNACK
  timeout turns into (2). After (2) the next attempt uses 3.1.1 and, because a bare drop may
  also be a broker restarting, the next connection cycle tries 5 again. `"5"` and `"3.1.1"`
  force one version.
* **Failover across broker nodes.** A destination may list several URLs (`urls`: the nodes
  of a clustered broker, or a primary and standbys). One connection at a time, to the
  current node. When the link is lost the next node is tried at once; a failed attempt moves
  on to the next node too, and only after every node failed in a row does the back-off
  sleep, after which the next round starts again at the first URL. Policy for returning:
  while on a later node, every `failback_after` seconds a TCP connect checks the first URL;
  if it answers, the link is closed cleanly (DISCONNECT: no will) and reopened there. What
  was not acknowledged is re-sent on the new link before anything new, as after any
  reconnect, so nothing acknowledged is lost and nothing is reordered within a topic;
  duplicates (a PUBACK lost with the node) carry the same `seq`.
* **Quiet under outage.** Reconnects back off exponentially with jitter (1 s .. 60 s by
  default). One warning when the link is lost (`mqtt_disconnected`; a link lost again
  within a minute logs at debug and is counted in the next warning's `losses`, so a broker
  that keeps closing it logs once a minute, with a hint when it closed it within 10 s) or the
  first attempt fails (`mqtt_connect_failed`), one info line when it is back
  (`mqtt_connected`); the attempts in between log at debug. Passwords are resolved once at
  `start()` and never logged.
* **Birth and will.** The will (QoS 1) tells subscribers the gateway died; the optional
  birth message is published again after every (re)connect, so a will the broker sent for
  the previous link never stays the last word. The will may be a callable, asked once per
  connection attempt: Sparkplug's NDEATH carries a `bdSeq` that is new for every connect.

paho's exceptions and error codes become `TransportError` here; unusable settings (missing
secret, unreadable certificate) become `ConfigurationError`, raised by `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from structlog.typing import FilteringBoundLogger

from edge.config.risks import INSECURE_HINT
from edge.config.secret_refs import resolve_secret
from models.errors import ConfigurationError, TransportError
from models.plant import Destination
from models.sample import utc_now

from .tls_diagnosis import PahoSocketErrors, tls_refusal

MqttVersion = Literal["5", "3.1.1"]
Announcement = tuple[str, bytes, bool]
"""(topic, payload, retain) of a will, birth or announcement."""

_PAHO_PROTOCOL = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
_UNSUPPORTED_PROTOCOL = 132  # MQTT 5 CONNACK 0x84; paho maps a 3.1.1 CONNACK rc 1 to it too
_CONNACK_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 10.0  # TCP connect + TLS handshake, in the executor
_SUBACK_TIMEOUT = 10.0
_PROBE_TIMEOUT = 3.0  # TCP connect to the first url before failing back to it
_INBOX_SIZE = 1000
LOSS_LOG_INTERVAL = 60.0  # a link lost again within this logs at debug, counted in the next
_SHORT_LINK = 10.0  # a link the broker closes this soon after accepting it: taken over?


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho drops the socket of a failed TLS handshake without closing it; we close it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


@dataclass(frozen=True)
class IncomingMessage:
    """A message from a subscription; the v5 request/response fields are None under 3.1.1."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(eq=False)
class _Outgoing:
    key: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    future: asyncio.Future[None]
    payload_mqtt311: bytes | None = None  # sent instead on a 3.1.1 connection, when given
    this_link_only: bool = False  # failed, not re-sent, when the connection is lost


@dataclass
class _Attempt:
    """How one connection attempt ended: `ok`, `unreachable`, `refused` (CONNACK) or `dropped`."""

    kind: str
    detail: str = ""
    reason: int | None = None


@dataclass
class _Wiring:
    """What the event loop watches for the current paho client's socket."""

    fd: int = -1
    misc: asyncio.Task[None] | None = None
    writing: bool = False  # the selector watches the socket for writability
    flush_due: bool = False  # a `_flush` is scheduled for this loop iteration
    flushing: bool = False  # inside `_flush`: what is left waits for the selector


def _node(url: str, tls: bool) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (8883 if tls else 1883)


async def _reachable(host: str, port: int) -> bool:
    """Does something accept TCP connections there? (the failback check; no MQTT session)"""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _publish_properties(values: dict[str, Any]) -> Properties:
    """MQTT 5 PUBLISH properties from snake_case names (`response_topic`, `user_property`...)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        camel = name if "_" not in name and name[:1].isupper() else name.title().replace("_", "")
        try:
            setattr(props, camel, value)
        except Exception as exc:  # paho raises MQTTException / TypeError / ValueError
            raise TransportError(f"invalid MQTT 5 publish property {name!r}: {exc}") from exc
    return props



def _consume_outcome(fut: asyncio.Future[None]) -> None:
    """Marks a future nobody awaits as retrieved (asyncio would log 'Future exception was
    never retrieved' at garbage collection, a traceback for a problem already logged)."""
    if not fut.cancelled():
        fut.exception()

class MqttTransport:
    """One destination broker: background (re)connection, acknowledged publishes, subscriptions.

    Lifecycle: construct (no I/O), `await start()` once, use, `await stop()` once. Runs on the
    loop that called `start()`; not thread-safe. `backoff_min`/`backoff_max` exist for tests.
    """

    def __init__(
        self,
        destination: Destination,
        client_id: str,
        will: Announcement | Callable[[], Announcement] | None = None,
        logger: FilteringBoundLogger | None = None,
        *,
        birth: tuple[str, bytes, bool] | None = None,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self._dest = destination
        self._client_id = client_id
        self._will = will
        self._birth = birth
        self._announcements: list[tuple[str, bytes, bool]] = []
        self._tls = destination.brokers[0].startswith("mqtts:")
        self._nodes = [_node(u, self._tls) for u in destination.brokers]
        self._node = 0  # index of the node connected to, or tried next
        self._backoff = (backoff_min, backoff_max)
        self._base_log: FilteringBoundLogger = (logger or structlog.get_logger()).bind(
            destination=destination.id
        )
        self._log = self._base_log.bind(broker=self.broker)
        self._protocol: MqttVersion = "3.1.1" if destination.protocol == "3.1.1" else "5"
        self._password: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._prepared = False
        self._insecure = destination.tls is not None and destination.tls.insecure_skip_verify
        self._paho_errors = PahoSocketErrors()
        self._paho_log = self._paho_errors.logger(f"paho.{destination.id}")

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._client: mqtt.Client | None = None
        self._wiring = _Wiring()
        self._attempt: asyncio.Future[_Attempt] | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._connected_since = 0.0
        self._lost = asyncio.Event()
        self._closing = False
        self._ever_connected = False
        self._lost_reason = ""
        self._losses_unlogged = 0  # links lost since the last `mqtt_disconnected` warning
        self._loss_logged_at = -LOSS_LOG_INTERVAL  # monotonic time of that warning

        self._keys = itertools.count(1)
        self._pending: dict[int, _Outgoing] = {}  # insertion order = publish order
        self._by_mid: dict[int, _Outgoing] = {}  # this connection's mids only
        self._subscriptions: dict[str, int] = {}
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._inbox: asyncio.Queue[IncomingMessage] = asyncio.Queue(_INBOX_SIZE)
        self._stats = {"published": 0, "acked": 0, "reconnects": 0, "failovers": 0}
        self.last_ack: datetime | None = None
        """When the broker last acknowledged a publish (status page, metrics)."""

    # ---------------------------------------------------------------- public surface

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connected_since(self) -> float:
        """Unix time of the current session's CONNACK (0.0 before the first one). A sender
        compares it with a row's `created` to know the row waited out an outage, however
        short, without having to watch the link itself."""
        return self._connected_since

    @property
    def broker(self) -> str:
        """`host:port` of the node connected to (or tried next)."""
        host, port = self._nodes[self._node]
        return f"{host}:{port}"

    @property
    def protocol_in_use(self) -> MqttVersion:
        """The version of the current connection, or the one the next attempt will try."""
        return self._protocol

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats, "pending": len(self._pending)}

    def prepare(self) -> None:
        """Check settings, resolve the password and build the TLS context: everything that
        can fail on a missing file or secret, done before a reload stops the running side."""
        d = self._dest
        if d.password is not None and d.username is None:
            raise ConfigurationError(f"destination {d.id}: a password needs a username")
        if d.tls is not None and not self._tls:
            raise ConfigurationError(
                f"destination {d.id}: 'tls' is set but the url is not mqtts://"
            )
        self._password = resolve_secret(d.password) if d.password is not None else None
        self._ssl = self._ssl_context() if self._tls else None
        self._prepared = True

    async def start(self) -> None:
        """`prepare()` unless done, then connect in the background; returns before the
        broker answers."""
        if self._supervisor is not None:
            return
        if not self._prepared:
            self.prepare()
        d = self._dest
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._supervisor = self._loop.create_task(self._supervise(), name=f"mqtt-{d.id}")

    def set_announcements(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """Messages (topic, payload, retain) published at QoS 1 on every connect, right after
        the birth and before anything else, e.g. the JWKS that the envelopes which follow
        are signed with. Set while connected, they go out at once too."""
        self._announcements = list(messages)
        client = self._client
        if self._connected and client is not None:
            for topic, payload, retain in self._announcements:
                client.publish(topic, payload, qos=1, retain=retain)

    def set_birth_and_will(self, birth: Announcement, will: Announcement) -> None:
        """Replace the birth and the will, e.g. a reload narrowed what a destination may see.
        Both are used from the next connect on: the birth is published after it, and the will
        goes in its CONNECT. The broker keeps the will of the current connection until that
        ends (MQTT has no way to change it on a live link); no reconnect is forced for it,
        since the query requests published between the DISCONNECT and the new SUBSCRIBE would
        be lost (clean session)."""
        self._birth = birth
        self._will = will

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once connected; False if `timeout` seconds pass first (the link keeps trying)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        return self._connected

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *,
        payload_mqtt311: bytes | None = None,
        this_link_only: bool = False,
    ) -> None:
        """Return once the broker acknowledged the message, waiting across reconnects if needed.

        Cancelling the call withdraws the message from later re-sends (it may still arrive if
        it was already on the wire). MQTT 5 `properties` are dropped on a 3.1.1 connection;
        `payload_mqtt311`, when given, replaces the payload there, chosen when the message is
        written (a re-send after a protocol fallback takes it too). A `this_link_only`
        message goes out on the current connection or not at all: without a link, or when
        the link is lost before it is acknowledged, it fails with `TransportError` and is
        never re-sent on a later connection (Sparkplug data belongs to the session its
        NBIRTH opened).
        """
        if self._closing or self._loop is None:
            raise TransportError("MQTT transport is not running")
        if not topic or "+" in topic or "#" in topic or qos not in (0, 1, 2):
            raise TransportError(f"cannot publish to {topic!r} with QoS {qos}")
        if this_link_only and not self._connected:
            raise TransportError("not connected: a this_link_only message has no link to go on")
        props = _publish_properties(properties) if properties else None
        rec = _Outgoing(
            next(self._keys),
            topic,
            bytes(payload),
            qos,
            retain,
            props,
            self._loop.create_future(),
            payload_mqtt311,
            this_link_only,
        )
        self._pending[rec.key] = rec
        self._stats["published"] += 1
        if self._connected:
            self._send(rec)
        try:
            await rec.future
        finally:
            self._pending.pop(rec.key, None)

    def reconnect(self, reason: str) -> None:
        """End the current connection cleanly (DISCONNECT: the broker drops the will) and
        connect again after the usual backoff, asking for a fresh will. For Sparkplug, whose
        session must end with its connection when the primary host goes away."""
        client = self._client
        if client is None or not self._connected:
            return
        self._drop(client)
        self._gone(client, reason)

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now (waiting for SUBACK) if connected, and again after every reconnect."""
        self._subscriptions[topic] = qos
        if self._connected and self._client is not None:
            fut = self._send_subscribe(self._client, topic, qos)
            try:
                await asyncio.wait_for(fut, _SUBACK_TIMEOUT)
            except TimeoutError:
                raise TransportError(f"no SUBACK for {topic!r}") from None

    async def messages(self) -> AsyncIterator[IncomingMessage]:
        """Messages from all subscriptions, in arrival order (bounded; overflow is dropped)."""
        while True:
            yield await self._inbox.get()

    async def stop(self) -> None:
        """Disconnect cleanly (so the broker does not send the will) and fail what is pending."""
        if self._closing:
            return
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait({self._supervisor}, timeout=_CONNECT_TIMEOUT + 1)
        if self._connecting is not None:  # a blocking connect cannot be interrupted: let it end
            await asyncio.wait({self._connecting}, timeout=_CONNECT_TIMEOUT + 1)
            if self._connecting.done() and not self._connecting.cancelled():
                self._connecting.exception()  # retrieved: the supervisor that awaited it is gone
            await asyncio.sleep(0)  # let its marshalled socket callbacks run
        client = self._client
        if client is not None and client.socket() is not None:
            client.disconnect()
            for _ in range(100):
                if client.socket() is None:
                    break
                await asyncio.sleep(0.02)
            self._drop(client)
        self._unwire()
        self._set_connected(False)
        for rec in list(self._pending.values()):
            if not rec.future.done():
                rec.future.set_exception(
                    TransportError("MQTT transport stopped before the broker acknowledged")
                )
        self._pending.clear()
        self._log.debug("mqtt_stopped", **self.stats)

    # ---------------------------------------------------------------- connection cycle

    async def _supervise(self) -> None:
        failures = 0
        outage_logged = refusal_logged = fallback_logged = False
        tentative_311 = False  # on 3.1.1 only because a v5 attempt was dropped without CONNACK
        # A bare drop is logged as a fallback only once 3.1.1 has connected: over TLS 1.3 a
        # broker refusing our client certificate sends its alert after the handshake, and
        # under load the reset can overtake the alert, so the drop may be no protocol matter.
        unconfirmed_fallback: str | None = None
        left = len(self._nodes)  # attempts before the next back-off (one round over the nodes)
        while not self._closing:
            try:
                result = await self._connect_once(self._protocol)
            except Exception as exc:  # keep the supervisor alive whatever paho throws
                result = _Attempt("unreachable", f"{type(exc).__name__}: {exc}")
            if result.kind == "ok":
                failures, outage_logged, refusal_logged, left = 0, False, False, len(self._nodes)
                if unconfirmed_fallback is not None and self._protocol == "3.1.1":
                    log = self._log.debug if fallback_logged else self._log.info
                    log("mqtt_protocol_fallback", to="3.1.1", because=unconfirmed_fallback)
                    fallback_logged = True
                unconfirmed_fallback = None
                failback = await self._hold() if not self._closing else False
                if self._closing:
                    return
                if failback:
                    self._move(0, "failback")
                    continue
                self._log_loss()
                outage_logged = True
                left -= 1
                if left > 0:  # the lost node counts as tried: the next one at once
                    self._move(self._node + 1, "failover")
                    continue
            elif (hint := tls_refusal(result.detail, self._has_client_cert)) is not None:
                # not a protocol problem: no fallback, one line that says what to do, even
                # after an unexplained failure of the same outage (a reset that hid the alert)
                log = self._log.debug if refusal_logged else self._log.warning
                log("mqtt_tls_refused", reason=result.detail, hint=hint,
                    pending=len(self._pending))
                outage_logged = refusal_logged = True
                unconfirmed_fallback = None
                failures += 1
                left -= 1
                if left > 0:  # another node may trust our certificate
                    self._move(self._node + 1, "failover")
                    continue
            elif (
                self._dest.protocol == "auto"
                and self._protocol == "5"
                and (result.reason == _UNSUPPORTED_PROTOCOL or result.kind == "dropped")
            ):
                self._protocol, tentative_311 = "3.1.1", result.kind == "dropped"
                if tentative_311:
                    self._log.debug("mqtt_protocol_trying", to="3.1.1", because=result.detail)
                    unconfirmed_fallback = result.detail
                else:
                    log = self._log.debug if fallback_logged else self._log.info
                    log("mqtt_protocol_fallback", to="3.1.1", because=result.detail)
                    fallback_logged = True
                continue  # try 3.1.1 at once
            else:
                log = self._log.debug if outage_logged else self._log.warning
                log(
                    "mqtt_connect_failed",
                    reason=result.detail,
                    protocol=self._protocol,
                    pending=len(self._pending),
                )
                outage_logged = True
                failures += 1
                left -= 1
                if left > 0:
                    self._move(self._node + 1, "failover")
                    continue
            if tentative_311:  # a bare drop may have been a restarting broker: try 5 first again
                self._protocol, tentative_311 = "5", False
            low, high = self._backoff
            cap = min(high, low * 2 ** min(failures + 1, 20))
            await asyncio.sleep(max(low, random.uniform(cap / 2, cap)))
            left = len(self._nodes)
            self._move(0, "retry")  # every round starts at the preferred node

    def _log_loss(self) -> None:
        """One warning per `LOSS_LOG_INTERVAL` with the count of links lost since the last
        one: a broker that accepts the link and closes it a second later (another client
        taking the same client id over) logged a warning and an info line every few seconds
        for as long as it went on. A link that short gets a hint saying what to look for."""
        self._losses_unlogged += 1
        now = time.monotonic()
        lived = time.time() - self._connected_since
        if now - self._loss_logged_at < LOSS_LOG_INTERVAL:
            self._log.debug("mqtt_disconnected", reason=self._lost_reason, lived_s=round(lived, 1))
            return
        hint = {} if lived >= _SHORT_LINK else {"hint": (
            f"the broker closed the link {lived:.1f} s after accepting it: is another client "
            f"using the client id {self._client_id!r} (this gateway running twice, or another "
            f"host with the same gateway id)?")}
        self._log.warning("mqtt_disconnected", reason=self._lost_reason,
                          pending=len(self._pending), losses=self._losses_unlogged, **hint)
        self._losses_unlogged, self._loss_logged_at = 0, now

    def _move(self, index: int, why: str) -> None:
        """Make node `index` (modulo the list) the one the next attempt connects to."""
        index %= len(self._nodes)
        if index == self._node:
            return
        before, self._node = self.broker, index
        self._log = self._base_log.bind(broker=self.broker)
        if why != "retry":
            self._stats["failovers"] += 1
            self._log.info(f"mqtt_{why}", previous=before, pending=len(self._pending))

    async def _hold(self) -> bool:
        """Wait while connected. True when the link was closed to return to the first node."""
        every = self._dest.failback_after
        while not self._closing and not self._lost.is_set():
            if self._node == 0 or every <= 0:
                await self._lost.wait()
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._lost.wait()
            if self._lost.is_set() or self._closing:
                return False
            if await _reachable(*self._nodes[0]):
                client = self._client
                if client is not None:
                    self._gone(client, "returning to the first broker url")
                    self._drop(client)
                return True
        return False

    async def _connect_once(self, protocol: MqttVersion) -> _Attempt:
        assert self._loop is not None
        client = self._new_client(protocol)
        self._client = client
        self._lost.clear()
        self._paho_errors.take()
        self._attempt = attempt = self._loop.create_future()
        self._connecting = self._loop.run_in_executor(
            None, self._blocking_connect, client, protocol
        )
        try:
            await asyncio.shield(self._connecting)
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake
            return _Attempt("unreachable", str(exc) or type(exc).__name__)
        try:  # not wait_for: on 3.11 it can swallow a cancel that races with the result
            async with asyncio.timeout(_CONNACK_TIMEOUT):
                result: _Attempt = await asyncio.shield(attempt)
        except TimeoutError:
            result = _Attempt("dropped", f"no CONNACK within {_CONNACK_TIMEOUT:.0f} s")
        if result.kind != "ok":
            self._drop(client)
        return result

    def _drop(self, client: mqtt.Client) -> None:
        """Close a client's socket now, while it is still the one the loop watches."""
        if client.socket() is not None:
            client.disconnect()
            client.loop_write()  # flushes DISCONNECT; paho then closes the socket
        if client.socket() is not None:
            client._sock_close()  # could not flush; paho has no public close
        self._unwire()

    def _blocking_connect(self, client: mqtt.Client, protocol: MqttVersion) -> None:
        host, port = self._nodes[self._node]
        if protocol == "5":
            client.connect(host, port, self._dest.keepalive, clean_start=True)
        else:
            client.connect(host, port, self._dest.keepalive)

    def _new_client(self, protocol: MqttVersion) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=_PAHO_PROTOCOL[protocol],
            clean_session=None if protocol == "5" else True,
            reconnect_on_failure=False,  # we reconnect; stops paho's own downgrade to 3.1
        )
        c.connect_timeout = _CONNECT_TIMEOUT
        c.max_inflight_messages_set(100)
        if self._dest.username is not None:
            c.username_pw_set(self._dest.username, self._password)
        if self._ssl is not None:
            c.tls_set_context(self._ssl)
            if self._insecure:
                c.tls_insecure_set(True)
            c.enable_logger(self._paho_log)  # keeps the TLS alert of a refused client side
        will = self._will() if callable(self._will) else self._will
        if will is not None:
            topic, payload, retain = will
            c.will_set(topic, payload, qos=1, retain=retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_socket_open = lambda cl, _u, sock: self._in_loop(self._wire, cl, sock)
        c.on_socket_close = lambda cl, _u, _s: self._in_loop(self._unwire_later, cl)
        c.on_socket_register_write = lambda cl, _u, _s: self._in_loop(self._want_write, cl, True)
        c.on_socket_unregister_write = lambda cl, _u, _s: self._in_loop(self._want_write, cl, False)
        return c

    @property
    def _has_client_cert(self) -> bool:
        return self._dest.tls is not None and self._dest.tls.cert_file is not None

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self._dest.tls
        try:
            ctx = ssl.create_default_context(cafile=tls.ca_file if tls else None)
            ctx.sslsocket_class = _ClosingSSLSocket
            if tls is not None and tls.cert_file is not None:
                key_password = resolve_secret(tls.key_password) if tls.key_password else None
                ctx.load_cert_chain(tls.cert_file, tls.key_file, password=key_password)
            if tls is not None and tls.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigurationError(
                f"destination {self._dest.id}: TLS settings unusable: {exc}"
            ) from exc
        return ctx

    # ---------------------------------------------------------------- socket <-> event loop

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """paho calls socket callbacks from the executor while connecting; hop to the loop."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)

    def _wire(self, client: mqtt.Client, sock: Any) -> None:
        fd: int = sock.fileno()
        if client is not self._client or client.socket() is not sock or self._loop is None:
            return
        self._unwire()
        self._wiring = _Wiring(fd=fd, misc=self._loop.create_task(self._misc_loop(client)))
        self._loop.add_reader(fd, self._readable, client, sock)

    def _readable(self, client: mqtt.Client, sock: Any) -> None:
        client.loop_read()
        # TLS records already decrypted inside the SSL object do not wake the selector again.
        while client.socket() is sock and isinstance(sock, ssl.SSLSocket) and sock.pending():
            client.loop_read()

    def _want_write(self, client: mqtt.Client, on: bool) -> None:
        """paho has packets to write (`on`) or has written them all.

        Packets are written at the end of the loop iteration that queued them, by one
        `loop_write` for all of them, and the selector is asked to watch the socket only
        when it would not take them all (a full send buffer). Watching it for every
        publish cost two epoll_ctl calls and a selector round per envelope (issue 17).
        Until CONNACK the selector decides as before: a broker refusing the TLS client
        says why in an alert that must be read before anything is written."""
        w = self._wiring
        if client is not self._client or w.fd < 0 or self._loop is None:
            return
        if on and self._connected and not w.writing and not w.flushing:
            if not w.flush_due:
                w.flush_due = True
                self._loop.call_soon(self._flush, client, w)
            return
        if on == w.writing:
            return
        if on:
            self._loop.add_writer(w.fd, client.loop_write)
        else:
            self._loop.remove_writer(w.fd)
        w.writing = on

    def _flush(self, client: mqtt.Client, w: _Wiring) -> None:
        w.flush_due = False
        if w is not self._wiring or client is not self._client:
            return  # the socket this was for is gone
        w.flushing = True
        try:
            client.loop_write()
        finally:
            w.flushing = False
        # what the socket could not take: paho still counts its write as registered and
        # will not ask again, so the selector is told here; paho's unregister ends it
        if client.want_write() and w is self._wiring and not w.writing:
            assert self._loop is not None
            self._loop.add_writer(w.fd, client.loop_write)
            w.writing = True

    def _unwire(self) -> None:
        w, self._wiring = self._wiring, _Wiring()
        if w.fd >= 0 and self._loop is not None:
            with contextlib.suppress(OSError, ValueError):  # fd already closed
                self._loop.remove_reader(w.fd)
                self._loop.remove_writer(w.fd)
        if w.misc is not None and w.misc is not asyncio.current_task():
            w.misc.cancel()

    def _unwire_later(self, client: mqtt.Client) -> None:
        if client is self._client and self._loop is not None:
            self._unwire()
            # paho closes the socket before on_disconnect, whose reason is the better one.
            self._loop.call_soon(self._gone, client, "socket closed")

    async def _misc_loop(self, client: mqtt.Client) -> None:
        """Keep-alive: paho needs a periodic tick to send PINGREQ and notice a silent broker."""
        while client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 (polling is the API)
            await asyncio.sleep(1)

    # ---------------------------------------------------------------- paho callbacks (loop thread)

    def _settle(self, result: _Attempt) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(result)

    def _set_connected(self, up: bool) -> None:
        self._connected = up
        if up:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    def _on_connect(
        self,
        client: mqtt.Client,
        _u: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._settle(_Attempt("refused", f"CONNACK: {reason}", reason.value))
            return
        # Nagle off: a PUBACK followed at once by a publish (a query's reply) would otherwise
        # wait for the broker's delayed ACK of the PUBACK, up to 40 ms (bench section 2m).
        # Only after CONNACK: before it, Nagle holds CONNECT until the TLS handshake's last
        # flight is acknowledged; sent at once, it reached a broker refusing our certificate
        # (TLS 1.3 refuses after the handshake) unread, the broker's close became a reset,
        # and the alert saying why was lost (test_mutual_tls, on a loaded host).
        sock = client.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ever_connected:
            self._stats["reconnects"] += 1
        self._ever_connected = True
        self._by_mid.clear()
        self._connected_since = time.time()
        self._set_connected(True)
        if self._birth is not None:  # undoes a will the broker may have sent for the last link
            topic, payload, retain = self._birth
            client.publish(topic, payload, qos=1, retain=retain)
        for topic, payload, retain in self._announcements:  # before any re-send or new data
            client.publish(topic, payload, qos=1, retain=retain)
        for topic, qos in self._subscriptions.items():
            # nobody awaits a re-subscription: a refusal is logged in _on_subscribe and a
            # lost link by the disconnect, so the future's exception is only consumed here
            self._send_subscribe(client, topic, qos).add_done_callback(_consume_outcome)
        resend = [
            r for r in self._pending.values() if not r.future.done() and not r.this_link_only
        ]
        for rec in resend:
            self._send(rec)
        # back after a loss logged at debug (a flapping link): at debug too
        log = self._log.debug if self._losses_unlogged else self._log.info
        log(
            "mqtt_connected",
            protocol=self._protocol,
            resent=len(resend),
            reconnects=self._stats["reconnects"],
        )
        if self._insecure:  # on every connect: the risk is taken again each time
            self._log.warning("mqtt_tls_not_verified", hint=INSECURE_HINT)
        self._settle(_Attempt("ok"))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        _u: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._gone(client, str(reason))

    def _gone(self, client: mqtt.Client, reason: str) -> None:
        if client is not self._client:
            return
        socket_error = self._paho_errors.take()  # e.g. the TLS alert behind "Unspecified error"
        if socket_error:
            reason = f"{reason}: {socket_error}"
        self._settle(_Attempt("dropped", f"connection closed before CONNACK ({reason})"))
        if self._connected:
            self._lost_reason = reason
            self._set_connected(False)
            for fut in self._suback.values():
                if not fut.done():
                    fut.set_exception(TransportError("connection lost before SUBACK"))
            self._suback.clear()
            for rec in [r for r in self._pending.values() if r.this_link_only]:
                self._fail(rec, TransportError("connection lost before the broker acknowledged"))
            self._lost.set()

    def _send(self, rec: _Outgoing) -> None:
        client = self._client
        assert client is not None
        v5 = self._protocol == "5"
        payload = rec.payload if v5 or rec.payload_mqtt311 is None else rec.payload_mqtt311
        try:
            info = client.publish(
                rec.topic, payload, rec.qos, rec.retain, properties=rec.properties if v5 else None
            )
        except (ValueError, RuntimeError) as exc:
            self._fail(rec, TransportError(f"cannot publish to {rec.topic!r}: {exc}"))
            return
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: sent on reconnect
            self._by_mid[info.mid] = rec
        else:
            reason = mqtt.error_string(info.rc)
            self._fail(rec, TransportError(f"cannot publish to {rec.topic!r}: {reason}"))

    def _fail(self, rec: _Outgoing, exc: Exception) -> None:
        self._pending.pop(rec.key, None)
        if not rec.future.done():
            rec.future.set_exception(exc)

    def _on_publish(
        self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        rec = self._by_mid.pop(mid, None) if client is self._client else None
        if rec is None:
            return
        if reason.is_failure:
            self._fail(rec, TransportError(f"broker refused publish to {rec.topic!r}: {reason}"))
            return
        self._pending.pop(rec.key, None)
        if not rec.future.done():
            rec.future.set_result(None)
            self._stats["acked"] += 1
            self.last_ack = utc_now()

    def _send_subscribe(self, client: mqtt.Client, topic: str, qos: int) -> asyncio.Future[None]:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        try:
            rc, mid = client.subscribe(topic, qos)
        except ValueError as exc:
            fut.set_exception(TransportError(f"cannot subscribe to {topic!r}: {exc}"))
            return fut
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            reason = mqtt.error_string(rc)
            fut.set_exception(TransportError(f"cannot subscribe to {topic!r}: {reason}"))
        else:
            self._suback[mid] = fut
        return fut

    def _on_subscribe(
        self,
        client: mqtt.Client,
        _u: Any,
        mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        fut = self._suback.pop(mid, None)
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self._log.warning("mqtt_subscribe_refused", reasons=refused)
        if fut is not None and not fut.done():
            if refused:
                fut.set_exception(TransportError(f"subscription refused: {', '.join(refused)}"))
            else:
                fut.set_result(None)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        user = getattr(props, "UserProperty", None) or []
        incoming = IncomingMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
            user_properties=tuple((str(k), str(v)) for k, v in user),
        )
        try:
            self._inbox.put_nowait(incoming)
        except asyncio.QueueFull:
            self._log.warning("mqtt_inbox_full", dropped_topic=msg.topic)
