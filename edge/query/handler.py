"""Platforms query the gateway over MQTT (docs/protocol.md, section "Queries").

    platform --MQTT request--> query handler (authorize) --> twin / OEE / capacity --> signed reply

A request arrives on `{prefix}/{site}/{gateway}/query`. It is a JWS (flattened JSON) signed
with an Ed25519 key of a platform listed in the plant YAML; its payload is
`{"method", "params", "id", "ts", "nonce"}` (a v3.1.1 client adds `reply_to`). The reply goes
to the MQTT 5 Response Topic with the request's Correlation Data, or to `reply_to`; it is a
signed envelope on stream `response` whose one record is `{"id", "ok": true, "result"}` or
`{"id", "ok": false, "error": {"code", "message"}}`.

Checks, in order: size (`too_large`), JSON (`bad_request`), a JWS with exactly
protected/payload/signature (`unauthorized`), decodable header and signature
(`bad_request`), `alg`, `typ` (must be `edge-request+json`, so no other JWS a platform key
signed passes for a request), known `kid` and signature (`unauthorized`), body schema and
`ts` syntax (`bad_request`), `ts` within the skew window and a fresh `nonce`
(`unauthorized`), the platform's token bucket (`rate_limited`), method and machine allowed
for that platform (`forbidden`), `params` keys the method takes (`bad_request`: a misspelt
key is refused, never answered as if absent), the policy of the destination the request
arrived at (edge/query/policy.py: `forbidden` for a method whose stream it does not take,
`not_found` for a machine it hides, as for one the gateway does not have), then the method
(`not_found`, `bad_request`, `internal`); the answer is narrowed to that policy before it
is sealed.
docs/protocol.md ("Checks and error codes, in order") lists every check with its message;
keep the two in step. Error messages never echo key material or internals.

Every refusal is answered when it has a reply address, with two exceptions that keep a flood
cheap. A request that has not yet proved to be a fresh request of a known platform (all
checks up to and including the nonce) is *unauthenticated*: its refusals are answered only
while one gateway-wide token bucket (`UNAUTHENTICATED_RATE`/`UNAUTHENTICATED_BURST`) has
tokens, and logged once per interval with a count. A request that does not fit the queue
(`queue_size`, `queue_bytes`) is dropped unanswered, counted, logged once per burst. An
authenticated platform over its rate gets `rate_limited`, logged once per interval with a
count. The reply address of an oversize request is read from the MQTT 5 Response Topic, or,
for a v3.1.1 client, by parsing its `reply_to` when the request is at most
`ADDRESS_PARSE_LIMIT` bytes (and the unauthenticated bucket has a token).

`health` is scoped like `state`: devices of the platform's machines only, and the statistics
of the destination the request arrived through only, never another destination's id.
Nonces live in a `NonceMemory` (edge/query/nonces.py; the daemon passes the SQLite-backed
`NonceStore` so that a request captured before a restart is refused after it).

Flood safety: requests wait in one bounded queue served by one task, so a flood costs a
bounded amount of memory and one task's share of the event loop; telemetry keeps flowing.
Replies are published directly, not through the outbox: an answer nobody waits for any more
is worth nothing after an outage. A reply waits for the nonces remembered so far to be
committed (on the store writer thread, `Reply.after`); the serving task does not, and it
does not wait for a reply's PUBACK before taking the next request either (at most
`REPLIES_IN_FLIGHT` unacknowledged; bench section 2m). Their
`seq`/`prev` chain runs per reply topic for the life of the process.
Nothing here writes to a machine.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge.egress.status_scope import seen_by
from edge.query.limits import RefusalLog, TokenBucket
from edge.query.nonces import NonceMemory
from edge.query.policy import DestinationPolicy
from edge.signing.jws import (
    ChainState,
    Signer,
    b64url_decode,
    jwk_public,
    jwk_thumbprint,
    signing_input_hash,
)
from models.booking import ALONE, PROPOSE, MachineSeen, OtherStores, every_machine
from models.envelope import envelope_body
from models.errors import ConfigurationError, EdgeError
from models.logger import Logger
from models.plant import BOOKING_METHODS, QUERY_METHODS, Plant, Platform, gateway_topic
from models.query import REQUEST_TYP, unknown_params
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
    destination: str | None = None  # the destination whose connection it arrived on


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    correlation_data: bytes | None
    after: asyncio.Future[None] | None = None
    """Publish only once this is done: the write of the nonces remembered so far (edge/
    query/nonces.py), so an answered request is refused when replayed after a SIGKILL."""


@dataclass
class _Request:
    """What the pipeline has learnt of one request so far (its refusal needs it)."""

    reply_to: str | None
    correlation: bytes | None
    request_id: str | None = None
    platform: Platform | None = None  # set once the request is fresh and authenticated
    paid: bool = False  # an unauthenticated answer already paid for (oversize parsing)
    method: str = "unknown"
    params: dict[str, Any] = field(default_factory=dict)


Dispatch = Callable[[str, dict[str, Any], Platform, MachineSeen], Awaitable[Any]]
"""Answers a checked request's method elsewhere (QueryError for a refusal); the
`MachineSeen` is the destination's, for the platform's bookings on machines it hides."""


class Backend(Protocol):
    """The gateway as a query sees it: read-only views, never a write to a machine."""

    def query_describe(self) -> dict[str, Any]: ...
    def query_state(self, asset: str | None) -> dict[str, Any]: ...
    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def query_aas(self, asset: str | None) -> dict[str, Any]: ...
    def query_capacity(self, asset: str | None) -> dict[str, Any]: ...
    def query_health(self) -> dict[str, Any]: ...
    async def query_booking(
        self, method: str, platform: Platform, params: Mapping[str, Any],
        others: OtherStores = ..., seen: MachineSeen = ...,
    ) -> dict[str, Any]: ...
    def query_parts(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any]: ...
    def query_energy(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None: ...


PlatformKeys = dict[str, tuple[Platform, Ed25519PublicKey]]


def load_platform_keys(platforms: list[Platform]) -> PlatformKeys:
    """kid (RFC 7638 thumbprint) -> (platform, key); a file problem is a ConfigurationError.
    The loader anchored relative key files at the YAML file's directory
    (models/config_path.py)."""
    keys: dict[str, tuple[Platform, Ed25519PublicKey]] = {}
    for p in platforms:
        raw = p.jwks_file or p.public_key_file
        assert raw is not None  # validated: exactly one is set
        path = Path(raw)
        try:
            found = _read_keys(path, jwks=p.jwks_file is not None)
        except (OSError, ValueError, TypeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigurationError(
                f"platform {p.id}: cannot load keys from {path}: {reason}"
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


UNAUTHENTICATED_RATE = 10.0
"""Refusals per second answered to requests that are not (yet) a fresh request of a known
platform; more are dropped unanswered (and counted)."""
UNAUTHENTICATED_BURST = 100
ADDRESS_PARSE_LIMIT = 1 << 20
"""An oversize v3.1.1 request up to this size (or 4 x `max_request_bytes`, whichever is more)
is parsed for its `reply_to` so that `too_large` reaches it; a larger one is answered only in
MQTT 5 style (Response Topic)."""
LOG_INTERVAL = 60.0

REPLIES_IN_FLIGHT = 64
"""Replies published and not yet acknowledged by the broker, at most: the serving task takes
the next request without waiting for a reply's PUBACK (waiting cost a broker round trip per
request, most of a reply's time on a busy host), and waits for the oldest beyond this many,
so a broker that stops acknowledging holds a bounded number of replies in memory."""


class QueryHandler:
    def __init__(
        self,
        plant: Plant,
        backend: Backend | None,
        *,
        signer: Callable[[], Signer],
        keys: dict[str, tuple[Platform, Ed25519PublicKey]],
        logger: Logger,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        nonces: NonceMemory | None = None,
        dispatch: Dispatch | None = None,
    ) -> None:
        """`clock` is the wall clock of the `ts` window and of nonce expiry, `monotonic` the
        clock of the token buckets and log intervals (both injectable for tests); `nonces`
        defaults to memory only (the daemon passes the SQLite `NonceStore`); `dispatch`
        answers the methods elsewhere (default: `backend`, in this process)."""
        self.plant = plant
        self.settings = plant.gateway.query
        self.backend = backend
        self.signer = signer
        self.keys = keys
        self.log = logger
        self.clock = clock
        self.monotonic = monotonic
        self.nonces = nonces if nonces is not None else NonceMemory()
        self.dispatch = dispatch
        self.topic = gateway_topic(plant, "query")
        self.chain = ChainState()
        self.buckets: dict[str, TokenBucket] = {}
        self.anonymous = TokenBucket(UNAUTHENTICATED_RATE, UNAUTHENTICATED_BURST, monotonic)
        self._anonymous_log = RefusalLog(
            logger, "query_unauthenticated_refused", LOG_INTERVAL, monotonic
        )
        self._rate_logs: dict[str, RefusalLog] = {}
        self._topic_log = RefusalLog(logger, "query_reply_topic_refused", LOG_INTERVAL, monotonic)
        # `run --workers N`: every request about a restarting worker's machines, for seconds
        self._unavailable_log = RefusalLog(logger, "query_unavailable", LOG_INTERVAL, monotonic)
        self.counts: dict[str, int] = {"answered": 0, "refused": 0, "dropped": 0, "unanswered": 0}
        self.by_method: dict[tuple[str, str], int] = {}
        """(method, "ok" or the error code) -> requests, for /metrics; the method is
        `unknown` when the request was refused before its method could be read."""

    def reconfigure(self, plant: Plant, keys: PlatformKeys) -> None:
        """A reload's platforms and query settings, effective with the next request: a
        revoked key is unknown at once, a narrowed machine list applies at once. Token
        buckets of platforms that stay are kept with their tokens (a reload must not refill
        them) and take the new rate and burst; those of removed platforms are dropped. Nonces
        are all kept until they expire (a reload must not open a replay window, even for a
        platform removed and added back)."""
        self.plant = plant
        self.settings = plant.gateway.query
        self.keys = keys
        self.topic = gateway_topic(plant, "query")
        platforms = {p.id: p for p, _ in keys.values()}
        self.buckets = {pid: b for pid, b in self.buckets.items() if pid in platforms}
        for pid, bucket in self.buckets.items():
            bucket.rate = platforms[pid].rate_limit
            bucket.burst = float(platforms[pid].burst)
        self._rate_logs = {pid: log for pid, log in self._rate_logs.items() if pid in platforms}

    # ---- the pipeline ---------------------------------------------------------------
    def handle(self, msg: Incoming) -> Reply | None:
        """`answer`, called outside an event loop (the documentation's examples, tests)."""
        return asyncio.run(self.answer(msg))

    async def answer(self, msg: Incoming) -> Reply | None:
        """Answer one message; None when there is nowhere (or no budget) to send the answer.
        The method is answered by this process's backend, or by `self.dispatch` when one is
        set (the parent of `run --workers N` forwards to the worker that owns the machine,
        edge/daemon/worker_queries.py): every check before it and the scoping and sealing
        after it stay here, in the one process that owns the nonces, the rate limits and
        the key. A booking decision is awaited here until it is committed (on the store
        writer thread), so its reply never leaves before it."""
        req = _Request(msg.response_topic, msg.correlation_data)
        policy = DestinationPolicy.at(self.plant, msg.destination)
        try:
            self._check(msg, req)
            assert req.platform is not None
            refusal = policy.refusal(req.method, req.params)
            if refusal is not None:
                raise QueryError(*refusal)
            platform = policy.visible(req.platform)
            if self.dispatch is None:
                result = await self._dispatch(req.method, req.params, platform,
                                              seen=policy.sees)
            else:
                result = await self.dispatch(req.method, req.params, platform, policy.sees)
        except QueryError as exc:
            return self._refuse(req, exc)
        return self._accept(msg, req, policy.narrow(req.method, result), platform)

    async def answer_locally(
        self, method: str, params: dict[str, Any], platform: Platform, others: OtherStores,
        seen: MachineSeen,
    ) -> Any:
        """The method only, for a request the parent already checked (a worker process):
        QueryError for a refusal, as `answer` would answer it; `others`: what the other
        workers' booking stores bring (models/booking.py), `seen`: the machines the
        destination shows (the parent's policy), and `propose` is allowed."""
        return await self._dispatch(method, params, platform, others, seen)

    def _check(self, msg: Incoming, req: _Request) -> None:
        """Every check up to the method itself; fills `req` as it learns; QueryError."""
        if len(msg.payload) > self.settings.max_request_bytes:
            limit = max(ADDRESS_PARSE_LIMIT, 4 * self.settings.max_request_bytes)
            if req.reply_to is None and len(msg.payload) <= limit and self.anonymous.take():
                req.paid = True
                req.request_id, req.reply_to = _claimed_address(msg.payload)
            raise QueryError(
                "too_large", f"request larger than {self.settings.max_request_bytes} bytes"
            )
        envelope = _json_object(msg.payload, "request")
        claimed = _claimed_body(envelope)
        req.request_id = _short_str(claimed.get("id"))
        if req.reply_to is None:
            req.reply_to = _short_str(claimed.get("reply_to"))
        signer, body = self._authenticate(envelope)
        req.method, req.params = self._validate(body)
        self._fresh(signer, body)
        req.platform = signer
        self._admit(signer)
        self._authorize(signer, req.method, req.params)

    def _accept(self, msg: Incoming, req: _Request, result: Any, platform: Platform
                ) -> Reply | None:
        """Answer `result`, scoped to `platform` (narrowed to what the destination may see)."""
        scoped = self._scope(platform, req.method, result, msg)
        self.counts["answered"] += 1
        self._count(req.method, "ok")
        return self._address(req, {"id": req.request_id, "ok": True, "result": scoped})

    def _refuse(self, req: _Request, exc: QueryError) -> Reply | None:
        record = {
            "id": req.request_id,
            "ok": False,
            "error": {"code": exc.code, "message": exc.message},
        }
        self.counts["refused"] += 1
        self._count(req.method, exc.code)
        reply_to, platform = req.reply_to, req.platform
        answerable = reply_to is not None and self._reply_topic_ok(reply_to)
        if platform is None:
            answered = answerable and (req.paid or self.anonymous.take())
            self._anonymous_log.note(
                exc.code, answered=answered, reason=exc.message, request_id=req.request_id
            )
            if not answered:
                self.counts["unanswered"] += 1
                return None
        elif exc.code == "rate_limited":
            self._rate_log(platform).note(exc.code, answered=answerable)
        elif exc.code == "unavailable":
            self._unavailable_log.note(exc.code, answered=answerable, reason=exc.message)
        else:
            self.log.warning(
                "query_refused",
                code=exc.code,
                reason=exc.message,
                platform=platform.id,
                request_id=req.request_id,
            )
        return self._address(req, record)

    def _address(self, req: _Request, record: dict[str, Any]) -> Reply | None:
        reply_to = req.reply_to
        if reply_to is None:
            self.counts["unanswered"] += 1
            return None
        if not self._reply_topic_ok(reply_to):
            self.counts["unanswered"] += 1
            self._topic_log.note("reply_topic", answered=False, topic=reply_to[:200])
            return None
        return Reply(reply_to, self._seal(reply_to, record), req.correlation,
                     self.nonces.written())

    def _count(self, method: str, result: str) -> None:
        key = (method, result)
        self.by_method[key] = self.by_method.get(key, 0) + 1

    def flush_logs(self) -> None:
        """Write the counts of repeating refusals whose interval is over (called when idle)."""
        for log in (self._anonymous_log, self._topic_log, self._unavailable_log,
                    *self._rate_logs.values()):
            log.flush()

    def _rate_log(self, platform: Platform) -> RefusalLog:
        log = self._rate_logs.get(platform.id)
        if log is None:
            log = self._rate_logs[platform.id] = RefusalLog(
                self.log, "query_rate_limited", LOG_INTERVAL, self.monotonic, platform=platform.id
            )
        return log

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
            created=self.clock(),
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
        if header.get("typ") != REQUEST_TYP:
            raise QueryError("unauthorized", f"typ must be {REQUEST_TYP}")
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
        """`ts` within the window (inclusive) and a nonce not seen while it could be valid:
        remembered until `ts + max_skew_seconds`, after which the `ts` check refuses it."""
        try:
            ts = datetime.fromisoformat(str(body["ts"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise QueryError("bad_request", "ts must be an RFC 3339 timestamp") from exc
        if ts.tzinfo is None:
            raise QueryError("bad_request", "ts needs a time zone")
        skew = self.settings.max_skew_seconds
        now = self.clock()
        if abs((now - ts).total_seconds()) > skew:
            raise QueryError("unauthorized", f"ts outside the accepted window of {skew:g} s")
        nonce, at = str(body["nonce"]), now.timestamp()
        if self.nonces.seen(platform.id, nonce, at):
            raise QueryError("unauthorized", "nonce already used")
        if not self.nonces.remember(platform.id, nonce, ts.timestamp() + skew, at):
            raise QueryError(
                "rate_limited", "too many requests within the replay window; retry later"
            )

    def _admit(self, platform: Platform) -> None:
        bucket = self.buckets.get(platform.id)
        if bucket is None:
            bucket = self.buckets[platform.id] = TokenBucket(
                platform.rate_limit, platform.burst, self.monotonic
            )
        if not bucket.take():
            raise QueryError("rate_limited", f"more than {platform.rate_limit:g} requests/s")

    def _authorize(self, platform: Platform, method: str, params: dict[str, Any]) -> None:
        if method not in platform.methods:
            raise QueryError("forbidden", f"method {method!r} is not allowed for this platform")
        refusal = unknown_params(method, params)
        if refusal is not None:
            raise QueryError("bad_request", refusal)
        asset = params.get("asset")
        if asset is not None:
            if not isinstance(asset, str):
                raise QueryError("bad_request", "asset must be a machine id")
            if not _shared(platform, asset):
                raise QueryError("forbidden", f"machine {asset!r} is not shared with this platform")

    def _scope(self, platform: Platform, method: str, result: Any, msg: Incoming) -> Any:
        """Whole-plant answers shrink to the platform's machines; `health` also to the
        destination the request came through (a platform never learns another broker)."""
        if not isinstance(result, dict):
            return result
        if method == "health":  # the retained status's rule (edge/egress/status_scope.py)
            return seen_by(result, msg.destination, partial(_shared, platform))
        if isinstance(result.get("machines"), dict):
            result["machines"] = {
                a: v for a, v in result["machines"].items() if _shared(platform, a)
            }
        return result

    async def _dispatch(
        self, method: str, params: dict[str, Any], platform: Platform,
        others: OtherStores = ALONE, seen: MachineSeen = every_machine,
    ) -> Any:
        asset = params.get("asset")
        if self.backend is None:  # the parent of `run --workers N`: `dispatch` answers
            raise QueryError("internal", "internal error")
        try:
            if method in BOOKING_METHODS or method == PROPOSE:  # the platform books
                result: Any = await self.backend.query_booking(method, platform, params,
                                                               others, seen)
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
            elif method in ("parts", "energy"):
                if asset is None:
                    raise QueryError("bad_request", f"{method} needs params.asset")
                if method == "parts":
                    result = self.backend.query_parts(asset, params)
                else:
                    result = self.backend.query_energy(asset, params)
                if result is None:
                    raise QueryError("not_found", "no such window, or the machine has no meter")
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
        return result

    # ---- serving --------------------------------------------------------------------
    async def serve(self, transport: Any, name: str) -> None:
        """Subscribe on one destination's connection and answer there, one request at a time.

        The queue holds at most `queue_size` requests and `queue_bytes` bytes of payload."""
        queue: asyncio.Queue[Incoming] = asyncio.Queue()
        held = [0]  # payload bytes in the queue
        await transport.subscribe(self.topic, 1)
        self.log.info("query_serving", destination=name, topic=self.topic)
        worker = asyncio.create_task(self._work(queue, held, transport), name=f"query-{name}")
        dropping = False
        try:
            async for msg in transport.messages():
                if msg.topic != self.topic:
                    continue
                size = len(msg.payload)
                if (
                    queue.qsize() >= self.settings.queue_size
                    or held[0] + size > self.settings.queue_bytes
                ):
                    self.counts["dropped"] += 1
                    if not dropping:
                        self.log.warning(
                            "query_flood_dropping", destination=name, queue=queue.qsize()
                        )
                        dropping = True
                    continue
                held[0] += size
                dropping = False
                queue.put_nowait(
                    Incoming(msg.topic, msg.payload, msg.response_topic, msg.correlation_data, name)
                )
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _work(self, queue: asyncio.Queue[Incoming], held: list[int], transport: Any) -> None:
        sending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=5.0)
                except TimeoutError:
                    self.flush_logs()
                    continue
                held[0] -= len(msg.payload)
                reply = await self.answer(msg)
                if reply is not None:
                    if len(sending) >= REPLIES_IN_FLIGHT:
                        await asyncio.wait(set(sending), return_when=asyncio.FIRST_COMPLETED)
                    # started in creation order, each hands its reply to the transport before
                    # its first await: replies leave in the order they were answered
                    task = asyncio.create_task(self._publish(transport, reply))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                await asyncio.sleep(0)  # let telemetry (and the reply just queued) run
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _publish(self, transport: Any, reply: Reply) -> None:
        """Once the nonces are on disk, publish. The nonce writes commit in the order they
        were queued and wake their waiters in that order, so replies still leave in the
        order they were answered, and the serving task meanwhile checks the next requests
        (whose nonces then share a transaction)."""
        props = {"correlation_data": reply.correlation_data} if reply.correlation_data else None
        if reply.after is not None:
            await asyncio.shield(reply.after)
        try:
            async with asyncio.timeout(10):
                await transport.publish(
                    reply.topic, reply.payload, qos=1, retain=False, properties=props
                )
        except (TimeoutError, EdgeError) as exc:
            self.log.warning("query_reply_failed", topic=reply.topic[:200], error=str(exc))


def _shared(platform: Platform, asset: str) -> bool:
    return any(fnmatch.fnmatchcase(asset, pattern) for pattern in platform.machines)


def _claimed_address(payload: bytes) -> tuple[str | None, str | None]:
    """`(id, reply_to)` of a request that is not checked further (an oversize one)."""
    try:
        claimed = _claimed_body(_json_object(payload, "request"))
    except QueryError:
        return None, None
    return _short_str(claimed.get("id")), _short_str(claimed.get("reply_to"))


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
