"""The platform-side verifier, cross-checked against independent JOSE implementations.

Why three verifiers: our signer and our verifier could share a misreading of the RFCs; joserfc
(Python) and jose (npm, what many platforms run) would not share it.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey
from joserfc.jws import FlattenedJSONSerialization

from edge.platform_kit.verifier import (
    BadSignature,
    ChainChecker,
    KeySet,
    Malformed,
    TopicMismatch,
    UnknownKey,
    VerificationError,
    link_hash,
    verify_envelope,
    verify_stream,
)
from edge.signing.jws import (
    ChainState,
    Signer,
    b64url_decode,
    b64url_encode,
    canonical_json,
    jwks,
    sign_jws,
    signing_input_hash,
)
from edge.signing.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[3]
NODE_DIR = ROOT / "tests" / "node"
TOPIC = "edge/plant-a/hall-1/line-2/m1/telemetry"


def body(seq: int, prev: str | None, topic: str = TOPIC, **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "gateway": "gw-01",
        "topic": topic,
        "asset": "m1",
        "stream": "telemetry",
        "seq": seq,
        "prev": prev,
        "created": "2026-11-22T10:00:00.123Z",
        "historical": False,
        "records": [
            {
                "signal": "spindle_speed",
                "value": 1200.0,
                "unit": "1/min",
                "ts": "2026-11-22T10:00:00.100Z",
                "quality": "good",
            }
        ],
        **extra,
    }


def produce(signer: Signer, chain: ChainState, topic: str = TOPIC, **extra: Any) -> dict[str, str]:
    """What the outbox will do: next -> sign -> (store) -> commit."""
    seq, prev = chain.next(topic)
    env = signer.sign_body(body(seq, prev, topic, **extra))
    chain.commit(topic, seq, signing_input_hash(env))
    return env


def craft(key: Ed25519PrivateKey, header: dict[str, Any], payload: bytes) -> dict[str, str]:
    """A validly signed envelope with arbitrary header and payload bytes."""
    protected = b64url_encode(json.dumps(header).encode())
    encoded = b64url_encode(payload)
    return {
        "protected": protected,
        "payload": encoded,
        "signature": sign_jws(protected, encoded, key),
    }


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(key: Ed25519PrivateKey) -> Signer:
    return Signer(key)


@pytest.fixture
def keyset(signer: Signer) -> dict[str, Any]:
    return jwks([signer.public_key])


# --- independent implementations ---------------------------------------------------------


def test_joserfc_verifies_our_envelope(signer: Signer, keyset: dict[str, Any]) -> None:
    env = signer.sign_body(body(1, None))
    with warnings.catch_warnings():  # joserfc flags "EdDSA" as superseded by RFC 9864
        warnings.simplefilter("ignore", SecurityWarning)
        result = jws.deserialize_json(
            cast(FlattenedJSONSerialization, env),
            OKPKey.import_key(keyset["keys"][0]),
            algorithms=["EdDSA"],
        )
    assert result.headers() == {"alg": "EdDSA", "kid": signer.kid, "typ": "edge-envelope+json"}
    assert json.loads(result.payload) == body(1, None)
    assert OKPKey.import_key(keyset["keys"][0]).thumbprint() == signer.kid


@pytest.fixture(scope="module")
def node_jose() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: cannot cross-check with npm jose")
    if not (NODE_DIR / "node_modules" / "jose").is_dir():
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm install of jose failed (offline?): {done.stderr.strip()[-300:]}")
    return NODE_DIR / "verify.mjs"


def run_node(script: Path, env: Any, keys: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps({"jwks": keys, "envelope": env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == result["ok"], done.stderr
    return result


def test_node_jose_verifies_our_envelope(node_jose: Path, key: Ed25519PrivateKey) -> None:
    store_keys = jwks([key.public_key(), Ed25519PrivateKey.generate()])
    signer = Signer(key)
    env = signer.sign_body(body(7, b64url_encode(b"\x00" * 32), note="unicode ✓ é"))
    result = run_node(node_jose, env, store_keys)
    assert result == {
        "ok": True,
        "kid": signer.kid,
        "body": body(7, b64url_encode(b"\x00" * 32), note="unicode ✓ é"),
    }
    tampered = dict(env, payload=b64url_encode(canonical_json(body(8, None))))
    assert run_node(node_jose, tampered, store_keys)["ok"] is False


# --- our verifier: happy path and tampering ---------------------------------------------


def test_verify_returns_body(signer: Signer, keyset: dict[str, Any]) -> None:
    env = signer.sign_body(body(1, None))
    assert verify_envelope(env, keyset) == body(1, None)
    assert verify_envelope(json.dumps(env), json.dumps(keyset), topic=TOPIC) == body(1, None)
    assert verify_envelope(json.dumps(env).encode(), KeySet.from_jwks(keyset)) == body(1, None)


def test_tampered_payload_signature_kid(signer: Signer, keyset: dict[str, Any]) -> None:
    env = signer.sign_body(body(1, None))
    other = Signer(Ed25519PrivateKey.generate())
    both = jwks([signer.public_key, other.public_key])
    forged_payload = dict(env, payload=b64url_encode(canonical_json(body(1, None, asset="m2"))))
    sig = bytearray(b64url_decode(env["signature"]))
    sig[0] ^= 1
    forged_sig = dict(env, signature=b64url_encode(bytes(sig)))
    # kid swapped to another published key: header changes, signature no longer matches
    swapped = dict(env, protected=other.sign_body({})["protected"])
    for bad in (forged_payload, forged_sig, swapped):
        with pytest.raises(BadSignature):
            verify_envelope(bad, both)
    with pytest.raises(UnknownKey, match="not in the JWKS"):
        verify_envelope(other.sign_body(body(1, None)), keyset)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"alg": "none", "typ": "edge-envelope+json"}, Malformed),
        ({"alg": "HS256", "typ": "edge-envelope+json"}, Malformed),
        ({"alg": "EdDSA"}, Malformed),
        ({"alg": "EdDSA", "typ": "JWT"}, Malformed),
        ({"alg": "EdDSA", "typ": "edge-envelope+json", "crit": ["b64"], "b64": False}, Malformed),
    ],
)
def test_bad_headers(
    key: Ed25519PrivateKey,
    signer: Signer,
    keyset: dict[str, Any],
    header: dict[str, Any],
    error: type[VerificationError],
) -> None:
    env = craft(key, {**header, "kid": signer.kid}, canonical_json(body(1, None)))
    with pytest.raises(error):
        verify_envelope(env, keyset)


@pytest.mark.parametrize(
    ("alg", "typ"),
    [
        ("Ed25519", "edge-envelope+json"),
        ("EdDSA", "application/edge-envelope+json"),
        ("EdDSA", "Edge-Envelope+JSON"),
    ],
)
def test_accepted_header_variants(
    key: Ed25519PrivateKey, signer: Signer, keyset: dict[str, Any], alg: str, typ: str
) -> None:
    env = craft(key, {"alg": alg, "kid": signer.kid, "typ": typ}, canonical_json(body(1, None)))
    assert verify_envelope(env, keyset)["seq"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(body(1, None)).encode(),  # valid JSON, signed, but not canonical
        b'{"v":1,"v":1}',  # duplicate member
        b'{"seq":NaN}',
        b"[1,2]",
        canonical_json(body(1, None, v=2)),
        canonical_json(body(1, "AAAA")),
        canonical_json(body(2, None)),
        canonical_json(body(2, "AAAA")),  # prev not a SHA-256
        canonical_json(body(0, None)),
        canonical_json({k: v for k, v in body(1, None).items() if k != "topic"}),
        '{"v":1}'.encode("utf-16"),
    ],
)
def test_malformed_bodies_are_refused_even_when_signed(
    key: Ed25519PrivateKey, signer: Signer, keyset: dict[str, Any], payload: bytes
) -> None:
    header = {"alg": "EdDSA", "kid": signer.kid, "typ": "edge-envelope+json"}
    with pytest.raises(Malformed):
        verify_envelope(craft(key, header, payload), keyset)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: {**e, "header": {"kid": "x"}},
        lambda e: {k: v for k, v in e.items() if k != "signature"},
        lambda e: {**e, "payload": e["payload"] + "="},
        lambda e: {**e, "signature": e["signature"].replace("_", "/").replace("-", "+") + "+/"},
        lambda e: [e],
    ],
)
def test_malformed_envelopes(signer: Signer, keyset: dict[str, Any], mutate: Any) -> None:
    with pytest.raises(Malformed):
        verify_envelope(mutate(signer.sign_body(body(1, None))), keyset)
    with pytest.raises(Malformed):
        verify_envelope("{not json", keyset)


def test_topic_mismatch(signer: Signer, keyset: dict[str, Any]) -> None:
    with pytest.raises(TopicMismatch):
        verify_envelope(signer.sign_body(body(1, None)), keyset, topic=TOPIC + "x")


def test_jwks_key_must_match_its_kid(signer: Signer) -> None:
    jwk = dict(signer.public_jwk)
    liar = Signer(Ed25519PrivateKey.generate())
    env = liar.sign_body(body(1, None))
    # a JWKS entry claiming the liar's kid but holding another key is unusable, not trusted
    with pytest.raises(UnknownKey, match="thumbprint"):
        verify_envelope(env, {"keys": [{**jwk, "kid": liar.kid}]})
    with pytest.raises(UnknownKey, match="private"):
        verify_envelope(signer.sign_body(body(1, None)), {"keys": [{**jwk, "d": "AAAA"}]})
    with pytest.raises(UnknownKey, match="signing key"):
        verify_envelope(signer.sign_body(body(1, None)), {"keys": [{**jwk, "use": "enc"}]})
    rsa_jwk = {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}
    assert verify_envelope(signer.sign_body(body(1, None)), {"keys": [rsa_jwk, jwk]})
    with pytest.raises(Malformed):
        verify_envelope(signer.sign_body(body(1, None)), {"nokeys": []})


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=5), inner, max_size=4)
            ),
            max_leaves=12,
        ),
        max_size=6,
    )
)
def test_any_json_body_roundtrips(extra: dict[str, Any]) -> None:
    signer = Signer(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    sent = {**extra, **body(1, None)}
    got = verify_envelope(signer.sign_body(sent), jwks([signer.public_key]))
    assert canonical_json(got) == canonical_json(sent)


# --- chain checking ----------------------------------------------------------------------


def feed_all(envs: list[Any], keys: dict[str, Any]) -> ChainChecker:
    checker = ChainChecker()
    for env in envs:
        checker.feed(env, keys)
    return checker


def kinds(checker: ChainChecker) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in checker.report().findings]


def test_clean_chain(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    envs = [produce(signer, chain) for _ in range(5)] + [produce(signer, chain, TOPIC + "2")]
    report = feed_all(envs, keyset).report()
    assert report.ok and report.counts["ok"] == 6 and report.findings == []
    assert all(b64url_decode(env["payload"]) for env in envs)


def test_gap_duplicate_reordered(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    e = [produce(signer, chain) for _ in range(8)]  # e[i] has seq i + 1
    checker = feed_all([e[0], e[1], e[1], e[4], e[2], e[5], e[0], e[7]], keyset)
    report = checker.report()
    assert kinds(checker) == [
        ("duplicate", 2),
        ("gap", 5),
        ("reordered", 3),
        ("duplicate", 1),
        ("gap", 8),
    ]
    gap = report.findings[1]
    assert gap.missing == 2 and "3..4" in gap.detail
    # 3 and 4 were missing, 3 arrived late, then 7 was skipped: 4 and 7 are still missing
    assert report.missing == 2
    assert report.counts["ok"] == 3 and not report.ok
    assert report.to_dict()["counts"]["gap"] == 2


def test_late_arrivals_fill_the_gap(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    e = [produce(signer, chain) for _ in range(4)]
    report = feed_all([e[0], e[3], e[2], e[1]], keyset).report()
    assert report.missing == 0 and report.ok
    assert report.counts == {**report.counts, "ok": 1, "gap": 1, "reordered": 2}


def test_broken_chain_and_substitution(
    key: Ed25519PrivateKey, signer: Signer, keyset: dict[str, Any]
) -> None:
    chain = ChainState()
    e1, e2 = produce(signer, chain), produce(signer, chain)
    # authentic seq 2 pointing at the wrong predecessor (e.g. a lost and regenerated state)
    wrong_link = signer.sign_body(body(2, signing_input_hash(e2)))
    # a second authentic envelope with seq 2 on the topic
    e3 = signer.sign_body(body(3, signing_input_hash(e2)))
    checker = feed_all([e1, wrong_link, e2, e3], keyset)
    assert kinds(checker) == [("broken_chain", 2), ("broken_chain", 2), ("broken_chain", 3)]
    # late arrival that does not link to its known neighbour
    chain2, checker2 = ChainState(), ChainChecker()
    f = [produce(signer, chain2) for _ in range(3)]
    impostor = signer.sign_body(body(2, signing_input_hash(f[2])))
    for env in (f[0], f[2], impostor):
        checker2.feed(env, keyset)
    assert kinds(checker2) == [("gap", 3), ("broken_chain", 2)]


def test_forgery_unknown_key_malformed_misrouted(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    e1, e2 = produce(signer, chain), produce(signer, chain)
    forged = dict(
        e2, payload=b64url_encode(canonical_json(body(2, signing_input_hash(e1), asset="evil")))
    )
    stranger = Signer(Ed25519PrivateKey.generate()).sign_body(body(2, signing_input_hash(e1)))
    checker = ChainChecker()
    checker.feed(e1, keyset)
    assert checker.feed(forged, keyset).kind == "forgery"
    assert checker.feed(stranger, keyset).kind == "unknown_key"
    assert checker.feed("{", keyset).kind == "malformed"
    assert checker.feed(e2, keyset, topic="edge/other").kind == "misrouted"
    assert checker.feed(e2, keyset, topic=TOPIC).kind == "ok"
    assert checker.report().counts["ok"] == 2 and not checker.report().ok


def test_reset_when_gateway_lost_its_chain_state(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    old = [produce(signer, chain) for _ in range(3)]
    fresh = ChainState()  # state dir wiped: seq starts over at 1
    new = [produce(signer, fresh, created="2026-11-23T08:00:00.000Z") for _ in range(2)]
    checker = feed_all([*old, *new, old[0]], keyset)
    assert kinds(checker) == [("reset", 1), ("broken_chain", 1)]


def test_rotation_keeps_chain_and_old_envelopes_verify(tmp_path: Path) -> None:
    class Quiet:
        def info(self, event: str, *args: Any, **kw: Any) -> None: ...
        def warning(self, event: str, *args: Any, **kw: Any) -> None: ...

    store, chain = KeyStore(tmp_path), ChainState()
    old_signer = store.load_or_create(Quiet())
    before = [produce(old_signer, chain) for _ in range(3)]
    new_signer = store.rotate()
    after = [produce(new_signer, chain) for _ in range(3)]
    published = store.public_jwks()
    assert json.loads(b64url_decode(after[0]["payload"]))["seq"] == 4
    assert json.loads(b64url_decode(after[0]["payload"]))["prev"] == signing_input_hash(before[-1])
    report = feed_all([*before, *after], published).report()
    assert report.ok and report.counts["ok"] == 6
    assert verify_envelope(before[0], published)["seq"] == 1
    assert KeyStore(tmp_path).load().kid == new_signer.kid != old_signer.kid


# --- stream files ------------------------------------------------------------------------


def test_verify_stream_both_line_formats(signer: Signer, keyset: dict[str, Any]) -> None:
    chain = ChainState()
    e = [produce(signer, chain) for _ in range(4)]
    lines = [
        json.dumps(e[0]),
        "",
        json.dumps({"topic": TOPIC, "envelope": e[1]}),
        json.dumps({"topic": "edge/elsewhere", "envelope": e[2]}),
        json.dumps({"envelope": e[2]}),
        "garbage",
        json.dumps(e[3]),
    ]
    report = verify_stream(lines, keyset)
    assert [(f.kind, f.line) for f in report.findings] == [
        ("misrouted", 4),
        ("malformed", 5),
        ("malformed", 6),
        ("gap", 7),
    ]
    assert report.counts["ok"] == 2 and report.missing == 1 and report.total == 6


def test_link_hash_matches_signer(signer: Signer) -> None:
    env = signer.sign_body(body(1, None))
    assert link_hash(env) == signing_input_hash(env)


# --- the worked example in docs/protocol.md must stay true ------------------------------


def doc_block(name: str) -> Any:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{name} -->\s*```json\n(.*?)```", text, re.S)
    assert match, f"docs/protocol.md has no example:{name} block"
    return json.loads(match.group(1))


def test_protocol_doc_example_verifies() -> None:
    keys, envelope, expected = doc_block("jwks"), doc_block("envelope"), doc_block("body")
    assert verify_envelope(envelope, keys, topic=expected["topic"]) == expected
    assert b64url_decode(envelope["payload"]) == canonical_json(expected)


def test_protocol_doc_example_chain() -> None:
    keys, first, second = doc_block("jwks"), doc_block("envelope-1"), doc_block("envelope")
    report = verify_stream([json.dumps(first), json.dumps(second)], keys)
    assert report.ok and report.counts["ok"] == 2
    assert verify_envelope(second, keys)["prev"] == link_hash(first)


def test_verifier_is_standalone() -> None:
    # Platforms copy edge/platform_kit/verifier.py alone: only stdlib, cryptography, rfc8785.
    tree = ast.parse((ROOT / "edge" / "platform_kit" / "verifier.py").read_text(encoding="utf-8"))
    roots = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    roots |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert roots - sys.stdlib_module_names == {"cryptography", "rfc8785"}
