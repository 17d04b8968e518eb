"""`edge-gateway keys platform`: a platform's Ed25519 key pair and the YAML that admits it.

Why: queries are refused unless the plant YAML lists the platform's public key, and until
now no command made one, so the README's query example could not be followed. The private
key stays with the platform (0600); the public key file is what the gateway's plant YAML
points at, and the printed `platforms:` block is ready to paste.

Like the rest of the kit it needs only `cryptography` (no pydantic, no gateway install): a
platform makes its pair with `python -m edge.platform_kit.keys -o DIR [--id ID]`. So the
method names and the id rule are copied here from models/plant.py, and a test keeps them
equal to the model's (tests/edge/platform_kit/test_keys_and_verify.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
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

QUERY_METHODS: tuple[str, ...] = (
    "describe", "aas", "state", "oee", "capacity", "health", "parts", "energy", "reserve",
    "release", "bookings",
)
"""models.plant.QUERY_METHODS, without importing pydantic: the block lists every method."""
PLATFORM_ID = re.compile(r"[a-z0-9_-]{1,64}")
"""models.plant's `Ident` (the YAML's `platforms[].id`)."""


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


def platform_id_arg(text: str) -> str:
    """`--id`: checked as the YAML checks `platforms[].id`, so the printed `platforms:` block
    validates and the files land in `-o DIR` (`--id "Plant A"` made a block `validate`
    refused; `--id a/b` said the directory could not be written)."""
    if PLATFORM_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1-64 of a-z, 0-9, '_' and '-' (the YAML's platforms[].id)"
        )
    return text


def run(directory: Path | None, platform_id: str) -> int:
    """Make the pair and print the block (stdout) and where the files went (stderr); 0, or 2
    for a user error (no -o, a key already there, a directory that cannot be written)."""
    if directory is None:
        print("keys platform: give -o DIR for the key pair", file=sys.stderr)
        return 2
    try:
        made = make_platform_keys(directory, platform_id)
    except FileExistsError as exc:
        print(f"keys platform: {exc} exists; pick another directory or --id", file=sys.stderr)
        return 2
    except OSError as exc:  # no such parent, no permission, a file in the way
        print(f"keys platform: cannot write in {directory}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"created {made.private_key} (keep it on the platform) and {made.public_key}",
          file=sys.stderr)
    print("# paste into the plant YAML, then reload the gateway (SIGHUP):")
    print(made.yaml_block, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge.platform_kit.keys`: `edge-gateway keys platform` for a platform that
    has only the kit (and `cryptography`), not the gateway's dependencies."""
    parser = argparse.ArgumentParser(
        prog="python -m edge.platform_kit.keys",
        description="a platform's Ed25519 key pair and the plant YAML block that admits it",
    )
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="directory for ID.key.pem (0600) and ID.pub.pem")
    parser.add_argument("--id", type=platform_id_arg, default="my-platform",
                        help="the platform's id in the plant YAML (default my-platform)")
    args = parser.parse_args(argv)
    return run(args.output, args.id)


if __name__ == "__main__":
    raise SystemExit(main())
