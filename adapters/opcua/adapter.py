"""The OPC UA adapter: subscriptions by default, cyclic reads per point, and profiles that
map a machine without a point list: `machinery` (OPC 40001-1), `machine_tool` (OPC 40501-1
on top of it) and `sinumerik` (the SINUMERIK OPC UA server's NC variables).

Failure policy, chosen so a machine that goes quiet is visible and comes back by itself:

- asyncua's own reconnect loop is off (`auto_reconnect=False`): the gateway's runner owns
  retry timing (capped backoff with jitter, one log line on loss and one on recovery).
  Each `connect()` builds a fresh client, session and subscriptions, so nothing of a dead
  session (tasks, handles, queues) survives it and memory stays flat across reconnects.
- Loss is noticed three ways: the socket closes (server stopped), asyncua's watchdog probe
  of ServerStatus/State times out every `watchdog_interval` (server frozen, network black
  hole), or a subscription reports a bad status. Then `stream()` yields one last batch,
  `availability = unavailable` plus every signal with quality bad, and raises
  `DeviceUnavailable`; the gap is in the data, not only in a log.
- A node that cannot be resolved or monitored (unknown namespace URI, BadNodeIdUnknown,
  deadband refused) makes that signal bad, is logged once, and does not stop the others.
- Wrong credentials are a `ConfigurationError` (retrying cannot help); an untrusted server
  certificate is a transient `UntrustedServerCertificate`, so moving the file into the trust
  directory is enough, no restart. The server refusing *our* certificate (CreateSession:
  BadCertificateUntrusted...) is transient too, with a message naming the file and its
  thumbprint to trust on the server. A server that does not offer the configured security
  endpoint is transient as well: servers starting up or reloading offer fewer endpoints
  for a while, and a machine must not stay FAILED until the gateway is reloaded.
- `reachable()` answers whether the server's port accepts connections again, so the runner
  retries at once when a server that was gone comes back instead of sitting out its
  backoff.

- With a profile, alarms come from condition events (alarms.py), refreshed with
  ConditionRefresh on every connect, because an event missed while away is otherwise lost
  for good. Their event items share the last data subscription when it has room, so a
  machine needs one subscription (publish_race.py says why that also matters for logs).

Every call into asyncua sits behind `asyncio.timeout`, so a library bug cannot hang us.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from pydantic import BaseModel

from adapters.base import Adapter, AdapterContext, expect_settings
from adapters.engineering import MAX_SAFE_INTEGER
from models.errors import ConfigurationError, DeviceUnavailable, TransientError
from models.machine_state import SIG_AVAILABILITY, Availability
from models.sample import Quality, Sample, Value, utc_now

from . import alarms, sinumerik, teardown_noise
from . import machine_tool as mt
from .profile_signals import ALARM_SIGNALS, identification_signal, signal_sources
from .publish_race import STARTUP_FILTER
from .security import (
    UntrustedServerCertificate,
    check_server_certificate,
    ensure_client_identity,
    resolve_secret,
    thumbprint,
)
from .settings import OpcUaConnection, OpcUaPoint, OpcUaSettings, browse_segments

teardown_noise.install()  # a retry's teardown is no news (teardown_noise.py)

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_AUTH_CODES = frozenset(
    {
        StatusCodes.BadIdentityTokenRejected,
        StatusCodes.BadIdentityTokenInvalid,
        StatusCodes.BadUserAccessDenied,
    }
)
_QUEUE_LIMIT = 10_000
# the server refuses the certificate the gateway presented (CreateSession/OpenSecureChannel)
_CLIENT_CERT_REFUSED = frozenset(
    {
        StatusCodes.BadCertificateUntrusted,
        StatusCodes.BadCertificateInvalid,
        StatusCodes.BadCertificateRevoked,
        StatusCodes.BadCertificateIssuerRevoked,
        StatusCodes.BadCertificateUriInvalid,
        StatusCodes.BadCertificateTimeInvalid,
        StatusCodes.BadCertificateUseNotAllowed,
        StatusCodes.BadSecurityChecksFailed,
    }
)


@dataclass(frozen=True)
class _Binding:
    """What one monitored item or read feeds: a configured point or a profile input."""

    signal: str
    unit: str | None
    point: OpcUaPoint | None = None
    profile_input: str | None = None


@dataclass(frozen=True)
class _Lost:
    reason: str


def _first_certificate(der: bytes) -> bytes:
    """A server may send a chain (concatenated DER); its own certificate comes first."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    n = der[1]
    if n < 0x80:
        return der[: 2 + n]
    k = n & 0x7F
    return der[: 2 + k + int.from_bytes(der[2 : 2 + k], "big")]


