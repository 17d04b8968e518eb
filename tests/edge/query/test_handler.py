"""The query handler alone, with its clocks driven by the test: the `ts` window to the
microsecond, nonce memory (expiry, bound, persistence), token buckets, reply-topic rules,
machine- and destination-scoped answers, `typ`, oversize requests and the unauthenticated
budget. Replies are verified as a platform would verify them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import plant_yaml

from edge.config.loader import parse_plant
from edge.platform_kit.client import new_request
from edge.platform_kit.verifier import verify_envelope
from edge.query.handler import (
    ADDRESS_PARSE_LIMIT,
    LOG_INTERVAL,
    REQUEST_TYP,
    UNAUTHENTICATED_BURST,
    UNAUTHENTICATED_RATE,
    Incoming,
    QueryHandler,
    Reply,
)
from edge.query.nonces import NonceMemory, NonceStore
from edge.signing.jws import Signer, b64url_encode, canonical_json, jwk_public, jwks, sign_jws

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
REPLIES = "platform/replies/a"


class Clocks:
    """The handler's wall clock and monotonic clock, moved only by `advance`."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


class Log:
    """Records (level, event, fields) of every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def debug(self, event: str, *a: Any, **kw: Any) -> None:
        self._add("debug", event, **kw)

    def info(self, event: str, *a: Any, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, *a: Any, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, *a: Any, **kw: Any) -> None:
        self._add("error", event, **kw)

    def exception(self, event: str, *a: Any, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [kw for _, e, kw in self.lines if e == name]


class Views:
    """A two-machine gateway as the Backend protocol shows it."""

    machines = ("m1", "m2")

    def _all(self, asset: str | None) -> dict[str, Any]:
        if asset is not None and asset not in self.machines:
            raise KeyError(asset)
        return {"machines": {m: {"id": m} for m in self.machines if asset in (None, m)}}

    def query_describe(self) -> dict[str, Any]:
        return {"gateway": "gw-1", **self._all(None)}

    def query_state(self, asset: str | None) -> dict[str, Any]:
        return self._all(asset)

    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"asset": asset}

    def query_aas(self, asset: str | None) -> dict[str, Any]:
        return self._all(asset)

    def query_capacity(self, asset: str | None) -> dict[str, Any]:
        return self._all(asset)

    def query_health(self) -> dict[str, Any]:
        return {
            "state": "online",
            "devices": {"m1": "up", "m2": "down"},
            "device_reasons": {"m2": "refused"},
            "device_faults": {"m2": {"status": "down", "reason": "refused"}},
            "destinations": {"local": {"sent": 1}, "cloud-7": {"sent": 2}},
            "losses": {"lost_records": 7, "by_machine": {"m1": 3, "m2": 4}, "unreported_gaps": 2,
                       "unreported_by_machine": {"m2": 2}},
            "unsignable": {"replaced": 5, "dropped": 1, "by_machine": {
                "m1": {"replaced": 2, "dropped": 0}, "m2": {"replaced": 3, "dropped": 1}}},
        }


class Rig:
    def __init__(self, tmp_path: Path, nonces: NonceMemory | None = None,
                 views: Any = None, destinations: str | None = None,
                 b_methods: str = "") -> None:
        self.a, self.b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        text = plant_yaml(tmp_path / "state", [1502, 1503], 1883, destinations=destinations)
        text += f"""platforms:
  - {{id: platform-a, public_key_file: a.pem, machines: [m1], rate_limit: 1, burst: 3}}
  - {{id: platform-b, public_key_file: b.pem{b_methods}}}
