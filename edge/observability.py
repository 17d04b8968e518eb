"""Logging setup: JSON lines under systemd or in pipes, readable key=value on a terminal.

Secrets never reach a log call: config values that are secrets are `SecretRef`s, which
print as their reference (`env:NAME`), and resolved values are only held by the transport.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Literal, TextIO

import structlog

from edge.status.log_tap import TAP


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """structlog for our own events, and the standard library's `logging` (asyncua, pymodbus,
    paho, asyncio) rendered by the same renderer through `ProcessorFormatter`: under systemd
    every line of the journal is one JSON object, whoever wrote it."""
    if fmt == "auto":
        under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
        fmt = "console" if sys.stderr.isatty() and not under_systemd else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    exc: Any = (structlog.processors.format_exc_info if fmt == "json"
                else structlog.processors.StackInfoRenderer())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    threshold = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            TAP,  # recent warnings and reloads for the status page
            LevelGate(threshold),
            stamp,
            exc,
            renderer,
        ],
        # info passes to the tap whatever the level: a reload's outcome (`reloaded`) is
        # counted, and a worker's reported to its parent, with `--log-level warning` too;
        # debug, the only level hot paths log at, is still dropped at the call
        wrapper_class=structlog.make_filtering_bound_logger(min(threshold, logging.INFO)),
        # one write() per line, newline included (`print` makes two): the processes of
        # `run --workers N` share one stderr (the journal's stream, a file), and another
        # process's line written between a line and its newline merged both into one
        # line that is not JSON (as the stdlib handler below already writes)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([exc] if fmt == "json" else []), renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]  # replaces basicConfig's plain-text handler, also on reload
    # Libraries log through stdlib logging; keep their chatter out unless it matters.
    root.setLevel(logging.WARNING)
    for noisy in ("pymodbus", "amqtt", "transitions", "asyncio"):
        logging.getLogger(noisy).setLevel(
            logging.CRITICAL if noisy == "pymodbus" else logging.WARNING
        )
    # Python's own warnings (a library's DeprecationWarning, an unawaited coroutine's
    # RuntimeWarning, an unclosed socket's ResourceWarning) were printed by
    # `warnings.showwarning` as plain text on stderr, a non-JSON line in the journal.
    # Only the printing is replaced: the filters still decide first (Python's default
    # shows each once per location), so a warning in a loop stays one line.
    warnings.showwarning = _show_warning


class LevelGate:
    """A processor that drops events below `threshold` (a `logging` level), after the tap
    has seen them."""

    LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
              "critical": logging.CRITICAL, "fatal": logging.CRITICAL}

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        if self.LEVELS.get(method, logging.INFO) < self.threshold:
            raise structlog.DropEvent
        return event_dict


def _show_warning(  # noqa: PLR0917 - `warnings.showwarning`'s positional signature
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: TextIO | None = None, line: str | None = None,
) -> None:
    """`warnings.showwarning` as one structured `python_warning` event. A caller that
    names a `file` (`warnings.showwarning(..., file=f)` by hand) still gets it written
    there, as `logging.captureWarnings` also does."""
    if file is not None:
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    get_logger().warning("python_warning", category=category.__name__, message=str(message),
                         location=f"{filename}:{lineno}")


def get_logger(**bindings: Any) -> Any:
    return structlog.get_logger().bind(**bindings)
