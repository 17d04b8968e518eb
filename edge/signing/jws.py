"""Envelope signing: JWS JSON flattened serialization, EdDSA over Ed25519 (wire contract v1).

Why this shape: a platform must be able to check every envelope with any stock JOSE library
(RFC 7515 section 7.2.2, RFC 8037), find the key by a name it can recompute itself (the
RFC 7638 thumbprint as `kid`), and see a lost, replayed or reordered message on a topic
(`seq`/`prev` per topic, see `ChainState`). Bodies are canonicalized with RFC 8785 so the
signed bytes are the same whichever JSON library built the dict (`edge.signing.jcs`: orjson
for the gateway's own body shapes, byte-identical to the `rfc8785` package, which the
platform-side verifier uses alone).

Order of operations for a producer (the outbox owns durability)::

    seq, prev = chain.next(topic)                 # pure read
    env = signer.sign_body({..., "topic": topic, "seq": seq, "prev": prev})
    <store env and chain state in one transaction>
    chain.commit(topic, seq, signing_input_hash(env))

Committing only after the envelope is stored keeps the chain without holes after a crash.
This module does no I/O; key files live in `edge.signing.keystore`, checking lives in
`edge.platform_kit.verifier`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.signing import jcs

__all__ = [
    "ALG",
    "TYP",
    "ChainState",
    "Signer",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "jwk_public",
    "jwk_thumbprint",
    "jwks",
    "sign_jws",
    "signing_input_hash",
]

ALG = "EdDSA"
"""Header `alg` we emit: RFC 8037 name, understood by every JOSE library in use today."""
TYP = "edge-envelope+json"
"""Header `typ`: stops a JWS made for another purpose with the same key passing as ours."""


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of `b64url_encode`: rejects padding, `+`/`/` and non-canonical tails.

    Strictness matters: two spellings of the same bytes would give two different `prev` hashes.
    """
    if not isinstance(text, str) or not text.isascii() or "=" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not unpadded base64url: {exc}") from exc
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url (non-zero trailing bits)")
    return data


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of `value`; ValueError if JCS cannot represent it.

    JCS refuses NaN/Infinity and integers beyond 2**53 (I-JSON), so such values must be sent
    as strings or floats by the caller rather than silently change on a platform's parser.
    """
    return jcs.canonical_json(value)


def jwk_thumbprint(x: str) -> str:
    """RFC 7638 thumbprint of an Ed25519 OKP key given its `x` (required members, sorted)."""
    required = canonical_json({"crv": "Ed25519", "kty": "OKP", "x": x})
    return b64url_encode(hashlib.sha256(required).digest())


def _public(key: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def jwk_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> dict[str, str]:
    """Public JWK (RFC 8037) of `key` with `kid`, `alg` and `use`; never private material."""
    raw = _public(key).public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = b64url_encode(raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": jwk_thumbprint(x), "alg": ALG,
            "use": "sig"}


def jwks(keys: Iterable[Ed25519PrivateKey | Ed25519PublicKey | Mapping[str, str]]) -> (
        dict[str, list[dict[str, str]]]):
    """JWK Set for the `keys` topic: keys in the given order (current first), deduplicated."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for key in keys:
        jwk = dict(key) if isinstance(key, Mapping) else jwk_public(key)
        if jwk["kid"] not in seen:
            seen.add(jwk["kid"])
            out.append(jwk)
    return {"keys": out}


def sign_jws(protected_b64: str, payload_b64: str, key: Ed25519PrivateKey) -> str:
    """Signature (b64url) over the JWS signing input `protected.payload` (RFC 7515 5.1).

    Low level on purpose: the RFC 8037 known-answer test runs this exact code path.
    """
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    return b64url_encode(key.sign(signing_input))