"""
        self.plant = parse_plant(text, "plant.yaml").plant
        pa, pb = self.plant.platforms
        self.signer = Signer(Ed25519PrivateKey.generate())
        self.clocks = Clocks()
        self.log = Log()
        self.handler = QueryHandler(
            self.plant,
            views or Views(),
            signer=lambda: self.signer,
            keys={
                jwk_public(self.a)["kid"]: (pa, self.a.public_key()),
                jwk_public(self.b)["kid"]: (pb, self.b.public_key()),
            },
            logger=self.log,
            clock=self.clocks.now,
            monotonic=self.clocks.monotonic,
            nonces=nonces,
        )

    def request(
        self,
        key: Ed25519PrivateKey,
        method: str = "describe",
        params: dict[str, Any] | None = None,
        *,
        typ: str | None = REQUEST_TYP,
        **over: Any,
    ) -> bytes:
        body = new_request(method, params or {})
        body["ts"] = self.clocks.wall.isoformat().replace("+00:00", "Z")
        body.update(over)
        header = {"alg": "EdDSA", "kid": jwk_public(key)["kid"]}
        if typ is not None:
            header["typ"] = typ
        protected = b64url_encode(canonical_json(header))
        payload = b64url_encode(canonical_json(body))
        return json.dumps(
            {
                "protected": protected,
                "payload": payload,
                "signature": sign_jws(protected, payload, key),
            }
        ).encode()

    def send(
        self, payload: bytes, topic: str | None = REPLIES, destination: str = "local"
    ) -> Reply | None:
        return self.handler.handle(
            Incoming(self.handler.topic, payload, topic, b"corr", destination)
        )

    def record(self, reply: Reply | None) -> dict[str, Any]:
        assert reply is not None, "no reply"
        body = verify_envelope(reply.payload, jwks([self.signer.public_key]), topic=reply.topic)
        assert body["stream"] == "response"
        record: dict[str, Any] = body["records"][0]
        return record

    def ask(self, payload: bytes, **kw: Any) -> dict[str, Any]:
        return self.record(self.send(payload, **kw))


def code(record: dict[str, Any]) -> str:
    assert record["ok"] is False, record
    return str(record["error"]["code"])


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# ---- ts window and nonces --------------------------------------------------------------


def test_ts_exactly_at_the_edge_of_the_window_passes_and_one_tick_past_is_refused(
    rig: Rig,
) -> None:
    skew = timedelta(seconds=rig.plant.gateway.query.max_skew_seconds)
    for ts in (T0 - skew, T0 + skew):
        assert rig.ask(rig.request(rig.b, ts=stamp(ts)))["ok"], ts
    for ts in (T0 - skew - TICK, T0 + skew + TICK):
        record = rig.ask(rig.request(rig.b, ts=stamp(ts)))
        assert code(record) == "unauthorized" and "window" in record["error"]["message"]


def test_a_nonce_is_refused_while_remembered_and_forgotten_when_its_ts_is_stale(
    rig: Rig,
) -> None:
    skew = rig.plant.gateway.query.max_skew_seconds
    captured = rig.request(rig.b)
    assert rig.ask(captured)["ok"]
    rig.clocks.advance(skew)  # still inside the window: the nonce protects
    record = rig.ask(captured)
    assert code(record) == "unauthorized" and "nonce" in record["error"]["message"]
    assert rig.handler.nonces.count("platform-b") == 1
    rig.clocks.advance(0.001)  # now the ts refuses it, and the nonce may go
    assert "window" in rig.ask(captured)["error"]["message"]
    assert rig.ask(rig.request(rig.b))["ok"]
    assert rig.handler.nonces.count("platform-b") == 1, "the stale nonce was not forgotten"


def test_nonce_memory_is_bounded_and_full_means_rate_limited_not_forgetting(rig: Rig) -> None:
    rig.handler.nonces.limit = 5
    for _ in range(5):
        assert rig.ask(rig.request(rig.b))["ok"]
    record = rig.ask(rig.request(rig.b))
    assert code(record) == "rate_limited" and "replay window" in record["error"]["message"]
    assert rig.handler.nonces.count("platform-b") == 5
    rig.clocks.advance(rig.plant.gateway.query.max_skew_seconds + 1)
    assert rig.ask(rig.request(rig.b))["ok"], "expired nonces make room again"


def test_nonces_survive_a_restart_in_the_state_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "query-nonces.sqlite"
    first = Rig(tmp_path, NonceStore(path))
    captured = first.request(first.b)
    assert first.ask(captured)["ok"]
    assert isinstance(first.handler.nonces, NonceStore)
    first.handler.nonces.close()

    # a new process: same keys, a fresh handler, the store reopened from disk
    store = NonceStore(path, wall_clock=T0.timestamp)
    second = Rig(tmp_path, store)
    second.a, second.b = first.a, first.b
    second.handler.keys = first.handler.keys
    record = second.ask(captured)
    assert code(record) == "unauthorized" and "nonce" in record["error"]["message"]
    store.close()

    later = NonceStore(path, wall_clock=lambda: T0.timestamp() + 3600)
    assert later.count("platform-b") == 0, "expired nonces are not loaded"
    later.close()


def test_the_memory_only_nonces_forget_on_restart(rig: Rig, tmp_path: Path) -> None:
    """What item 11 was about: without the store a restart opens a replay window."""
    captured = rig.request(rig.b)
    assert rig.ask(captured)["ok"]
    fresh = Rig(tmp_path)
    fresh.handler.keys = rig.handler.keys
    assert fresh.ask(captured)["ok"]


# ---- rate limits and the unauthenticated budget -------------------------------------------


def test_the_token_bucket_refills_at_the_platform_rate(rig: Rig) -> None:
    for _ in range(3):  # burst 3
        assert rig.ask(rig.request(rig.a))["ok"]
    assert code(rig.ask(rig.request(rig.a))) == "rate_limited"
    rig.clocks.advance(0.5)  # rate 1/s: half a token
    assert code(rig.ask(rig.request(rig.a))) == "rate_limited"
    rig.clocks.advance(0.5)
    assert rig.ask(rig.request(rig.a))["ok"]
    assert code(rig.ask(rig.request(rig.a))) == "rate_limited"
    rig.clocks.advance(10)  # never more than the burst saved up
    assert [rig.ask(rig.request(rig.a))["ok"] for _ in range(4)] == [True, True, True, False]


def test_rate_limited_is_answered_every_time_and_logged_once_per_interval(rig: Rig) -> None:
    replies = [rig.ask(rig.request(rig.a)) for _ in range(50)]
    assert sum(r["ok"] for r in replies) == 3
    assert {code(r) for r in replies if not r["ok"]} == {"rate_limited"}
    assert len(rig.log.events("query_rate_limited")) == 1
    rig.clocks.advance(LOG_INTERVAL)
    rig.handler.flush_logs()
    summary = rig.log.events("query_rate_limited")
    assert (
        len(summary) == 2 and summary[1]["count"] == 46 and summary[1]["platform"] == "platform-a"
    )


def test_unauthenticated_refusals_are_answered_within_a_budget_and_logged_per_interval(
    rig: Rig,
) -> None:
    unsigned = json.dumps(new_request("describe", {})).encode()
    replies = [rig.send(unsigned) for _ in range(UNAUTHENTICATED_BURST + 50)]
    answered = [r for r in replies if r is not None]
    assert len(answered) == UNAUTHENTICATED_BURST
    assert code(rig.record(answered[0])) == "unauthorized"
    rig.clocks.advance(1.0)
    more = [rig.send(unsigned) for _ in range(50)]
    assert sum(r is not None for r in more) == int(UNAUTHENTICATED_RATE)
    assert len(rig.log.events("query_unauthenticated_refused")) == 1
    assert rig.log.events("query_refused") == []
    rig.clocks.advance(LOG_INTERVAL)
    rig.handler.flush_logs()
    lines = rig.log.events("query_unauthenticated_refused")
    assert len(lines) == 2
    assert lines[1]["count"] == UNAUTHENTICATED_BURST + 99
    assert lines[1]["unanswered"] == 50 + 50 - int(UNAUTHENTICATED_RATE)
    # a real platform is not held back by the anonymous flood
    assert rig.ask(rig.request(rig.b))["ok"]


def test_a_replayed_request_counts_as_unauthenticated(rig: Rig) -> None:
    captured = rig.request(rig.b)
    assert rig.ask(captured)["ok"]
    replies = [rig.send(captured) for _ in range(UNAUTHENTICATED_BURST + 10)]
    assert sum(r is not None for r in replies) == UNAUTHENTICATED_BURST
    assert rig.log.events("query_refused") == []


# ---- reply address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["platform/+/r", "platform/#", "edge/plant-a/gw-1/status", "x" * 513, ""],
)
def test_replies_never_go_to_wildcards_our_namespace_or_overlong_topics(
    rig: Rig, topic: str
) -> None:
    assert rig.send(rig.request(rig.b), topic=topic) is None
    assert rig.handler.counts["unanswered"] == 1


def test_v311_reply_to_is_used_and_the_mqtt5_response_topic_wins(rig: Rig) -> None:
    v311 = rig.request(rig.b, reply_to="platform/v311")
    reply = rig.send(v311, topic=None)
    assert reply is not None and reply.topic == "platform/v311"
    both = rig.request(rig.b, reply_to="platform/v311")
    reply = rig.send(both, topic="platform/v5")
    assert reply is not None and reply.topic == "platform/v5" and reply.correlation_data == b"corr"
    assert rig.send(rig.request(rig.b), topic=None) is None, "no address, no reply"


def test_replies_chain_per_reply_topic(rig: Rig) -> None:
    seqs = []
    for topic in ("platform/x", "platform/y", "platform/x"):
        reply = rig.send(rig.request(rig.b), topic=topic)
        assert reply is not None
        seqs.append(verify_envelope(reply.payload, jwks([rig.signer.public_key]))["seq"])
    assert seqs == [1, 1, 2]


def test_oversize_requests_are_answered_when_an_address_can_be_read(rig: Rig) -> None:
    limit = rig.plant.gateway.query.max_request_bytes
    big = rig.request(rig.b, params={"pad": "x" * limit}, reply_to="platform/v311")
    record = rig.ask(big, topic=None)
    assert code(record) == "too_large" and record["id"]
    assert code(rig.ask(b"x" * (limit + 1))) == "too_large", "MQTT 5: the property suffices"
    huge = rig.request(rig.b, params={"pad": "x" * ADDRESS_PARSE_LIMIT}, reply_to="platform/v311")
    assert rig.send(huge, topic=None) is None, "too big to look for an address in"


# ---- what a platform may see -----------------------------------------------------------


def test_whole_plant_answers_shrink_to_the_platforms_machines(rig: Rig) -> None:
    for method in ("describe", "state", "aas", "capacity"):
        record = rig.ask(rig.request(rig.b, method))
        assert set(record["result"]["machines"]) == {"m1", "m2"}, method
        rig.clocks.advance(1)
        record = rig.ask(rig.request(rig.a, method))
        assert set(record["result"]["machines"]) == {"m1"}, method
    assert code(rig.ask(rig.request(rig.a, "state", {"asset": "m2"}))) == "forbidden"
    rig.clocks.advance(1)
    assert code(rig.ask(rig.request(rig.b, "state", {"asset": "m9"}))) == "not_found"


def test_health_shows_the_platforms_machines_and_only_its_own_destination(rig: Rig) -> None:
    scoped = rig.ask(rig.request(rig.a, "health"))["result"]
    assert scoped["devices"] == {"m1": "up"}
    assert scoped["destinations"] == {"local": {"sent": 1}}
    # m2's gaps not yet reported are not counted either
    assert scoped["losses"] == {"lost_records": 3, "by_machine": {"m1": 3}, "unreported_gaps": 0,
                                "unreported_by_machine": {}}
    # why m2 is down, and what it sent the signer, is m2's business only
    assert scoped["device_reasons"] == {} and scoped["device_faults"] == {}
    assert scoped["unsignable"] == {"replaced": 2, "dropped": 0,
                                    "by_machine": {"m1": {"replaced": 2, "dropped": 0}}}
    everything = rig.ask(rig.request(rig.b, "health"), destination="cloud-7")["result"]
    assert everything["devices"] == {"m1": "up", "m2": "down"}
    assert everything["device_faults"] == {"m2": {"status": "down", "reason": "refused"}}
    assert everything["unsignable"]["replaced"] == 5
    assert everything["destinations"] == {"cloud-7": {"sent": 2}}
    assert "local" not in json.dumps(everything)


# ---- typ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["edge-envelope+json", "JWT", None])
def test_a_jws_that_is_not_a_request_is_refused(rig: Rig, typ: str | None) -> None:
    record = rig.ask(rig.request(rig.b, typ=typ))
    assert code(record) == "unauthorized"
    assert record["error"]["message"] == f"typ must be {REQUEST_TYP}"


def test_a_gateway_envelope_signed_with_a_platform_key_is_not_a_request(rig: Rig) -> None:
    """The attack item 13 names: a stream envelope is a JWS with typ edge-envelope+json;
    even one signed by a platform key never passes for a request."""
    envelope = Signer(rig.b).sign_body(json.loads(new_request_json()))
    record = rig.ask(json.dumps(envelope).encode())
    assert code(record) == "unauthorized" and "typ" in record["error"]["message"]


def new_request_json() -> str:
    body = new_request("describe", {})
    body["ts"] = stamp(T0)
    return json.dumps(body)
