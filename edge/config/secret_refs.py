"""Resolve `SecretRef`s (environment variable or file) only at the moment a connection needs them.

Errors name where the secret should have been (the variable or the path) so an operator can
fix it, and never what it holds: these messages end up in logs and systemd's journal.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.errors import ConfigurationError
from models.plant import SecretRef


def resolve_secret(ref: SecretRef) -> str:
    """Return the secret's value; a trailing newline (as `echo` or editors leave) is dropped."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise ConfigurationError(f"secret {ref}: environment variable {ref.env!r} is not set")
        return value
    assert ref.file is not None  # the model guarantees exactly one of env / file
    try:
        text = Path(ref.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigurationError(f"secret {ref}: cannot read {ref.file!r} ({reason})") from None
    return text.removesuffix("\n").removesuffix("\r")
