"""Platform-side checking of gateway envelopes (wire contract v1), in one self-contained file.

Why standalone: a platform should be able to copy this file (or read it as the reference of
docs/protocol.md) without installing the gateway, so it imports only the standard library,
`cryptography` and `rfc8785`, and repeats the few helpers it shares with `edge.signing.jws`.

Two layers:

* `verify_envelope` authenticates one envelope against a JWKS and returns its body, or
  raises one of::

      VerificationError
      +-- Malformed        not a v1 envelope: JSON, base64url, header, body, non-canonical body
      |   +-- TopicMismatch   authentic, but received on another topic than it was signed for
      +-- UnknownKey       `kid` not in the JWKS (or its JWK is unusable)
      +-- BadSignature     signature does not verify: altered or forged

* `ChainChecker` follows `seq`/`prev` per topic across verified envelopes and classifies each
  (`Kind`): a lost, replayed, reordered or substituted message shows up in `report()`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ALGORITHMS",
    "TYP",
    "BadSignature",
    "ChainChecker",
    "Finding",
    "JwksLike",
    "KeySet",
    "Kind",
    "Malformed",
    "Report",
    "TopicMismatch",
    "UnknownKey",
    "VerificationError",
    "booking_commitment",
    "capture_jwks",
    "detached_to_envelope",
    "link_hash",
    "verify_detached",
    "verify_envelope",
    "verify_stream",
]

ALGORITHMS = frozenset({"EdDSA", "Ed25519"})
"""`EdDSA` (RFC 8037, what gateways send) and its fully-specified name `Ed25519` (RFC 9864)."""
TYP = "edge-envelope+json"
ENVELOPE_MEMBERS = frozenset({"protected", "payload", "signature"})

Kind = Literal["ok", "gap", "duplicate", "reordered", "broken_chain", "reset", "forgery",
               "unknown_key", "malformed", "misrouted"]
KINDS: tuple[Kind, ...] = ("ok", "gap", "duplicate", "reordered", "broken_chain", "reset",
                           "forgery", "unknown_key", "malformed", "misrouted")
# What a healthy MQTT QoS 1 stream may contain; a gap counts only while still `missing`.
_BENIGN = frozenset({"ok", "duplicate", "reordered", "gap"})
_MAX_SAFE_INT = 2**53 - 1


class VerificationError(Exception):
    """The envelope cannot be trusted; the message says why (never contains key material)."""


class Malformed(VerificationError):
    """Not a well-formed v1 envelope (syntax, header, body fields, non-canonical payload)."""


class TopicMismatch(Malformed):
    """Validly signed, but the body's topic is not the topic it arrived on (a replay)."""


class UnknownKey(VerificationError):
    """The header's `kid` names no usable Ed25519 key in the JWKS."""


class BadSignature(VerificationError):
    """The signature does not match: altered in transit, or signed by someone else."""


def _b64d(text: Any, what: str) -> bytes:
    """Strict unpadded base64url: one spelling per byte string, so hashes are unambiguous."""
    if not isinstance(text, str) or not text.isascii() or "=" in text or len(text) % 4 == 1:
        raise Malformed(f"{what}: not unpadded base64url")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise Malformed(f"{what}: not base64url ({exc})") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise Malformed(f"{what}: non-canonical base64url")
    return data


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(text: str) -> int | float:
    """JSON numbers are IEEE doubles in JCS: integers beyond 2**53 are read as such.

    (JCS writes the double 2.0**53 as `9007199254740992`; reading that back as a Python int
    would make the canonical check refuse a payload our signer legitimately produced.)
    """
    value = int(text)
    return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else float(text)


def _json(data: bytes | str, what: str) -> Any:
    """Strict JSON: UTF-8 only, no duplicate names (parsers disagree on them), no NaN."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_reject_constant, parse_int=_number)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed(f"{what}: not valid JSON ({exc})") from None


def link_hash(envelope: Mapping[str, Any]) -> str:
    """b64url(SHA-256(ASCII(protected "." payload))): what the next envelope's `prev` holds."""
    signing_input = f"{envelope['protected']}.{envelope['payload']}".encode("ascii")
    return _b64e(hashlib.sha256(signing_input).digest())


