"""A logger that keeps what it is told, for tests that check a line is logged (once)."""

from __future__ import annotations

from typing import Any


class RecordingLogger:
    """Records `(event, fields)` for info, warning and error alike; `named` filters."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = error = info

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.events if e == event]