def _why(exc: BaseException, waited: float) -> str:
    """Never an empty reason: asyncua's watchdog and timeouts raise exceptions without text."""
    if isinstance(exc, TimeoutError):
        return (f"no answer from the server within {waited:g} s "
                f"({type(exc).__name__}): server frozen or network down")
    return str(exc) or type(exc).__name__


def _quality(code: ua.StatusCode | None) -> Quality:
    if code is None or code.is_good():
        return Quality.GOOD
    return Quality.UNCERTAIN if code.is_uncertain() else Quality.BAD


def plain(value: Any) -> Value:
    """An OPC UA value as one of Sample's plain types (a UInt64 beyond 2**53 as text, exact:
    canonical JSON carries numbers as doubles, see adapters/engineering.py)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ua.LocalizedText | ua.QualifiedName):
        return mt.text(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class _Handler:
    """asyncua's subscription callbacks, turned into items on the adapter's queue."""

    def __init__(self, adapter: OpcUaAdapter) -> None:
        self.adapter = adapter
        self.generation = adapter._generation

    def _current(self) -> bool:
        """A late callback of a previous session must not land in the new one's signals."""
        return self.generation == self.adapter._generation

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        item = data.monitored_item
        binding = self.adapter._bindings.get(item.ClientHandle)
        if binding is not None and self._current():
            self.adapter._on_value(binding, item.Value)

    def event_notification(self, event: Any) -> None:
        if self._current():
            self.adapter._on_event(event)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        code = status.Status
        if not code.is_good() and self._current():
            self.adapter._lost(f"subscription status {code.name}")

def node_id_of(text: str, ns: dict[str, int]) -> ua.NodeId:
    """A configured `nsu=<uri>;...` (or namespace-0) id as this server's NodeId; LookupError
    when the server does not carry the namespace."""
    if text.startswith("nsu="):
        uri, _, rest = text[4:].partition(";")
        if uri not in ns:
            raise LookupError(f"namespace {uri} is not on the server")
        return ua.NodeId.from_string(f"ns={ns[uri]};{rest}")
    return ua.NodeId.from_string(text)


def subscription_parameters(c: OpcUaConnection) -> ua.CreateSubscriptionParameters:
    """One subscription's timing, for data and alarm subscriptions alike: publish every
    `publishing_interval`; a keep-alive at least every ~5 s, so a silent server is noticed;
    a lifetime of three session timeouts, so the server keeps the subscription across a
    reconnect that reactivates the session."""
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=c.publishing_interval * 1000,
        RequestedLifetimeCount=max(30, int(3 * c.session_timeout / c.publishing_interval)),
        RequestedMaxKeepAliveCount=max(3, int(5 / c.publishing_interval)),
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
        Priority=0,
    )