def booking_commitment(booking: str, platform: str, reference: str, salt: str) -> str:
    """b64url(SHA-256(JCS({"booking", "platform", "reference", "salt"}))): the `commitment`
    of a `bookings` record and of a `part` record's `booking` (docs/protocol.md, "Who sees
    whose bookings").

    Why a salted commitment: the `bookings` and `part` streams go to every subscriber of a
    destination, competitors included. The commitment binds a booking to its platform and
    reference without showing them; the salt (16 random bytes, in the reserve reply and the
    platform's own `bookings` answer only) keeps a low-entropy reference such as `PO-4711`
    from being guessed and makes two bookings of one platform unlinkable. The platform
    recomputes this from its own id, reference and salt and compares."""
    doc = {"booking": booking, "platform": platform, "reference": reference, "salt": salt}
    return _b64e(hashlib.sha256(rfc8785.dumps(doc)).digest())


class KeySet:
    """Ed25519 public keys of a JWKS by `kid`, parsed once for many envelopes.

    A JWK is usable only if it is an OKP/Ed25519 signing key whose `kid` equals its own
    RFC 7638 thumbprint: the JWKS then cannot make one key answer to another key's name.
    Other keys (RSA, encryption keys) are skipped, not errors: a JWKS may hold more than ours.
    """

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], rejected: Mapping[str, str]) -> None:
        self.keys = dict(keys)
        self.rejected = dict(rejected)  # kid -> why its JWK is unusable

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any] | str) -> KeySet:
        data = _json(jwks, "JWKS") if isinstance(jwks, str) else jwks
        entries = data.get("keys") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            raise Malformed('JWKS: expected {"keys": [...]}')
        keys: dict[str, Ed25519PublicKey] = {}
        rejected: dict[str, str] = {}
        for jwk in entries:
            if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kid"), str):
                continue
            kid = jwk["kid"]
            why = cls._problem(jwk)
            if why is None:
                try:
                    keys[kid] = Ed25519PublicKey.from_public_bytes(_b64d(jwk["x"], "JWK x"))
                except ValueError as exc:
                    why = f"x is not an Ed25519 public key ({exc})"
            if why is not None and jwk.get("kty") == "OKP":
                rejected[kid] = why
        return cls(keys, rejected)

    @staticmethod
    def _problem(jwk: Mapping[str, Any]) -> str | None:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            return "not an OKP Ed25519 key"
        if "d" in jwk:
            return "JWKS carries a private key; refusing it"
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "EdDSA") not in ALGORITHMS:
            return "not a signing key for EdDSA"
        try:
            if len(_b64d(jwk.get("x"), "JWK x")) != 32:
                return "x is not 32 bytes"
        except Malformed as exc:
            return str(exc)
        required = rfc8785.dumps({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]})
        if _b64e(hashlib.sha256(required).digest()) != jwk["kid"]:
            return "kid is not the RFC 7638 thumbprint of the key"
        return None


JwksLike: TypeAlias = "Mapping[str, Any] | str | KeySet"
"""A JWKS as a dict, as JSON text, or already parsed (fastest for many envelopes)."""


