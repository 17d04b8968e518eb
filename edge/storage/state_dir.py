"""Whether this user could create and write the gateway's state directory.

Why: `validate` often runs as another user than the service (root in a shell, or systemd's
ExecStartPre), so a directory it cannot use is a warning there, not an error; `run` keeps
its error. The check is tried, not read from mode bits: root passes every permission check
yet cannot create `/proc/nope` or write a read-only mount. It leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import tempfile
from pathlib import Path


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def state_dir_problem(path: Path) -> str | None:
    """Why `path` could not serve as the state directory for this user, else None."""
    user = _user()
    if path.exists():
        if not path.is_dir():
            return f"state_dir {path} is not a directory"
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            return f"state_dir {path} is not writable by this user ({user}): {exc.strerror}"
        return None
    missing = path  # the first missing directory of the path, whose parent exists
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        missing.mkdir()
    except OSError as exc:
        return f"state_dir {path} cannot be created by this user ({user}): {exc.strerror}"
    with contextlib.suppress(OSError):  # filled meanwhile (the gateway starting): usable
        missing.rmdir()
    return None