class OpcUaAdapter(Adapter):
    """OPC UA servers (asyncua client), optionally mapped by a machine profile."""

    settings_model: ClassVar[type[BaseModel]] = OpcUaSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, OpcUaSettings)
        super().__init__(context, settings)
        self.config = settings
        c = settings.connection
        self.endpoint = c.endpoint
        self._guard = c.timeout * 2 + 1.0
        self._client: Client | None = None
        self._queue: asyncio.Queue[Sample | _Lost] = asyncio.Queue()
        self._bindings: dict[int, _Binding] = {}
        self._reads: list[tuple[ua.NodeId, _Binding]] = []
        self._subscriptions: list[Subscription] = []
        self._room: tuple[Subscription, int] | None = None  # last subscription, items to spare
        self._read_task: asyncio.Task[None] | None = None
        self._inputs: dict[str, Any] = {}
        self._derived: dict[str, tuple[Value, str | None]] = {}
        self._signals: dict[str, str | None] = {p.name: p.unit for p in settings.points}
        self._reported: set[str] = set()
        # why a configured point is bad since connect, in the server's words (`raw_values`)
        self._failed: dict[str, str] = {}
        self._dropped = 0
        self._generation = 0
        self._messages: ua.NodeId | None = None
        self._alarms = alarms.AlarmSet()
        self._alarms_settled = False
        self._alarm_last: dict[str, tuple[Value, Quality]] = {}
        self._alarm_timer: asyncio.Handle | None = None
        self.alarm_source: str | None = None
        self._ns_uris: list[str] = []
        self._input_nodes: dict[str, str] | None = None  # None until discovery ran
        self._identification_nodes: dict[str, str] = {}
        self._alarm_node: str | None = None
        self.identification: dict[str, Value] = {}
        self.machine_name: str | None = None
        self.discovered: list[str] = []
        self.subscription_count = 0
        self.connects = 0
        self._client_cert: tuple[Path, bytes] | None = None  # (file, DER) once secured

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.aclose()  # the runner reconnects on the same instance
        self._generation += 1
        self._queue = asyncio.Queue()
        c = self.config.connection
        client = Client(c.endpoint, timeout=c.timeout, watchdog_intervall=c.watchdog_interval)
        client.session_timeout = int(c.session_timeout * 1000)
        client.application_uri = c.application_uri
        client.name = client.description = "edge-gateway"
        client.product_uri = "urn:edge-gateway"
        username = resolve_secret(c.username)
        if username is not None:
            client.set_user(username)
            password = resolve_secret(c.password)
            if password is not None:
                client.set_password(password)
        try:
            if c.security_policy != "None":
                await self._secure(client)
            client.connection_lost_callback = self._connection_lost
            async with asyncio.timeout(self._guard):
                await client.connect()
        except (ConfigurationError, TransientError):
            await self._drop(client)
            raise
        except UaStatusCodeError as exc:
            await self._drop(client)
            if exc.code in _AUTH_CODES:
                raise ConfigurationError(
                    f"{self.endpoint}: server refused the user {username!r}: "
                    f"{ua.StatusCode(exc.code).name}"
                ) from None
            if exc.code in _CLIENT_CERT_REFUSED and self._client_cert is not None:
                path, der = self._client_cert
                raise DeviceUnavailable(
                    f"{self.endpoint}: the server refused the gateway's certificate "
                    f"({ua.StatusCode(exc.code).name}); to fix it, trust {path} (thumbprint "
                    f"{thumbprint(der)}) on the server, e.g. move it from the server's "
                    "rejected to its trusted certificates; retried without a restart"
                ) from None
            raise DeviceUnavailable(f"{self.endpoint}: {ua.StatusCode(exc.code).name}") from exc
        except TimeoutError as exc:
            await self._drop(client)
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        except Exception as exc:  # library boundary: nothing of asyncua escapes
            await self._drop(client)
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {_why(exc, 0)}") from exc
        self._client = client
        self.connects += 1
        self._reported.discard("untrusted")  # log again if it is ever refused again
        try:
            async with asyncio.timeout(self._guard * 4):
                await self._setup(client)
        except (ConfigurationError, TransientError):
            await self.aclose()
            raise
        except Exception as exc:
            await self.aclose()
            raise DeviceUnavailable(
                f"{self.endpoint}: setup failed: {_why(exc, self._guard * 4)}") from exc

    async def _secure(self, client: Client) -> None:
        """Client identity, server certificate trust, then asyncua's secure channel."""
        c = self.config.connection
        identity = ensure_client_identity(c.pki_path(self.context.state_dir), c.application_uri)
        self._client_cert = (identity.cert_path, identity.cert_der)
        policy = _POLICIES[c.security_policy]
        mode = _MODES[c.security_mode]
        probe = Client(c.endpoint, timeout=c.timeout)
        try:
            async with asyncio.timeout(self._guard):
                endpoints = await probe.connect_and_get_server_endpoints()
        except Exception as exc:
            probe.disconnect_socket()  # a timed-out probe must not leave its socket behind
            raise DeviceUnavailable(f"{self.endpoint}: cannot list endpoints: {exc}") from exc
        try:
            ep = Client.find_endpoint(endpoints, mode, policy.URI)
        except UaError:
            offered = sorted(
                {
                    f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                    for e in endpoints
                }
            )
            raise DeviceUnavailable(  # transient: a server starting up may offer fewer for a while
                f"{self.endpoint}: no endpoint with {c.security_policy}/{c.security_mode}; "
                f"the server offers {', '.join(offered)} (retried; if it stays so, change "
                "security_policy/security_mode or the server's endpoints)"
            ) from None
        server_cert = _first_certificate(bytes(ep.ServerCertificate or b""))
        if not server_cert:
            raise ConfigurationError(f"{self.endpoint}: the secure endpoint has no certificate")
        try:
            pinned = check_server_certificate(
                server_cert,
                trust_dir=c.trust_path(self.context.state_dir),
                pki_dir=c.pki_path(self.context.state_dir),
                tofu=c.trust_on_first_use,
                endpoint=self.endpoint,
            )
        except UntrustedServerCertificate as exc:
            self._log_once(
                "untrusted", "warning", "opcua_untrusted_server_certificate", error=str(exc)
            )
            raise
        if pinned and self.context.logger is not None:
            self.context.logger.warning(
                "opcua_server_certificate_pinned", endpoint=self.endpoint, file=pinned
            )
        await client.set_security(
            policy, identity.cert_path, identity.key_path, server_certificate=server_cert, mode=mode
        )

    async def _setup(self, client: Client) -> None:
        c = self.config.connection
        ns_array = await client.get_namespace_array()
        ns = {uri: i for i, uri in enumerate(ns_array)}
        self._ns_uris = list(ns_array)
        self._bindings.clear()
        self._failed.clear()
        self._reads = []
        self._inputs = {}
        self._derived = {}
        subscribe: list[tuple[ua.NodeId, _Binding]] = []
        self._queue.put_nowait(
            self._sample(SIG_AVAILABILITY, Availability.AVAILABLE.value, None, None, Quality.GOOD)
        )
        if c.profile in ("machinery", "machine_tool"):
            subscribe += await self._discover(client, ns)
        elif c.profile == "sinumerik":
            subscribe += await self._discover_sinumerik(client, ns)
        for p in self.config.points:
            nodeid = await self._resolve(client, ns, p)
            if nodeid is None:
                self._queue.put_nowait(self._sample(p.name, None, p.unit, None, Quality.BAD))
                continue
            binding = _Binding(p.name, p.unit, point=p)
            (subscribe if p.mode == "subscribe" else self._reads).append((nodeid, binding))
        await self._subscribe(client, subscribe)
        if c.profile != "none":
            await self._subscribe_alarms(client)
        if self._reads:
            self._read_task = asyncio.create_task(
                self._read_loop(client), name=f"opcua-read {self.context.asset}"
            )

    async def aclose(self) -> None:
        timer, self._alarm_timer = self._alarm_timer, None
        if timer is not None:
            timer.cancel()
        task, self._read_task = self._read_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client = self._client, None
        self._subscriptions = []
        self._room = None
        self._bindings.clear()
        if client is not None:
            await self._drop(client)

    async def _drop(self, client: Client) -> None:
        """Disconnect politely if the server answers, else just close the socket."""
        client.connection_lost_callback = None
        try:
            async with asyncio.timeout(min(2.0, self.config.connection.timeout)):
                await client.disconnect()
        except Exception:
            with contextlib.suppress(Exception):
                client.disconnect_socket()

    # -- resolution and discovery ---------------------------------------------------------

    async def _resolve(self, client: Client, ns: dict[str, int], p: OpcUaPoint) -> ua.NodeId | None:
        try:
            if p.node.startswith("/"):
                root = self._nodeid(p.root, ns)
                path = []
                for uri, name in browse_segments(p.node):
                    if uri is not None and uri not in ns:
                        raise LookupError(f"namespace {uri} is not on the server")
                    path.append(ua.QualifiedName(name, ns[uri] if uri else 0))
                try:
                    node = await client.get_node(root).get_child(path)
                except UaStatusCodeError as exc:
                    why = await self._unmatched_segment(client, root, path)
                    raise LookupError(why or ua.StatusCode(exc.code).name) from None
                return node.nodeid
            return self._nodeid(p.node, ns)
        except LookupError as exc:
            why = str(exc)
        except UaStatusCodeError as exc:
            why = ua.StatusCode(exc.code).name
        self._failed[p.name] = f"unresolved: {why}"
        self._log_once(
            f"resolve:{p.name}",
            "warning",
            "opcua_node_unresolved",
            point=p.name,
            node=p.node,
            error=why,
        )
        return None

    @staticmethod
    async def _unmatched_segment(client: Client, root: ua.NodeId,
                                 path: list[ua.QualifiedName]) -> str | None:
        """Which segment of a browse path the server does not have, walked one step at a time
        (only after the whole path failed): "no such node" alone leaves the operator to
        guess which of eight names is misspelt."""
        node = client.get_node(root)
        for i, qn in enumerate(path):
            try:
                node = await node.get_child([qn])
            except UaStatusCodeError:
                under = "/" + "/".join(q.Name for q in path[:i]) if i else "the root"
                return f"browse path segment {i + 1} {qn.Name!r} not found under {under}"
        return None

    _nodeid = staticmethod(node_id_of)

    async def _discover(
        self, client: Client, ns: dict[str, int]
    ) -> list[tuple[ua.NodeId, _Binding]]:
        c = self.config.connection
        roles = mt.ROLE_TYPES if c.profile == "machine_tool" else mt.MACHINERY_ROLES
        try:
            found = await mt.discover(client, ns, c.machine, roles)
        except LookupError as exc:
            raise ConfigurationError(f"{self.endpoint}: profile {c.profile}: {exc}") from None
        self.machine_name = found.name
        self._messages = found.roles.get("messages")
        self.discovered = sorted(found.inputs)
        self._input_nodes = {k: self._node_text(n) for k, n in found.inputs.items()}
        self._identification_nodes = {
            name: self._node_text(n) for name, n in found.identification.items()
        }
        if found.identification:
            names = list(found.identification)
            values = await client.read_attributes(
                [client.get_node(found.identification[n]) for n in names]
            )
            for name, dv in zip(names, values, strict=True):
                value = plain(dv.Value.Value if dv.Value is not None else None)
                self.identification[name] = value
                signal = identification_signal(name)
                self._signals[signal] = None
                self._queue.put_nowait(
                    self._sample(signal, value, None, dv.SourceTimestamp, _quality(dv.StatusCode))
                )
        if self.context.logger is not None:
            self.context.logger.info(
                "opcua_machine_discovered",
                endpoint=self.endpoint,
                profile=c.profile,
                machine=found.name,
                roles=sorted(found.roles),
                inputs=sorted(found.inputs),
            )
        return [
            (nodeid, _Binding(key, None, profile_input=key)) for key, nodeid in found.inputs.items()
        ]

    async def _discover_sinumerik(
        self, client: Client, ns: dict[str, int]
    ) -> list[tuple[ua.NodeId, _Binding]]:
        try:
            found = await sinumerik.resolve(client, ns)
        except LookupError as exc:
            raise ConfigurationError(f"{self.endpoint}: profile sinumerik: {exc}") from None
        self._messages = None  # SINUMERIK alarms are events of the Server object
        self.machine_name = sinumerik.ROOT_NAME
        self.discovered = sorted(found.inputs)
        self._input_nodes = {k: self._node_text(n) for k, n in found.inputs.items()}
        if found.missing:
            self._log_once("sinumerik_missing", "warning", "opcua_sinumerik_variables_missing",
                           variables=found.missing)
        if self.context.logger is not None:
            self.context.logger.info(
                "opcua_machine_discovered", endpoint=self.endpoint, profile="sinumerik",
                inputs=self.discovered,
            )
        return [(nodeid, _Binding(key, None, profile_input=key))
                for key, nodeid in found.inputs.items()]

    # -- subscriptions and reads ----------------------------------------------------------

    async def _server_item_limit(self, client: Client) -> int | None:
        """ServerCapabilities/MaxMonitoredItemsPerSubscription (OPC UA 1.05), when offered."""
        node = client.get_node(mt.node_id(24104, 0))
        try:
            value = await node.read_value()
        except Exception:  # an older server without the node, or it refuses the read
            return None
        return value if isinstance(value, int) and value > 0 else None

    async def _subscribe(self, client: Client, items: list[tuple[ua.NodeId, _Binding]]) -> None:
        """Monitored items spread over as many subscriptions as the server needs.

        A chunk holds at most `max_items_per_subscription` items, or fewer when the server
        announces a lower MaxMonitoredItemsPerSubscription. Items a server still refuses
        with BadTooManyMonitoredItems move on to a new subscription; any other refusal
        makes that one signal bad (logged once).
        """
        c = self.config.connection
        chunk = c.max_items_per_subscription
        if items:
            chunk = min(chunk, await self._server_item_limit(client) or chunk)
        handler = _Handler(self)
        handle = 0
        pending = list(items)
        self._room = None
        while pending:
            part, pending = pending[:chunk], pending[chunk:]
            sub = await self._new_subscription(client, handler)
            requests = []
            for nodeid, binding in part:
                handle += 1
                self._bindings[handle] = binding
                requests.append(self._request(handle, nodeid, binding))
            results = await sub.create_monitored_items(requests)
            overflow: list[tuple[ua.NodeId, _Binding]] = []
            for item, result in zip(part, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    continue
                binding = item[1]
                if (
                    result.value == StatusCodes.BadTooManyMonitoredItems
                    and len(overflow) < len(part) - 1
                ):
                    overflow.append(item)
                    continue
                self._failed[binding.signal] = f"refused by the server: {result.name}"
                self._log_once(
                    f"monitor:{binding.signal}",
                    "warning",
                    "opcua_monitored_item_refused",
                    signal=binding.signal,
                    error=result.name,
                )
                if binding.point is not None:
                    self._queue.put_nowait(
                        self._sample(binding.signal, None, binding.unit, None, Quality.BAD)
                    )
            if overflow:
                chunk = max(1, len(part) - len(overflow))
                pending = overflow + pending
            else:
                self._room = (sub, chunk - len(part))
        self.subscription_count = len(self._subscriptions)

    async def _new_subscription(self, client: Client, handler: _Handler) -> Subscription:
        """One more subscription of this session; see publish_race.py for why asyncua may
        warn about it while it is created."""
        with STARTUP_FILTER.creating():
            sub = await client.create_subscription(
                subscription_parameters(self.config.connection), handler
            )
        self._subscriptions.append(sub)
        return sub

    async def _subscribe_alarms(self, client: Client) -> None:
        """Condition events of the machine (Notification/Messages, else the Server object).

        A server that refuses event subscriptions costs the alarm signals only (logged
        once), never the device; one that does not answer fails the setup like any other
        request, and the connection is retried. See alarms.py for why ConditionRefresh
        follows.
        """
        c = self.config.connection
        self._alarms.clear()
        self._alarms_settled = False
        self._alarm_last = {}
        server = mt.node_id(ObjectIds.Server, 0)
        source, self.alarm_source = server, "server"
        self._alarm_node = None
        if self._messages is not None:
            with contextlib.suppress(Exception):  # no EventNotifier attribute: use Server
                notifier = await client.get_node(self._messages).read_event_notifier()
                if ua.EventNotifier.SubscribeToEvents in notifier:
                    source, self.alarm_source = self._messages, "messages"
        # The event items share the last data subscription when it has room for them: one
        # subscription per machine, and no second CreateSubscription while a publish is
        # parked at the server (publish_race.py).
        wanted = 1 if source == server else 2
        room, self._room = self._room, None
        try:
            if room is not None and room[1] >= wanted:
                sub = room[0]
            else:
                sub = await self._new_subscription(client, _Handler(self))
            await sub.subscribe_events(source, evfilter=alarms.event_filter(), queuesize=1000)
        except (TimeoutError, OSError):
            # No answer is not a refusal: taken for one, it cost the alarm signals for the
            # whole connection (a loaded host's CI saw no `alarm` at all). The setup fails
            # and the connection is retried, alarms included.
            raise
        except Exception as exc:  # BadServiceUnsupported, BadFilterNotAllowed, ...
            self.alarm_source = None
            self._log_once(
                "alarm_events",
                "warning",
                "opcua_alarm_events_unavailable",
                error=str(exc) or type(exc).__name__,
            )
            return
        for signal in ALARM_SIGNALS:
            self._signals.setdefault(signal, None)
        self._alarm_node = f"{self._node_text(source)} ({self.alarm_source})"
        if source != server:
            # Servers may bracket a refresh on the Server object only (asyncua does):
            # listen there too, for RefreshStart/RefreshEnd only (the where clause keeps
            # other machines' alarms, which the Server object also sees, out).
            with contextlib.suppress(Exception):
                await sub.subscribe_events(server, evfilter=alarms.refresh_filter(), queuesize=100)
        self.subscription_count = len(self._subscriptions)
        try:
            await client.get_node(alarms.CONDITION_TYPE).call_method(
                alarms.CONDITION_REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32)
            )
        except (TimeoutError, OSError):
            raise  # no answer: retried with the connection, as above
        except Exception as exc:
            # Without a refresh, alarms raised before the subscription stay unseen: the
            # first value is only a guess, so it goes out as uncertain.
            self._log_once(
                "condition_refresh",
                "warning",
                "opcua_condition_refresh_failed",
                error=str(exc) or type(exc).__name__,
            )
            self._settle_alarms(Quality.UNCERTAIN)
            return
        generation = self._generation
        self._alarm_timer = asyncio.get_running_loop().call_later(
            max(1.0, 3 * c.publishing_interval), self._refresh_timeout, generation
        )

    def _refresh_timeout(self, generation: int) -> None:
        """No RefreshEnd seen in time: publish what the refresh brought so far."""
        if generation == self._generation:
            self._settle_alarms(Quality.GOOD)

    def _settle_alarms(self, quality: Quality) -> None:
        self._alarm_timer = None
        if not self._alarms_settled:
            self._alarms_settled = True
            self._publish_alarms(None, quality)

    def _on_event(self, event: Any) -> None:
        fields = alarms.fields_of(event)
        changed = self._alarms.apply(fields)
        when = fields.get("Time")
        ts = when if isinstance(when, datetime) else None
        if fields.get("EventType") == alarms.REFRESH_END and not self._alarms_settled:
            # Settle after the rest of this notification message: a server that sends the
            # bracket on another monitored item (asyncua: the Server object) may put
            # RefreshEnd ahead of the refreshed conditions in the same message.
            if self._alarm_timer is not None:
                self._alarm_timer.cancel()
            self._alarm_timer = asyncio.get_running_loop().call_soon(
                self._refresh_timeout, self._generation
            )
        elif changed and self._alarms_settled and not self._alarms.refreshing:
            self._publish_alarms(ts, Quality.GOOD)

    def _publish_alarms(self, ts: datetime | None, quality: Quality) -> None:
        if ts is None:  # settling after a refresh: the newest condition's own time
            ts = max((a.time for a in self._alarms.active.values() if a.time), default=None)
        for signal, (value, unit) in self._alarms.signals().items():
            if self._alarm_last.get(signal) != (value, quality):
                self._alarm_last[signal] = (value, quality)
                self._put(self._sample(signal, value, unit, ts, quality))

    def _request(
        self, handle: int, nodeid: ua.NodeId, binding: _Binding
    ) -> ua.MonitoredItemCreateRequest:
        c = self.config.connection
        p = binding.point
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        sampling = (
            p.sampling_interval if p and p.sampling_interval is not None else c.publishing_interval
        )
        params.SamplingInterval = sampling * 1000
        params.QueueSize = p.queue_size if p else 1
        params.DiscardOldest = True
        if p is not None and p.deadband_type != "none":
            params.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=1 if p.deadband_type == "absolute" else 2,
                DeadbandValue=p.deadband_value,
            )
        rv = ua.ReadValueId()
        rv.NodeId = nodeid
        rv.AttributeId = AttributeIds.Value
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = params
        return req

    async def _read_loop(self, client: Client) -> None:
        """Cyclic reads of `mode: read` points, one Read request per cycle, drift-free."""
        loop = asyncio.get_running_loop()
        interval = self.context.poll_interval
        nodes = [client.get_node(n) for n, _ in self._reads]
        next_at = loop.time()
        try:
            while True:
                async with asyncio.timeout(self._guard):
                    values = await client.read_attributes(nodes)
                for (_, binding), dv in zip(self._reads, values, strict=True):
                    self._on_value(binding, dv)
                next_at += interval
                now = loop.time()
                if next_at < now:
                    next_at = now + interval - ((now - next_at) % interval)
                await asyncio.sleep(next_at - now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(f"read failed: {_why(exc, self._guard)}")

    # -- values ---------------------------------------------------------------------------

    def _sample(
        self,
        signal: str,
        value: Value,
        unit: str | None,
        source_ts: datetime | None,
        quality: Quality,
    ) -> Sample:
        if source_ts is not None and source_ts.tzinfo is None:
            source_ts = source_ts.replace(tzinfo=UTC)
        return Sample(self.context.asset, signal, value, unit, utc_now(), source_ts, quality)

    def _put(self, item: Sample | _Lost) -> None:
        if self._queue.qsize() >= _QUEUE_LIMIT and isinstance(item, Sample):
            self._dropped += 1
            return
        self._queue.put_nowait(item)

    def _on_value(self, binding: _Binding, dv: ua.DataValue) -> None:
        quality = _quality(dv.StatusCode)
        raw = dv.Value.Value if dv.Value is not None else None
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        if binding.profile_input is not None:
            if quality is Quality.BAD:
                self._inputs.pop(binding.profile_input, None)
            else:
                self._inputs[binding.profile_input] = raw
            sinumerik_profile = self.config.connection.profile == "sinumerik"
            derive = sinumerik.derive if sinumerik_profile else mt.derive
            for signal, (value, unit) in derive(self._inputs).items():
                if self._derived.get(signal) != (value, unit):
                    self._derived[signal] = (value, unit)
                    self._signals.setdefault(signal, unit)  # so a gap marks it bad too
                    self._put(self._sample(signal, value, unit, ts, Quality.GOOD))
            return
        p = binding.point
        out: Value = None if quality is Quality.BAD else plain(raw)
        if p is not None and p.map is not None and out is not None:
            key: int | str = (
                out
                if isinstance(out, str)
                else int(out)
                if isinstance(out, int | float)
                else str(out)
            )
            mapped = p.map.get(key, p.map.get(str(key)))
            out = mapped if mapped is not None else out
        self._put(self._sample(binding.signal, out, binding.unit, ts, quality))

    def _lost(self, reason: str) -> None:
        self._queue.put_nowait(_Lost(reason))

    async def _connection_lost(self, exc: Exception) -> None:
        self._lost(f"connection lost: {_why(exc, self.config.connection.watchdog_interval)}")

    async def reachable(self) -> bool | None:
        """Whether the server's TCP port accepts a connection (nothing is sent)."""
        url = urlsplit(self.endpoint)
        try:
            async with asyncio.timeout(1.0):
                _reader, writer = await asyncio.open_connection(url.hostname, url.port or 4840)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    def _gap(self) -> list[Sample]:
        """What marks a loss in the data: unavailable, and every signal bad."""
        out = [
            self._sample(SIG_AVAILABILITY, Availability.UNAVAILABLE.value, None, None, Quality.GOOD)
        ]
        out += [
            self._sample(name, None, unit, None, Quality.BAD)
            for name, unit in self._signals.items()
            if name != SIG_AVAILABILITY
        ]
        return out

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        if self._client is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        queue = self._queue
        while True:
            first = await queue.get()
            items = [first]
            while not queue.empty() and len(items) < 5000:
                items.append(queue.get_nowait())
            samples = [i for i in items if isinstance(i, Sample)]
            lost = next((i for i in items if isinstance(i, _Lost)), None)
            if lost is not None:
                yield samples + self._gap()
                await self.aclose()
                raise DeviceUnavailable(f"{self.endpoint}: {lost.reason}")
            if self._client is None:
                raise DeviceUnavailable(f"{self.endpoint}: not connected")
            if samples:
                yield samples

    # -- reporting ------------------------------------------------------------------------

    def _log_once(self, key: str, level: str, event: str, **fields: Any) -> None:
        if key in self._reported or self.context.logger is None:
            return
        self._reported.add(key)
        getattr(self.context.logger, level)(event, endpoint=self.endpoint, **fields)

    def point_addresses(self) -> dict[str, str]:
        return {p.name: f"{p.node} ({p.mode})" for p in self.config.points}

    def raw_values(self) -> dict[str, str]:
        """Values arrive decoded; what commissioning needs from here is why a point is bad
        (an unknown node id or namespace, a refused monitored item), which otherwise only a
        log line the probe does not show says."""
        return dict(self._failed)

    def _node_text(self, nodeid: ua.NodeId) -> str:
        """`nsu=<uri>;s=...`: the form the YAML takes, stable across server restarts (the
        namespace index is not)."""
        text = nodeid.to_string()
        index = nodeid.NamespaceIndex
        if 0 < index < len(self._ns_uris):
            return f"nsu={self._ns_uris[index]};{text.partition(';')[2]}"
        return text

    def signal_sources(self) -> dict[str, str]:
        return signal_sources(
            self.config.connection.profile, self._input_nodes, self._identification_nodes,
            self._alarm_node,
        )

    def describe(self) -> dict[str, Any]:
        c = self.config.connection
        return {
            "protocol": "opcua",
            "endpoint": c.endpoint,
            "security": f"{c.security_policy}/{c.security_mode}",
            "profile": c.profile,
            "machine": self.machine_name,
            "points": len(self.config.points),
            "subscriptions": self.subscription_count,
            "alarms": self.alarm_source,
            "identification": dict(self.identification),
        }

