"""`edge-gateway keys platform`: a platform's Ed25519 key pair and the YAML that admits it.

Why: queries are refused unless the plant YAML lists the platform's public key, and until
now no command made one, so the README's query example could not be followed. The private
key stays with the platform (0600); the public key file is what the gateway's plant YAML
points at, and the printed `platforms:` block is ready to paste.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from edge.signing.jws import jwk_public
from models.plant import QUERY_METHODS


@dataclass(frozen=True)
class PlatformKeys:
    private_key: Path
    public_key: Path
    kid: str
    yaml_block: str


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file; never overwrite (FileExistsError), so a key in use is never lost."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_platform_keys(directory: Path, platform_id: str) -> PlatformKeys:
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / f"{platform_id}.key.pem"
    public = directory / f"{platform_id}.pub.pem"
    for path in (private, public):
        if path.exists():
            raise FileExistsError(str(path))
    _create(private, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600)
    _create(
        public,
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        0o644,
    )
    kid = jwk_public(key)["kid"]
    block = (
        "platforms:\n"
        f"  - id: {platform_id}\n"
        f"    public_key_file: {public.resolve()}   # kid {kid}\n"
        f"    methods: [{', '.join(QUERY_METHODS)}]\n"
        '    machines: ["*"]\n'
    )
    return PlatformKeys(private.resolve(), public.resolve(), kid, block)
