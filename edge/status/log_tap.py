"""Recent warnings and the reload history, taken from the gateway's own structured logs.

Why from the logs: every warning the gateway has is already a structlog event (logged once
per interval by design), and reloads log `reloaded` / `reload_rejected_...`. A processor
in the logging chain keeps the last few in memory for the status page's gateway view, so
no component needs a second reporting path. Secrets never reach log calls, so none reach
the page either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from models.sample import utc_now

RELOAD_EVENTS = {"reloaded": "ok", "reload_rejected_keeping_running_config": "rejected"}
_SHOWN = ("asset", "destination", "error", "reason", "problems", "path", "hint")


class LogTap:
    """A structlog processor: passes every event on unchanged, remembers a few."""

    def __init__(self, keep: int = 50) -> None:
        self.warnings: deque[tuple[datetime, str]] = deque(maxlen=keep)
        self.reloads: deque[tuple[datetime, str]] = deque(maxlen=keep)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event", ""))
        if event in RELOAD_EVENTS:
            detail = RELOAD_EVENTS[event]
            if detail != "ok":
                detail += ": " + "; ".join(map(str, event_dict.get("problems", [])))[:300]
            self.reloads.append((utc_now(), detail))
        if method in ("warning", "error", "critical", "exception"):
            extra = " ".join(f"{k}={event_dict[k]}" for k in _SHOWN if k in event_dict)
            self.warnings.append((utc_now(), f"{method}: {event} {extra}".strip()[:500]))
        return event_dict


TAP = LogTap()
"""The one tap of this process (logging is process-wide); configure_logging installs it."""
