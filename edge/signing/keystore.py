"""The gateway's signing keys on disk, in the state directory.

Layout (one directory, created 0700)::

    signing-key.pem        current Ed25519 private key, PKCS#8 PEM, mode 0600
    previous-keys.json     {"keys": [public JWK, ...]} of retired keys, newest first

Why: the private key is generated on the device on first start and never leaves it, so a
plant needs no PKI to get going; platforms pin keys through the retained JWKS on the `keys`
topic. After `rotate()` the old private key is deleted (nothing can sign with it any more)
but its public JWK stays published for `keep_previous` rotations, so envelopes still in an
outbox or in a platform's backlog keep verifying. Files are written to a temporary name
created with O_EXCL/0600 and then linked or renamed into place, so a crash or a concurrent
start never leaves a half-written or world-readable key.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edge.signing.jws import Signer, jwk_public, jwk_thumbprint, jwks
from models.errors import ConfigurationError
from models.logger import Logger

__all__ = ["KEY_FILE", "PREVIOUS_FILE", "KeyStore", "Logger"]

KEY_FILE = "signing-key.pem"
PREVIOUS_FILE = "previous-keys.json"

T = TypeVar("T")


def _config_error(path: Path, exc: BaseException) -> ConfigurationError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigurationError(f"signing key store: {path}: {reason or type(exc).__name__}")


def _guard(path: Path, action: Callable[[], T]) -> T:
    """Run `action`, turning library errors into ConfigurationError naming `path`."""
    try:
        return action()
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _config_error(path, exc) from exc


def _write_new(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` to `path` via a 0600 O_EXCL temporary file, then publish it atomically.

    `replace=False` publishes with link(2), which fails if `path` exists (a key is never
    overwritten by a racing second start); `replace=True` uses rename(2).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # leftover of a crash with our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


class KeyStore:
    """Signing keys in `directory`: load or create the current key, rotate, publish JWKS."""

    def __init__(self, directory: str | os.PathLike[str], *, keep_previous: int = 3) -> None:
        self.directory = Path(directory)
        self.key_path = self.directory / KEY_FILE
        self.previous_path = self.directory / PREVIOUS_FILE
        self.keep_previous = keep_previous

    def _ensure_dir(self) -> None:
        _guard(self.directory, lambda: self.directory.mkdir(mode=0o700, parents=True,
                                                            exist_ok=True))

    def _load(self, path: Path) -> Signer:
        data = _guard(path, path.read_bytes)
        key = _guard(path, lambda: load_pem_private_key(data, password=None))
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(
                f"signing key store: {path}: not an Ed25519 private key "
                f"({type(key).__name__})")
        return Signer(key)

    def load(self, logger: Logger | None = None) -> Signer:
        """The current key; ConfigurationError if it is missing or unreadable."""
        mode = _guard(self.key_path, lambda: self.key_path.stat().st_mode)
        if logger is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("signing_key_permissions_too_open", path=str(self.key_path),
                           mode=oct(stat.S_IMODE(mode)))
        return self._load(self.key_path)

    def load_or_create(self, logger: Logger) -> Signer:
        """The current key, generated on first start (logs its kid, never the key)."""
        if self.key_path.exists():
            return self.load(logger)
        self._ensure_dir()
        try:
            signer = self.generate()
        except ConfigurationError:
            if self.key_path.exists():  # another process won the race: use its key
                return self.load(logger)
            raise
        logger.info("signing_key_created", kid=signer.kid, path=str(self.key_path))
        return signer

    def generate(self, path: str | os.PathLike[str] | None = None) -> Signer:
        """Write a fresh key to `path` (default: the current key file); never overwrites."""
        target = Path(path) if path is not None else self.key_path
        if path is None:
            self._ensure_dir()
        key = Ed25519PrivateKey.generate()
        _guard(target, lambda: _write_new(target, _pem(key), replace=False))
        return Signer(key)

    def previous_jwks(self) -> list[dict[str, str]]:
        """Public JWKs of retired keys, newest first (empty before the first rotation)."""
        if not self.previous_path.exists():
            return []
        raw = _guard(self.previous_path, self.previous_path.read_text)
        data = _guard(self.previous_path, lambda: json.loads(raw))
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(self._valid_jwk(k) for k in keys):
            raise ConfigurationError(
                f"signing key store: {self.previous_path}: expected {{\"keys\": [OKP JWK...]}}")
        return keys

    @staticmethod
    def _valid_jwk(jwk: Any) -> bool:
        return (isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519"
                and isinstance(jwk.get("x"), str) and jwk.get("kid") == jwk_thumbprint(jwk["x"]))

    def rotate(self, logger: Logger | None = None) -> Signer:
        """Make a new key current; the old public key stays in the JWKS.

        Order matters for crash safety: the old public key is recorded first, then the new
        private key replaces the old one. A crash in between leaves the old key current and
        also listed as previous, which `public_jwks` deduplicates.
        """
        old = self.load(logger)
        retired = [jwk_public(old.public_key)]
        retired += [k for k in self.previous_jwks() if k["kid"] != old.kid]
        retired = retired[: self.keep_previous]
        body = (json.dumps({"keys": retired}, indent=2) + "\n").encode()
        _guard(self.previous_path, lambda: _write_new(self.previous_path, body, replace=True))
        key = Ed25519PrivateKey.generate()
        _guard(self.key_path, lambda: _write_new(self.key_path, _pem(key), replace=True))
        signer = Signer(key)
        if logger is not None:
            logger.info("signing_key_rotated", kid=signer.kid, previous_kid=old.kid)
        return signer

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """JWKS for the retained `keys` topic: current key first, then retired ones."""
        return jwks([self.load().public_jwk, *self.previous_jwks()])
