"""The one logger interface every layer is typed against.

A structural type, so that models/, adapters/ and the stores stay free of structlog while the
daemon hands them a structlog bound logger (key-value events: `log.info("event", key=value)`)
and tests hand them anything with the same methods.
"""

from __future__ import annotations

from typing import Any, Protocol


class Logger(Protocol):
    """The slice of a structlog bound logger the gateway uses."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def exception(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def bind(self, **kw: Any) -> Logger: ...
