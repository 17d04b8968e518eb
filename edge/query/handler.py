"""Platforms query the gateway over MQTT (docs/protocol.md, section "Queries").

    platform --MQTT request--> query handler (authorize) --> twin / OEE / capacity --> signed reply

A request arrives on `{prefix}/{site}/{gateway}/query`. It is a JWS (flattened JSON) signed
with an Ed25519 key of a platform listed in the plant YAML; its payload is
`{"method", "params", "id", "ts", "nonce"}` (a v3.1.1 client adds `reply_to`). The reply goes
to the MQTT 5 Response Topic with the request's Correlation Data, or to `reply_to`; it is a
signed envelope on stream `response` whose one record is `{"id", "ok": true, "result"}` or
`{"id", "ok": false, "error": {"code", "message"}}`.

Checks, in order, each refusal answered (when a reply address exists) and logged once:
size (`too_large`), JSON (`bad_request`), a JWS with exactly protected/payload/signature
(`unauthorized`), decodable header and signature (`bad_request`), `alg`, known `kid` and
signature (`unauthorized`), body schema and `ts` syntax (`bad_request`), `ts` within the
skew window and a fresh `nonce` (`unauthorized`), the platform's token bucket
(`rate_limited`), method and machine allowed for that platform (`forbidden`), then the
method (`not_found`, `bad_request`, `internal`). docs/protocol.md ("Checks and error codes,
in order") lists every check with its message; keep the two in step. The header's `typ`
is not checked. Error messages never echo key material or internals.

Flood safety: requests wait in one bounded queue served by one task, so a flood costs a
bounded amount of memory and one task's share of the event loop; telemetry keeps flowing
and excess requests are dropped (counted, logged once per burst). Replies are published
directly, not through the outbox: an answer nobody waits for any more is worth nothing
after an outage. Their `seq`/`prev` chain runs per reply topic for the life of the process.
Nothing here writes to a machine.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge.signing.jws import (
    ChainState,
    Signer,
    b64url_decode,
    jwk_public,
    jwk_thumbprint,
    signing_input_hash,
)
from models.envelope import envelope_body
from models.errors import ConfigurationError, EdgeError
from models.plant import BOOKING_METHODS, QUERY_METHODS, Plant, Platform, gateway_topic
from models.sample import utc_now


class QueryError(EdgeError):
    """A refused request; `code` is one of the wire contract's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Incoming:
    """What the handler needs of an MQTT message (edge.transport.mqtt.IncomingMessage fits)."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    correlation_data: bytes | None


class Backend(Protocol):
    """The gateway as a query sees it: read-only views, never a write to a machine."""

    def query_describe(self) -> dict[str, Any]: ...
    def query_state(self, asset: str | None) -> dict[str, Any]: ...
    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def query_aas(self, asset: str | None) -> dict[str, Any]: ...
    def query_capacity(self, asset: str | None) -> dict[str, Any]: ...
    def query_health(self) -> dict[str, Any]: ...
    def query_booking(
        self, method: str, platform: Platform, params: Mapping[str, Any]
    ) -> dict[str, Any]: ...


PlatformKeys = dict[str, tuple[Platform, Ed25519PublicKey]]


def load_platform_keys(platforms: list[Platform], base: Path) -> PlatformKeys:
    """kid (RFC 7638 thumbprint) -> (platform, key); a file problem is a ConfigurationError."""
    keys: dict[str, tuple[Platform, Ed25519PublicKey]] = {}
    for p in platforms:
        raw = p.jwks_file or p.public_key_file
        assert raw is not None  # validated: exactly one is set
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        try:
            found = _read_keys(path, jwks=p.jwks_file is not None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"platform {p.id}: cannot load keys from {path}: {exc}"
            ) from exc
        if not found:
            raise ConfigurationError(f"platform {p.id}: no Ed25519 public key in {path}")
        for kid, key in found.items():
            other = keys.get(kid)
            if other is not None and other[0].id != p.id:
                raise ConfigurationError(f"platforms {other[0].id} and {p.id} share key {kid}")
            keys[kid] = (p, key)
    return keys


def _read_keys(path: Path, *, jwks: bool) -> dict[str, Ed25519PublicKey]:
    text = path.read_text(encoding="utf-8")
    out: dict[str, Ed25519PublicKey] = {}
    if not jwks:
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        out[jwk_public(key)["kid"]] = key
        return out
    data = json.loads(text)
    for jwk in data.get("keys", []) if isinstance(data, dict) else []:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
            continue
        x = jwk["x"]
        out[jwk_thumbprint(x)] = Ed25519PublicKey.from_public_bytes(b64url_decode(x))
    return out


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _PlatformState:
    bucket: _Bucket
    nonces: OrderedDict[str, float] = field(default_factory=OrderedDict)


class QueryHandler:
    def __init__(
        self,
        plant: Plant,
        backend: Backend,
        *,
        signer: Callable[[], Signer],
        keys: dict[str, tuple[Platform, Ed25519PublicKey]],
        logger: Any,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.plant = plant
        self.settings = plant.gateway.query
        self.backend = backend
        self.signer = signer
        self.keys = keys
        self.log = logger
        self.clock = clock
        self.topic = gateway_topic(plant, "query")
        self.chain = ChainState()
        self.state: dict[str, _PlatformState] = {}
        self.counts: dict[str, int] = {"answered": 0, "refused": 0, "dropped": 0}
        self.by_method: dict[tuple[str, str], int] = {}
        """(method, "ok" or the error code) -> requests, for /metrics; the method is
        `unknown` when the request was refused before its method could be read."""

    def reconfigure(self, plant: Plant, keys: PlatformKeys) -> None:
        """A reload's platforms and query settings, effective with the next request: a
        revoked key is unknown at once, a narrowed machine list applies at once. Nonce
        memory and token buckets of platforms that stay are kept (a reload must not open a
        replay window); those of removed platforms are dropped."""
        self.plant = plant
        self.settings = plant.gateway.query
        self.keys = keys
        self.topic = gateway_topic(plant, "query")
        kept = {p.id for p, _ in keys.values()}
        self.state = {pid: st for pid, st in self.state.items() if pid in kept}

    # ---- the pipeline ---------------------------------------------------------------
    def handle(self, msg: Incoming) -> Reply | None:
        """Answer one message; None when there is nowhere to send the answer."""
        request_id: str | None = None
        reply_to, correlation = msg.response_topic, msg.correlation_data
        platform: Platform | None = None
        method = "unknown"
        try:
            if len(msg.payload) > self.settings.max_request_bytes:
                raise QueryError(
                    "too_large", f"request larger than {self.settings.max_request_bytes} bytes"
                )
            envelope = _json_object(msg.payload, "request")
            claimed = _claimed_body(envelope)
            request_id = _short_str(claimed.get("id"))
            if reply_to is None:
                reply_to = _short_str(claimed.get("reply_to"))
            platform, body = self._authenticate(envelope)
            method, params = self._validate(body)
            self._fresh(platform, body)
            self._admit(platform)
            self._authorize(platform, method, params)
            result = self._dispatch(method, params, platform)
            record: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
            self.counts["answered"] += 1
            self._count(method, "ok")
        except QueryError as exc:
            record = {
                "id": request_id,
                "ok": False,
                "error": {"code": exc.code, "message": exc.message},
            }
            self.counts["refused"] += 1
            self._count(method, exc.code)
            self.log.warning(
                "query_refused",
                code=exc.code,
                reason=exc.message,
                platform=platform.id if platform else None,
                request_id=request_id,
            )
        if reply_to is None:
            return None
        if not self._reply_topic_ok(reply_to):
            self.log.warning("query_reply_topic_refused", topic=reply_to[:200])
            return None
        return Reply(reply_to, self._seal(reply_to, record), correlation)

    def _count(self, method: str, result: str) -> None:
        key = (method, result)
        self.by_method[key] = self.by_method.get(key, 0) + 1

    def _reply_topic_ok(self, topic: str) -> bool:
        """Never answer onto wildcards or into our own data namespace, where a reply could
        pass for telemetry (a signed `response` envelope is distinguishable, but a subscriber
        of `{prefix}/{site}/#` should not have to)."""
        g = self.plant.gateway
        own = f"{g.topic_prefix}/{g.site}/"
        return (
            bool(topic)
            and len(topic) <= 512
            and "+" not in topic
            and "#" not in topic
            and not topic.startswith(own)
        )

    def _seal(self, topic: str, record: dict[str, Any]) -> bytes:
        seq, prev = self.chain.next(topic)
        body = envelope_body(
            gateway=self.plant.gateway.id,
            topic=topic,
            asset=None,
            stream="response",
            seq=seq,
            prev=prev,
            created=utc_now(),
            records=[record],
        )
        envelope = self.signer().sign_body(body)
        self.chain.commit(topic, seq, signing_input_hash(envelope))
        if len(self.chain.to_dict()) > 10_000:  # reply topics are per client; keep it bounded
            self.chain = ChainState()
        return json.dumps(envelope, separators=(",", ":")).encode()

    # ---- checks ---------------------------------------------------------------------
    def _authenticate(self, envelope: dict[str, Any]) -> tuple[Platform, dict[str, Any]]:
        if set(envelope) != {"protected", "payload", "signature"}:
            raise QueryError(
                "unauthorized", "a request must be a JWS (flattened JSON) signed by a platform key"
            )
        try:
            header = json.loads(b64url_decode(str(envelope["protected"])))
            signature = b64url_decode(str(envelope["signature"]))
        except (ValueError, TypeError) as exc:
            raise QueryError("bad_request", "malformed JWS") from exc
        if not isinstance(header, dict) or header.get("alg") not in ("EdDSA", "Ed25519"):
            raise QueryError("unauthorized", "alg must be EdDSA")
        entry = self.keys.get(str(header.get("kid")))
        if entry is None:
            raise QueryError("unauthorized", "unknown key")
        platform, key = entry
        signing_input = f"{envelope['protected']}.{envelope['payload']}".encode("ascii", "replace")
        try:
            key.verify(signature, signing_input)
        except InvalidSignature as exc:
            raise QueryError("unauthorized", "bad signature") from exc
        body = _json_object(b64url_decode(str(envelope["payload"])), "payload")
        return platform, body

    def _validate(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = body.get("method")
        if method not in QUERY_METHODS:
            raise QueryError("bad_request", f"method must be one of {', '.join(QUERY_METHODS)}")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise QueryError("bad_request", "params must be an object")
        for name in ("id", "ts", "nonce"):
            if not isinstance(body.get(name), str) or not 0 < len(body[name]) <= 128:
                raise QueryError("bad_request", f"{name} must be a string of 1-128 characters")
        return str(method), params

    def _fresh(self, platform: Platform, body: dict[str, Any]) -> None:
        try:
            ts = datetime.fromisoformat(str(body["ts"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise QueryError("bad_request", "ts must be an RFC 3339 timestamp") from exc
        if ts.tzinfo is None:
            raise QueryError("bad_request", "ts needs a time zone")
        skew = self.settings.max_skew_seconds
        if abs((self.clock() - ts).total_seconds()) > skew:
            raise QueryError("unauthorized", f"ts outside the accepted window of {skew:g} s")
        st = self._state(platform)
        now = time.monotonic()
        while st.nonces and next(iter(st.nonces.values())) < now:
            st.nonces.popitem(last=False)
        nonce = str(body["nonce"])
        if nonce in st.nonces:
            raise QueryError("unauthorized", "nonce already used")
        st.nonces[nonce] = now + 2 * skew  # a replay after this is stale by ts anyway

    def _state(self, platform: Platform) -> _PlatformState:
        st = self.state.get(platform.id)
        if st is None:
            st = self.state[platform.id] = _PlatformState(
                _Bucket(float(platform.burst), time.monotonic())
            )
        return st

    def _admit(self, platform: Platform) -> None:
        b = self._state(platform).bucket
        now = time.monotonic()
        b.tokens = min(float(platform.burst), b.tokens + (now - b.stamp) * platform.rate_limit)
        b.stamp = now
        if b.tokens < 1:
            raise QueryError("rate_limited", f"more than {platform.rate_limit:g} requests/s")
        b.tokens -= 1

    def _authorize(self, platform: Platform, method: str, params: dict[str, Any]) -> None:
        if method not in platform.methods:
            raise QueryError("forbidden", f"method {method!r} is not allowed for this platform")
        asset = params.get("asset")
        if asset is not None:
            if not isinstance(asset, str):
                raise QueryError("bad_request", "asset must be a machine id")
            if not any(fnmatch.fnmatchcase(asset, pat) for pat in platform.machines):
                raise QueryError("forbidden", f"machine {asset!r} is not shared with this platform")
        elif method in ("describe", "aas", "state", "capacity") and platform.machines != ["*"]:
            params["_allowed"] = platform.machines  # whole-plant answers are filtered

    def _dispatch(self, method: str, params: dict[str, Any], platform: Platform) -> Any:
        asset = params.get("asset")
        allowed = params.pop("_allowed", None)
        try:
            if method in BOOKING_METHODS:  # the platform is who books and whose bookings
                result: Any = self.backend.query_booking(method, platform, params)
            elif method == "describe":
                result = self.backend.query_describe()
            elif method == "health":
                result = self.backend.query_health()
            elif method == "oee":
                if asset is None:
                    raise QueryError("bad_request", "oee needs params.asset")
                result = self.backend.query_oee(asset, params)
                if result is None:
                    raise QueryError("not_found", "no such window (no shift at that time?)")
            elif method == "state":
                result = self.backend.query_state(asset)
            elif method == "aas":
                result = self.backend.query_aas(asset)
            else:
                result = self.backend.query_capacity(asset)
        except KeyError as exc:
            raise QueryError("not_found", f"unknown machine {asset!r}") from exc
        except ValueError as exc:
            raise QueryError("bad_request", str(exc)) from exc
        except QueryError:
            raise
        except Exception as exc:  # a bug: answer `internal`, keep serving, log the traceback
            self.log.exception("query_failed", method=method)
            raise QueryError("internal", "internal error") from exc
        if allowed is not None and isinstance(result, dict) and "machines" in result:
            result["machines"] = {
                k: v
                for k, v in result["machines"].items()
                if any(fnmatch.fnmatchcase(k, p) for p in allowed)
            }
        return result

    # ---- serving --------------------------------------------------------------------
    async def serve(self, transport: Any, name: str) -> None:
        """Subscribe on one destination's connection and answer there, one request at a time."""
        queue: asyncio.Queue[Incoming] = asyncio.Queue(self.settings.queue_size)
        await transport.subscribe(self.topic, 1)
        worker = asyncio.create_task(self._work(queue, transport), name=f"query-{name}")
        dropping = False
        try:
            async for msg in transport.messages():
                if msg.topic != self.topic:
                    continue
                try:
                    queue.put_nowait(
                        Incoming(msg.topic, msg.payload, msg.response_topic, msg.correlation_data)
                    )
                    dropping = False
                except asyncio.QueueFull:
                    self.counts["dropped"] += 1
                    if not dropping:
                        self.log.warning(
                            "query_flood_dropping", destination=name, queue=self.settings.queue_size
                        )
                        dropping = True
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _work(self, queue: asyncio.Queue[Incoming], transport: Any) -> None:
        while True:
            msg = await queue.get()
            reply = self.handle(msg)
            if reply is not None:
                props = (
                    {"correlation_data": reply.correlation_data} if reply.correlation_data else None
                )
                try:
                    await asyncio.wait_for(
                        transport.publish(
                            reply.topic, reply.payload, qos=1, retain=False, properties=props
                        ),
                        timeout=10,
                    )
                except (TimeoutError, EdgeError) as exc:
                    self.log.warning("query_reply_failed", topic=reply.topic[:200], error=str(exc))
            await asyncio.sleep(0)  # let telemetry run between requests


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError("bad_request", f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise QueryError("bad_request", f"{what} must be a JSON object")
    return value


def _claimed_body(envelope: dict[str, Any]) -> dict[str, Any]:
    """The payload's id and reply_to before any check, only to address an error reply."""
    payload = envelope.get("payload")
    if isinstance(payload, str):
        try:
            body = json.loads(b64url_decode(payload))
        except (ValueError, TypeError, UnicodeDecodeError):
            return {}
        return body if isinstance(body, dict) else {}
    return envelope  # an unsigned plain request: its own fields


def _short_str(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 512 else None