def _envelope_dict(env: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    data = _json(env, "envelope") if isinstance(env, (str, bytes)) else env
    if not isinstance(data, Mapping):
        raise Malformed("envelope: not a JSON object")
    members = set(data)
    if members != ENVELOPE_MEMBERS:
        extra, missing = sorted(members - ENVELOPE_MEMBERS), sorted(ENVELOPE_MEMBERS - members)
        raise Malformed(f"envelope: expected exactly protected/payload/signature "
                        f"(extra {extra}, missing {missing})")
    return data


def _check_header(header: Any) -> str:
    if not isinstance(header, dict):
        raise Malformed("header: not a JSON object")
    if header.get("alg") not in ALGORITHMS:
        raise Malformed(f"header: alg {header.get('alg')!r} not in {sorted(ALGORITHMS)}")
    typ = header.get("typ")
    # RFC 7515 4.1.9: "application/" may be omitted; media types compare case-insensitively.
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != TYP:
        raise Malformed(f"header: typ {typ!r} is not {TYP!r}")
    if "crit" in header:
        raise Malformed("header: crit extensions are not understood")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Malformed("header: kid missing")
    return kid


def _check_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Malformed("body: not a JSON object")
    if body.get("v") != 1 or isinstance(body.get("v"), bool):
        raise Malformed(f"body: unsupported version v={body.get('v')!r}")
    if not isinstance(body.get("topic"), str) or not body["topic"]:
        raise Malformed("body: topic missing")
    seq, prev = body.get("seq"), body.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise Malformed(f"body: seq {seq!r} is not a positive integer")
    if seq == 1 and prev is not None:
        raise Malformed("body: prev must be null for seq 1")
    if seq > 1 and (prev is None or len(_b64d(prev, "body prev")) != 32):
        raise Malformed("body: prev must be a b64url SHA-256 for seq > 1")
    return body


def verify_envelope(env: Mapping[str, Any] | str | bytes, jwks: JwksLike, *,
                    topic: str | None = None) -> dict[str, Any]:
    """Authenticate one envelope and return its body (steps in docs/protocol.md).

    `topic`, when given, is the MQTT topic the envelope arrived on; it must equal the body's
    `topic`, otherwise an authentic envelope could be replayed onto another machine's topic.
    Keys embedded in the header (`jwk`, `jku`, `x5c`...) are ignored: only `jwks` is trusted.
    """
    data = _envelope_dict(env)
    protected, payload, signature = data["protected"], data["payload"], data["signature"]
    header_bytes = _b64d(protected, "protected")
    payload_bytes = _b64d(payload, "payload")
    sig = _b64d(signature, "signature")
    kid = _check_header(_json(header_bytes, "header"))
    keys = jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks)
    key = keys.keys.get(kid)
    if key is None:
        why = keys.rejected.get(kid, "not in the JWKS")
        raise UnknownKey(f"kid {kid!r}: {why}")
    try:
        key.verify(sig, f"{protected}.{payload}".encode("ascii"))
    except InvalidSignature:
        raise BadSignature(f"signature does not verify with kid {kid!r}") from None
    body = _json(payload_bytes, "payload")
    try:
        canonical = rfc8785.dumps(body)
    except (ValueError, TypeError) as exc:
        raise Malformed(f"payload: cannot be canonicalized ({exc})") from None
    if canonical != payload_bytes:
        raise Malformed("payload: not RFC 8785 canonical JSON")
    body = _check_body(body)
    if topic is not None and body["topic"] != topic:
        raise TopicMismatch(f"signed for topic {body['topic']!r}, received on {topic!r}")
    return body


def detached_to_envelope(payload: bytes, detached: str) -> dict[str, str]:
    """The flattened envelope a `json` message stands for (RFC 7515 Appendix F).

    A `json` destination sends the body's canonical bytes as the MQTT payload and
    `protected..signature` in the MQTT 5 user property `jws`; putting BASE64URL(payload)
    back between the dots gives the very envelope the gateway signed, so its `link_hash`
    (and the `prev` of the next message) is the same in both formats.
    """
    if not isinstance(detached, str):
        raise Malformed("detached JWS: not a string")
    parts = detached.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise Malformed("detached JWS: expected 'protected..signature'")
    return {"protected": parts[0], "payload": _b64e(bytes(payload)), "signature": parts[2]}


def verify_detached(payload: bytes, detached: str, jwks: JwksLike, *,
                    topic: str | None = None) -> dict[str, Any]:
    """Authenticate a `json` message (payload + detached JWS) and return its body.

    Same checks and errors as `verify_envelope`; the payload must be the exact bytes that
    arrived (they are what was signed, so no re-serialization is involved).
    """
    return verify_envelope(detached_to_envelope(payload, detached), jwks, topic=topic)


@dataclass(frozen=True)
class Finding:
    """How one envelope was classified; `missing` is set for gaps (envelopes not seen)."""

    kind: Kind
    topic: str | None
    seq: int | None
    detail: str = ""
    missing: int = 0
    line: int | None = None


