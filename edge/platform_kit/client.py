"""The platform side of a query, for `edge-gateway query` and for integrators to copy:
sign a request with the platform key, publish it, wait for the reply, verify it against
the gateway's retained JWKS."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge.platform_kit.verifier import verify_envelope
from edge.signing.jws import b64url_encode, canonical_json, jwk_public, sign_jws
from models.errors import ConfigurationError, TransportError
from models.query import REPLY_PREFIX, REQUEST_TYP, TEXT_PARAMS, request_ts


def _unanswered(gateway: str, keys_seen: bool) -> str:
    """Why no reply came, as far as the broker tells: a gateway that ever ran there left its
    keys retained, so none means a wrong `gateway` path (the usual first mistake)."""
    if not keys_seen:
        return (f"no gateway has published on this broker under {gateway} (nothing retained "
                f"on {gateway}/keys): check the path, {{prefix}}/{{site}}/{{gateway id}} as in "
                "the gateway's `status` topic")
    return (f"the gateway at {gateway} did not answer: not running (see its `status` topic), "
            "busy, or it dropped the request unanswered (docs/protocol.md, \"Query refusals\")")


def params_from_words(words: list[str]) -> dict[str, object]:
    """`NAME=VALUE` words (a command line) as request params. VALUE is read as JSON where it
    parses (numbers, booleans, lists: `state=["accepted","released"]`), else as text; ids and
    names (`TEXT_PARAMS`: `reference=4711`) stay text as written. ValueError names a word
    that is not NAME=VALUE."""
    params: dict[str, object] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError(f"parameter {word!r} is not NAME=VALUE")
        if name in TEXT_PARAMS:
            params[name] = value
            continue
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot read platform key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 private key")
    return key


def sign_request(key: Ed25519PrivateKey, body: dict[str, Any]) -> dict[str, str]:
    header = {"alg": "EdDSA", "kid": jwk_public(key)["kid"], "typ": REQUEST_TYP}
    protected = b64url_encode(canonical_json(header))
    payload = b64url_encode(canonical_json(body))
    return {
        "protected": protected,
        "payload": payload,
        "signature": sign_jws(protected, payload, key),
    }


def new_request(method: str, params: dict[str, Any], reply_to: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "method": method,
        "params": params,
        "id": secrets.token_hex(8),
        "ts": request_ts(),
        "nonce": secrets.token_urlsafe(16),
    }
    if reply_to:
        body["reply_to"] = reply_to
    return body


async def query(
    broker: str,
    key: Ed25519PrivateKey,
    gateway: str,
    method: str,
    params: dict[str, Any],
    *,
    wait: float = 10.0,
) -> dict[str, Any]:
    """`gateway` is `{prefix}/{site}/{gateway id}`; returns the verified reply record.

    The MQTT client (paho-mqtt, through the gateway's transport) is imported here, so that
    signing and verifying need only `cryptography` and `rfc8785`."""
    from edge.transport.mqtt import MqttTransport  # noqa: PLC0415 (live part, lazily)
    from models.plant import Destination  # noqa: PLC0415 (pydantic, for the transport)

    transport = MqttTransport(
        Destination(id="query", url=broker), client_id=f"edge-query-{secrets.token_hex(4)}"
    )
    await transport.start()
    try:
        if not await transport.wait_connected(wait):
            raise TransportError(f"cannot connect to {broker}")
        reply_topic = f"{REPLY_PREFIX}{secrets.token_hex(8)}"
        await transport.subscribe(f"{gateway}/keys", 1)
        await transport.subscribe(reply_topic, 1)
        body = new_request(method, params, reply_to=reply_topic)
        request = sign_request(key, body)
        await transport.publish(
            f"{gateway}/query",
            json.dumps(request).encode(),
            qos=1,
            properties={"response_topic": reply_topic, "correlation_data": body["id"].encode()},
        )
        jwks: dict[str, Any] | None = None
        reply: bytes | None = None
        try:
            async with asyncio.timeout(wait):
                async for msg in transport.messages():
                    if msg.topic.endswith("/keys"):
                        jwks = json.loads(msg.payload)
                    elif msg.topic == reply_topic:
                        reply = msg.payload
                    if jwks is not None and reply is not None:
                        break
        except TimeoutError:
            raise TimeoutError(_unanswered(gateway, jwks is not None)) from None
        assert jwks is not None and reply is not None
        verified = verify_envelope(reply, jwks, topic=reply_topic)
        record: dict[str, Any] = verified["records"][0]
        if record.get("id") != body["id"]:
            raise TransportError("reply does not answer this request")
        return record
    finally:
        await transport.stop()