def signing_input_hash(envelope: Mapping[str, Any]) -> str:
    """b64url(SHA-256(ASCII(protected "." payload))): the `prev` of the next envelope.

    Hashing the signing input rather than the body binds the header (kid, alg) as well, and
    any subscriber can compute it from the envelope as received without re-serializing.
    """
    signing_input = f"{envelope['protected']}.{envelope['payload']}".encode("ascii")
    return b64url_encode(hashlib.sha256(signing_input).digest())


class Signer:
    """Signs envelope bodies with one Ed25519 key; `kid` is the key's RFC 7638 thumbprint."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("Signer needs an Ed25519PrivateKey")
        self._key = private_key
        self.public_jwk = jwk_public(private_key)
        self.kid = self.public_jwk["kid"]
        # The header never changes for a key: encode it once, canonically.
        self._protected = b64url_encode(
            canonical_json({"alg": ALG, "kid": self.kid, "typ": TYP}))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The verifying half, for JWKS publication."""
        return self._key.public_key()

    def sign_body(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Flattened JWS `{"protected","payload","signature"}` of the JCS bytes of `body`."""
        payload = b64url_encode(canonical_json(dict(body)))
        return {"protected": self._protected, "payload": payload,
                "signature": sign_jws(self._protected, payload, self._key)}

    def __repr__(self) -> str:  # never show key material, even by accident in a log
        return f"Signer(kid={self.kid!r})"


def _check_link(link_hash: str) -> None:
    if len(b64url_decode(link_hash)) != 32:
        raise ValueError("link hash is not a b64url SHA-256")


class ChainState:
    """Per-topic `seq`/`prev` counters: pure data, persisted by the outbox.

    Rules (wire contract v1): `seq` starts at 1 and grows by exactly 1 per envelope on a
    topic; `prev` is null for seq 1, otherwise `signing_input_hash` of the envelope with
    seq - 1 on the same topic. Nothing here depends on the key, so the chain runs on across
    key rotation and restarts (as long as the state is restored with `from_dict`).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, str]] = {}

    def next(self, topic: str) -> tuple[int, str | None]:
        """`(seq, prev)` for the next envelope on `topic`; does not advance the state."""
        last = self._last.get(topic)
        return (1, None) if last is None else (last[0] + 1, last[1])

    def commit(self, topic: str, seq: int, link_hash: str) -> None:
        """Record that envelope `seq` (hashing to `link_hash`) is stored for `topic`.

        Anything but the next seq is a bug in the caller (a double commit would fork the
        chain), so it raises ValueError instead of silently leaving a hole.
        """
        expected, _ = self.next(topic)
        if seq != expected:
            raise ValueError(f"chain {topic!r}: commit of seq {seq}, expected {expected}")
        _check_link(link_hash)
        self._last[topic] = (seq, link_hash)

    def rewind(self, topic: str, last: tuple[int, str] | None) -> None:
        """Continue `topic` from `last` (None: from the start) after envelopes committed
        here ahead of the store could not be stored (edge/egress/sealer.py)."""
        if last is None:
            self._last.pop(topic, None)
        else:
            _check_link(last[1])
            self._last[topic] = last

    def last(self, topic: str) -> tuple[int, str] | None:
        """`(seq, hash)` of the last committed envelope on `topic`, or None."""
        return self._last.get(topic)

    def items(self) -> Iterator[tuple[str, int, str]]:
        """`(topic, seq, hash)` rows, e.g. for one SQLite row per topic."""
        for topic, (seq, link_hash) in sorted(self._last.items()):
            yield topic, seq, link_hash

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready `{topic: {"seq": n, "hash": "..."}}`."""
        return {t: {"seq": s, "hash": h} for t, s, h in self.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> ChainState:
        """Inverse of `to_dict`; ValueError on a malformed entry."""
        state = cls()
        for topic, entry in data.items():
            seq, link_hash = entry.get("seq"), entry.get("hash")
            if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1
                    or not isinstance(link_hash, str)):
                raise ValueError(f"chain state for {topic!r} is malformed: {entry!r}")
            _check_link(link_hash)
            state._last[str(topic)] = (seq, link_hash)
        return state