@dataclass
class Report:
    """Counts per `Kind`, envelopes still missing, and every finding that is not `ok`."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    missing: int = 0
    findings: list[Finding] = field(default_factory=list)
    skipped: int = 0  # `status`, `keys`, `query` messages: not gateway envelopes, not judged

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """Something was verified, all authentic, chains intact, nothing missing (QoS 1
        duplicates/reorders allowed, and gaps once late arrivals filled them). An empty
        capture is not OK: a wrong topic filter must not pass for a clean stream."""
        return self.total > 0 and self.missing == 0 and all(
            n == 0 for kind, n in self.counts.items() if kind not in _BENIGN)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "total": self.total, "missing": self.missing,
                "skipped": self.skipped,
                "counts": dict(self.counts),
                "findings": [f.__dict__.copy() for f in self.findings]}


def _created(body: Mapping[str, Any]) -> datetime | None:
    try:
        value = datetime.fromisoformat(body["created"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value.tzinfo is not None else None


@dataclass
class _Chain:
    last_seq: int
    last_hash: str
    newest: datetime | None  # latest `created` seen: tells a restart from a replayed seq 1
    seen: OrderedDict[int, tuple[str, str | None]] = field(default_factory=OrderedDict)
    missing: set[int] = field(default_factory=set)


class ChainChecker:
    """Follows `seq`/`prev` per topic and classifies each verified envelope.

    The first envelope seen on a topic is `ok` whatever its seq (a subscriber may join
    late). Then, with `last` the highest seq seen:

    * seq == last + 1 and prev == hash(last) -> ok; prev differs -> broken_chain
    * seq >  last + 1 -> gap (`missing` = seq - last - 1; a late arrival later fills it)
    * seq already seen with the same hash -> duplicate (normal under MQTT QoS 1)
    * seq already seen with another hash -> broken_chain (two authentic messages, one slot)
    * seq <  last, not seen -> reordered (its links to known neighbours are checked)
    * seq == 1, prev null, new hash, `created` later than anything seen on the topic -> reset:
      the gateway lost its chain state (an older seq 1 replayed is a broken_chain instead)
    * failed verification -> forgery / unknown_key / malformed / misrouted

    Only the last `window` envelopes per topic are remembered, bounding memory.
    """

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self._chains: dict[str, _Chain] = {}
        self._report = Report()

    def reject(self, kind: Kind, detail: str, *, topic: str | None = None,
               line: int | None = None) -> Finding:
        """Record an envelope that could not be checked at all (e.g. an unparsable line)."""
        return self._emit(Finding(kind, topic, None, detail, line=line))

    def _emit(self, finding: Finding) -> Finding:
        self._report.counts[finding.kind] += 1
        self._report.missing += finding.missing
        if finding.kind != "ok":
            self._report.findings.append(finding)
        return finding

    def _remember(self, chain: _Chain, seq: int, link: str, prev: str | None) -> None:
        chain.seen[seq] = (link, prev)
        chain.seen.move_to_end(seq)
        while len(chain.seen) > self.window:
            chain.seen.popitem(last=False)

    def check(self, body: Mapping[str, Any], link: str, *, line: int | None = None) -> Finding:
        """Classify a verified `body` whose envelope hashes to `link` (see `link_hash`)."""
        topic, seq, prev = body["topic"], body["seq"], body.get("prev")
        chain = self._chains.get(topic)

        def result(kind: Kind, detail: str = "", missing: int = 0) -> Finding:
            return self._emit(Finding(kind, topic, seq, detail, missing, line))

        created = _created(body)
        known = chain.seen.get(seq) if chain is not None else None
        if chain is None or (seq == 1 and prev is None and (known is None or known[0] != link)
                             and created is not None and chain.newest is not None
                             and created > chain.newest):
            old = chain
            chain = self._chains[topic] = _Chain(seq, link, created)
            self._remember(chain, seq, link, prev)
            if old is None:
                return result("ok")
            return result("reset", f"seq restarted at 1 after seq {old.last_seq}")
        if created is not None and (chain.newest is None or created > chain.newest):
            chain.newest = created
        if known is not None:
            if known[0] == link:
                return result("duplicate")
            return result("broken_chain", f"a different authentic envelope already has seq {seq}")
        if seq == chain.last_seq + 1:
            linked = prev == chain.last_hash
            chain.last_seq, chain.last_hash = seq, link
            self._remember(chain, seq, link, prev)
            return result("ok") if linked else result(
                "broken_chain", f"prev does not match the hash of seq {seq - 1}")
        if seq > chain.last_seq + 1:
            gap = range(chain.last_seq + 1, seq)
            if len(gap) <= self.window:
                chain.missing.update(gap)
            chain.last_seq, chain.last_hash = seq, link
            self._remember(chain, seq, link, prev)
            return result("gap", f"seq {gap.start}..{gap.stop - 1} not received", len(gap))
        # seq < last and never seen: a late arrival
        filled = seq in chain.missing
        chain.missing.discard(seq)
        self._remember(chain, seq, link, prev)
        before, after = chain.seen.get(seq - 1), chain.seen.get(seq + 1)
        if filled:
            self._report.missing -= 1
        if (before is not None and prev != before[0]) or (after is not None and after[1] != link):
            return result("broken_chain", f"late seq {seq} does not link to its neighbours")
        return result("reordered", f"arrived after seq {chain.last_seq}")

    def feed(self, envelope: Mapping[str, Any] | str | bytes, jwks: JwksLike, *,
             topic: str | None = None, line: int | None = None) -> Finding:
        """Verify then classify one envelope; verification failures become findings."""
        try:
            data = _envelope_dict(envelope)
            body = verify_envelope(data, jwks, topic=topic)
        except TopicMismatch as exc:
            return self._emit(Finding("misrouted", topic, None, str(exc), line=line))
        except Malformed as exc:
            return self._emit(Finding("malformed", topic, None, str(exc), line=line))
        except UnknownKey as exc:
            return self._emit(Finding("unknown_key", topic, None, str(exc), line=line))
        except BadSignature as exc:
            return self._emit(Finding("forgery", topic, None, str(exc), line=line))
        return self.check(body, link_hash(data), line=line)

    def report(self) -> Report:
        """Counts so far (a live view: keep feeding and call again)."""
        return self._report


def not_gateway_envelopes(topic: str) -> bool:
    """The gateway's `status` (birth/death) and `keys` (JWKS) topics carry plain JSON, and
    `query` carries the platforms' own requests (docs/protocol.md): none is a gateway
    envelope; nor are the opt-in unsigned per-signal values
    (`{prefix}/{site}/{area}/{line}/{machine}/values/{signal}`). A capture of `edge/#` holds
    them all and must skip them, not fail on them."""
    parts = topic.split("/")
    return parts[-1] in ("status", "keys", "query") or (len(parts) == 7 and parts[-2] == "values")


def _keys_record(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"topic", "keys"}


def capture_jwks(lines: Iterable[str]) -> dict[str, Any] | None:
    """The JWKS a capture carries: every key of its `{"topic": ".../keys", "keys": JWKS}`
    records (what `verify --broker --save` writes for each retained keys message it saw), so
    a saved capture is checked later without a separate JWKS file; None when it has none.

    Which keys are trusted is then the capture's say: use it for a capture you made from a
    broker you trust, and pass the JWKS explicitly otherwise."""
    found: list[Any] = []
    for text in lines:
        try:
            item = json.loads(text)
        except ValueError:
            continue  # verify_stream reports it
        if not _keys_record(item):
            continue
        entries = item["keys"].get("keys") if isinstance(item["keys"], dict) else None
        for jwk in entries if isinstance(entries, list) else []:
            if jwk not in found:
                found.append(jwk)
    return {"keys": found} if found else None


def verify_stream(lines: Iterable[str], jwks: JwksLike) -> Report:
    """Check a capture with one JSON document per line; blank lines are skipped.

    A line is either a bare envelope `{"protected","payload","signature"}`, a capture
    record `{"topic": "<MQTT topic it arrived on>", "envelope": {...}}` (the topic is then
    checked against the signed body too: `misrouted`) or a keys record
    `{"topic": ..., "keys": JWKS}` (skipped here; `capture_jwks` reads them).
    """
    keys = jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks)
    checker = ChainChecker()
    skipped = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = _json(text, f"line {number}")
        except Malformed as exc:
            checker.reject("malformed", str(exc), line=number)
            continue
        if _keys_record(item):
            skipped += 1
            continue
        if isinstance(item, dict) and "envelope" in item:
            topic = item.get("topic")
            if set(item) != {"topic", "envelope"} or not isinstance(topic, str):
                checker.reject("malformed", 'expected {"topic": str, "envelope": {...}}',
                               line=number)
                continue
            if not_gateway_envelopes(topic):
                skipped += 1
                continue
            checker.feed(item["envelope"], keys, topic=topic, line=number)
        else:
            checker.feed(item, keys, line=number)
    report = checker.report()
    report.skipped = skipped
    return report
