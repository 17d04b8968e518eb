"""Read envelopes for `edge-gateway verify`: from a capture file or live from a broker.

A `json` destination's message (the body, with the detached JWS in the MQTT 5 user property
`jws`) is checked as the envelope it stands for. A capture line is
`{"topic": ..., "envelope": {...}}` (what `--save` writes) or a bare envelope. Live capture
takes the JWKS from the retained `.../keys` topic, so a platform
engineer can check a gateway with nothing but its broker address; `--save` writes each keys
message it sees as `{"topic": ..., "keys": JWKS}`, so the saved file verifies on its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from edge.platform_kit.verifier import (
    ChainChecker,
    Finding,
    KeySet,
    Malformed,
    Report,
    detached_to_envelope,
    not_gateway_envelopes,
)
from models.envelope import JWS_PROPERTY
from models.errors import TransportError

VERIFIED = frozenset({"ok", "gap", "duplicate", "reordered", "reset"})
"""Kinds whose envelope is authentic (a chain anomaly is not a forgery): shown by `watch`."""


OnVerified = Callable[[str, dict[str, Any]], None]
"""Called with (topic, body) for each envelope that verified (`edge-gateway watch`)."""


async def verify_live(
    broker: str,
    topic_filter: str,
    seconds: float | None,
    out: TextIO,
    *,
    save: TextIO | None = None,
    on_verified: OnVerified | None = None,
    stop: asyncio.Event | None = None,
    connected: asyncio.Event | None = None,
) -> Report:
    """Subscribe, pick up the JWKS from retained `keys` topics, check every envelope;
    `seconds` None listens until cancelled or `stop` is set. Setting `stop` (the command
    line's Ctrl-C and SIGTERM) ends the listening as the end of `seconds` does, so the
    report of what came in so far is still made: cancelling would lose it. `connected` is
    set once the broker accepted the link (`watch` draws its table from then on).

    paho-mqtt and pydantic (through the transport) are imported only here, when used."""
    from edge.transport.mqtt import MqttTransport  # noqa: PLC0415 (live part, lazily)
    from models.plant import Destination  # noqa: PLC0415

    # a client id of its own: `watch` and `verify` side by side (README) shared one, so the
    # broker closed each link as the other connected and both reported gaps and duplicates
    transport = MqttTransport(
        Destination(id="verify", url=broker), client_id=f"edge-verify-{secrets.token_hex(4)}"
    )
    await transport.start()
    checker = ChainChecker()
    keys: KeySet | None = None
    jwks_seen: dict[str, Any] = {"keys": []}
    waiting: list[tuple[str, bytes]] = []
    skipped = 0
    try:
        up = False
        async with _listening(None, stop):
            up = await transport.wait_connected(10)
        if not up and not (stop is not None and stop.is_set()):
            raise TransportError(f"cannot connect to {broker}")
        if up and connected is not None:
            connected.set()
        await transport.subscribe(topic_filter, 1)
        keys_filter = topic_filter.rstrip("#").rstrip("/") + "/+/keys"
        if "#" in topic_filter and keys_filter != topic_filter:
            await transport.subscribe(keys_filter, 1)
        async with _listening(seconds if up else 0, stop):
            async for msg in transport.messages():
                if msg.topic.endswith("/keys"):
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        jwks = json.loads(msg.payload)
                        if save is not None and isinstance(jwks, dict):
                            save.write(json.dumps({"topic": msg.topic, "keys": jwks}) + "\n")
                        for jwk in jwks.get("keys", []):
                            if jwk not in jwks_seen["keys"]:
                                jwks_seen["keys"].append(jwk)
                        keys = KeySet.from_jwks(jwks_seen)
                    for topic, payload in waiting:
                        _check(checker, keys, topic, payload, out=out, save=save,
                               on_verified=on_verified)
                    waiting.clear()
                    continue
                if not_gateway_envelopes(msg.topic):
                    skipped += 1  # status JSON, platform requests, values: not envelopes
                    continue
                payload = _as_envelope(msg.payload, dict(msg.user_properties))
                if keys is None or _kid(payload) not in keys.keys:
                    # a JWKS may reach us after the first envelopes it covers (retained
                    # messages of different topics arrive in no defined order): hold them
                    waiting.append((msg.topic, payload))
                else:
                    _check(checker, keys, msg.topic, payload, out=out, save=save,
                           on_verified=on_verified)
    finally:
        await transport.stop()
    for topic, payload in waiting:  # still no key for them: judged as they are
        if keys is None:
            checker.reject("unknown_key", "no JWKS seen on a keys topic", topic=topic)
        else:
            _check(checker, keys, topic, payload, out=out, save=save)
    report = checker.report()
    report.skipped = skipped
    return report


@contextlib.asynccontextmanager
async def _listening(seconds: float | None, stop: asyncio.Event | None) -> AsyncIterator[None]:
    """A window of `seconds` (None: unbounded) that `stop` ends early; its end, either way,
    is not an error: the code after it reports what came in."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds) as window:
            ender = None if stop is None else asyncio.create_task(_end_on(stop, window))
            try:
                yield
            finally:
                if ender is not None:
                    ender.cancel()


async def _end_on(stop: asyncio.Event, window: asyncio.Timeout) -> None:
    await stop.wait()
    window.reschedule(asyncio.get_running_loop().time())


def _as_envelope(payload: bytes, user_properties: dict[str, str]) -> bytes:
    """A `json` destination's message (body + detached JWS property) as the envelope it
    stands for, so the chain check and `--save` treat both formats alike."""
    detached = user_properties.get(JWS_PROPERTY)
    if detached is None:
        return payload
    try:
        return json.dumps(detached_to_envelope(payload, detached), separators=(",", ":")).encode()
    except Malformed:
        return payload  # judged as it is: the checker reports it malformed


def _kid(payload: bytes) -> str | None:
    try:
        protected = json.loads(payload)["protected"]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    except (ValueError, KeyError, TypeError):
        return None  # malformed: the checker will say so
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _body(payload: bytes) -> dict[str, Any]:
    """The body of an envelope the checker has just verified (so it parses)."""
    encoded = json.loads(payload)["payload"]
    padded = encoded + "=" * (-len(encoded) % 4)
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return body


def _check(
    checker: ChainChecker,
    keys: KeySet | None,
    topic: str,
    payload: bytes,
    *,
    out: TextIO,
    save: TextIO | None,
    on_verified: OnVerified | None = None,
) -> None:
    assert keys is not None
    finding: Finding = checker.feed(payload, keys, topic=topic)
    if on_verified is not None and finding.kind in VERIFIED:
        on_verified(topic, _body(payload))
    if save is not None:
        with contextlib.suppress(ValueError):
            save.write(json.dumps({"topic": topic, "envelope": json.loads(payload)}) + "\n")
    if finding.kind != "ok":
        out.write(f"{finding.kind}: {topic} seq {finding.seq}: {finding.detail}\n")
