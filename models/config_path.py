"""File paths written in the plant YAML, anchored at the YAML file's directory.

Why: a path read as it is would be relative to the process's working directory, which is
`/` under systemd (and wherever the operator stands otherwise). A plant engineer who writes
`ca_file: certs/ca.pem` beside the YAML means the file beside the YAML, and `validate` run
from that directory would pass while the service fails with "no such file".

The loader (edge/config/loader.py) validates with `context={CONFIG_DIR: <directory of the
YAML file>}`; a relative `ConfigPath` then becomes that directory joined with it, so every
later reader (TLS contexts, secret files, platform keys, adapters' PKI directories) opens
the path the engineer meant and every message names where the gateway looked. Without
that context (a library user or a test constructing models directly) a value is kept as
given: relative to the working directory, as before.

Pure string joining (`posixpath`): models/ does no I/O, so nothing here looks at the file
system. `~` is refused rather than expanded: the gateway usually runs as a service user
whose home is not the engineer's, so `~/certs/ca.pem` would point somewhere else.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

CONFIG_DIR = "config_dir"
"""The validation-context key naming the directory relative paths are anchored at."""


def anchor(value: str, context: object) -> str:
    """`value` joined to the context's `CONFIG_DIR` when it is relative; else unchanged.

    An empty value stays empty (it means "not set" to readers that test truthiness, and
    must not turn into the directory itself); `.` segments are dropped so messages read
    `/etc/plant/certs/ca.pem`, while `..` is kept (collapsing it would differ from what the
    kernel does when the segment before it is a symbolic link)."""
    base = _config_dir(context)
    if base is None or not value or value.startswith("/"):
        return value
    _refuse_home(value)
    return posixpath.join(base, *(part for part in value.split("/") if part not in ("", ".")))


def _config_dir(context: object) -> str | None:
    base = context.get(CONFIG_DIR) if isinstance(context, Mapping) else None
    return None if base is None else str(base)


def _refuse_home(value: str) -> None:
    if value.startswith("~"):
        raise ValueError(
            f"{value!r}: '~' is not expanded (the gateway may run as another user); give an "
            "absolute path or one relative to the YAML file's directory"
        )


def _anchored(value: str, info: ValidationInfo) -> str:
    return anchor(value, info.context)


def _home_free(value: str, info: ValidationInfo) -> str:
    if _config_dir(info.context) is not None:
        _refuse_home(value)
    return value


ConfigPath = Annotated[str, AfterValidator(_anchored)]
"""A file or directory named in the plant YAML: relative to the YAML file's directory when
validated with a `CONFIG_DIR` context (see the module docstring), absolute paths as given."""

StateDirPath = Annotated[str, AfterValidator(_home_free)]
"""`gateway.state_dir` and `keys_dir`: kept as written, because `LoadedPlant` anchors them at
the YAML file's directory itself and resolves them (`$STATE_DIRECTORY` may win, a share or a
worker adds a subdirectory); only `~` is refused under the same context, as for `ConfigPath`."""
