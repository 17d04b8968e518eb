"""Signing primitives, chain state and the key store.

The RFC 8037 known answers pin our JWS code path to the standard (Ed25519 is deterministic,
so the signature must match to the byte); the key store tests pin the on-disk promises
(0600, never overwritten, old keys still published after rotation).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from edge.signing.jws import (
    ChainState,
    Signer,
    b64url_decode,
    b64url_encode,
    canonical_json,
    jwk_public,
    jwk_thumbprint,
    jwks,
    sign_jws,
    signing_input_hash,
)
from edge.signing.keystore import KEY_FILE, PREVIOUS_FILE, KeyStore
from models.errors import ConfigurationError

# RFC 8037 appendix A.1 (private key), A.3 (thumbprint), A.4 (JWS).
RFC_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def rfc_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC_D))


class RecordingLogger:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("warning", event, kw))


# --- RFC 8037 known answers -------------------------------------------------------------


def test_rfc8037_a4_compact_jws() -> None:
    protected = b64url_encode(b'{"alg":"EdDSA"}')
    payload = b64url_encode(b"Example of Ed25519 signing")
    assert f"{protected}.{payload}.{sign_jws(protected, payload, rfc_key())}" == RFC_JWS


def test_rfc8037_a3_thumbprint_and_public_jwk() -> None:
    assert jwk_thumbprint(RFC_X) == RFC_THUMBPRINT
    jwk = jwk_public(rfc_key())
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC_X,
        "kid": RFC_THUMBPRINT,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert jwk_public(rfc_key().public_key()) == jwk
    assert Signer(rfc_key()).kid == RFC_THUMBPRINT


# --- base64url and envelope shape -------------------------------------------------------


@pytest.mark.parametrize("bad", ["YQ==", "a+b/", "abcde", "YR", "é"])
def test_b64url_decode_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)


def test_b64url_roundtrip() -> None:
    for n in range(40):
        data = os.urandom(n)
        assert b64url_decode(b64url_encode(data)) == data


def test_sign_body_envelope_shape() -> None:
    signer = Signer(rfc_key())
    body = {"v": 1, "topic": "edge/p/m1/telemetry", "seq": 1, "prev": None, "z": 1.0, "a": "ü"}
    env = signer.sign_body(body)
    assert set(env) == {"protected", "payload", "signature"}
    assert b64url_decode(env["protected"]) == (
        b'{"alg":"EdDSA","kid":"' + RFC_THUMBPRINT.encode() + b'","typ":"edge-envelope+json"}'
    )
    assert b64url_decode(env["payload"]) == canonical_json(body)
    assert b64url_decode(env["payload"]).startswith(b'{"a":"\xc3\xbc","prev":null,"seq":1')
    rfc_key().public_key().verify(
        b64url_decode(env["signature"]), f"{env['protected']}.{env['payload']}".encode()
    )
    assert signer.sign_body(body) == env  # deterministic


def test_signing_input_hash_is_sha256_of_signing_input() -> None:
    env = Signer(rfc_key()).sign_body({"v": 1})
    digest = hashlib.sha256(f"{env['protected']}.{env['payload']}".encode("ascii")).digest()
    assert signing_input_hash(env) == b64url_encode(digest)
    assert len(b64url_decode(signing_input_hash(env))) == 32


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53, {1: "x"}, object()])
def test_sign_body_refuses_what_jcs_cannot_represent(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Signer(rfc_key()).sign_body({"x": value})


def test_signer_repr_hides_key_and_type_checked() -> None:
    assert RFC_D not in repr(Signer(rfc_key()))
    with pytest.raises(TypeError):
        Signer(rfc_key().public_key())  # type: ignore[arg-type]


def test_jwks_dedupes_and_keeps_order() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    out = jwks([a, b.public_key(), jwk_public(a)])
    assert [k["kid"] for k in out["keys"]] == [Signer(a).kid, Signer(b).kid]
    assert all("d" not in k for k in out["keys"])


# --- chain state ------------------------------------------------------------------------


def test_chain_state_next_commit_and_serialization() -> None:
    signer, chain = Signer(rfc_key()), ChainState()
    assert chain.next("t/a") == (1, None)
    assert chain.next("t/a") == (1, None)  # next() does not advance
    env1 = signer.sign_body({"seq": 1, "prev": None})
    chain.commit("t/a", 1, signing_input_hash(env1))
    assert chain.next("t/a") == (2, signing_input_hash(env1))
    assert chain.next("t/b") == (1, None)  # topics are independent
    with pytest.raises(ValueError, match="expected 2"):
        chain.commit("t/a", 1, signing_input_hash(env1))
    with pytest.raises(ValueError):
        chain.commit("t/a", 2, "not base64url!")
    restored = ChainState.from_dict(json.loads(json.dumps(chain.to_dict())))
    assert restored.next("t/a") == chain.next("t/a")
    assert list(restored.items()) == [("t/a", 1, signing_input_hash(env1))]
    assert restored.last("t/a") == (1, signing_input_hash(env1))
    assert restored.last("t/b") is None


@pytest.mark.parametrize(
    "entry",
    [{"seq": 0, "hash": "AA"}, {"seq": True, "hash": "AA"}, {"seq": 3}, {"seq": 3, "hash": "=="}],
)
def test_chain_state_from_dict_rejects_malformed(entry: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChainState.from_dict({"t": entry})


# --- key store --------------------------------------------------------------------------


def test_load_or_create_creates_0600_and_logs_kid_only(tmp_path: Path) -> None:
    log = RecordingLogger()
    store = KeyStore(tmp_path / "state" / "keys")
    signer = store.load_or_create(log)
    key_file = tmp_path / "state" / "keys" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert log.events == [
        ("info", "signing_key_created", {"kid": signer.kid, "path": str(key_file)})
    ]
    assert not [p for p in key_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_is_idempotent(tmp_path: Path) -> None:
    log = RecordingLogger()
    first = KeyStore(tmp_path).load_or_create(log)
    again = KeyStore(tmp_path).load_or_create(log)
    assert first.kid == again.kid == KeyStore(tmp_path).load().kid
    assert len(log.events) == 1
    assert KeyStore(tmp_path).public_jwks() == {"keys": [first.public_jwk]}


def test_open_permissions_warn(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.load_or_create(RecordingLogger())
    store.key_path.chmod(0o644)
    log = RecordingLogger()
    store.load_or_create(log)
    assert [e[1] for e in log.events] == ["signing_key_permissions_too_open"]


def test_generate_never_overwrites(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    signer = store.generate()
    before = store.key_path.read_bytes()
    with pytest.raises(ConfigurationError, match=str(store.key_path)):
        store.generate()
    assert store.key_path.read_bytes() == before
    other = store.generate(tmp_path / "spare.pem")
    assert other.kid != signer.kid
    assert stat.S_IMODE((tmp_path / "spare.pem").stat().st_mode) == 0o600


def test_rotate_keeps_previous_public_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, keep_previous=2)
    k1 = store.load_or_create(RecordingLogger())
    log = RecordingLogger()
    k2 = store.rotate(log)
    assert log.events == [("info", "signing_key_rotated", {"kid": k2.kid, "previous_kid": k1.kid})]
    assert store.load().kid == k2.kid
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [k2.kid, k1.kid]
    k3, k4 = store.rotate(), store.rotate()
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [k4.kid, k3.kid, k2.kid]
    previous = json.loads((tmp_path / PREVIOUS_FILE).read_text())
    assert all(set(k) == {"kty", "crv", "x", "kid", "alg", "use"} for k in previous["keys"])
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600


def test_crash_between_rotation_steps_is_harmless(tmp_path: Path) -> None:
    # previous-keys.json already lists the current key (written first), key not yet replaced
    store = KeyStore(tmp_path)
    k1 = store.load_or_create(RecordingLogger())
    (tmp_path / PREVIOUS_FILE).write_text(json.dumps({"keys": [k1.public_jwk]}))
    assert store.public_jwks() == {"keys": [k1.public_jwk]}
    k2 = store.rotate()
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [k2.kid, k1.kid]


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_corrupt_key_file_names_the_path(tmp_path: Path, content: bytes) -> None:
    (tmp_path / KEY_FILE).write_bytes(content)
    with pytest.raises(ConfigurationError, match=str(tmp_path / KEY_FILE)):
        KeyStore(tmp_path).load_or_create(RecordingLogger())


def test_wrong_key_type_is_a_configuration_error(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / KEY_FILE).write_bytes(pem)
    with pytest.raises(ConfigurationError, match="not an Ed25519"):
        KeyStore(tmp_path).load()


def test_missing_key_and_bad_previous_file(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(ConfigurationError, match=KEY_FILE):
        store.load()
    store.load_or_create(RecordingLogger())
    (tmp_path / PREVIOUS_FILE).write_text('{"keys": [{"kty": "OKP", "kid": "x"}]}')
    with pytest.raises(ConfigurationError, match=PREVIOUS_FILE):
        store.public_jwks()
    (tmp_path / PREVIOUS_FILE).write_text("{not json")
    with pytest.raises(ConfigurationError, match=PREVIOUS_FILE):
        store.rotate()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_a_configuration_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigurationError, match=str(tmp_path)):
            KeyStore(tmp_path).load_or_create(RecordingLogger())
    finally:
        tmp_path.chmod(0o700)


def test_state_dir_under_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(ConfigurationError, match=str(tmp_path / "state")):
        KeyStore(tmp_path / "state" / "keys").load_or_create(RecordingLogger())
