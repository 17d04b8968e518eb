"""The gateway's one exception tree.

Every library error (pymodbus, paho, sqlite3, yaml, pydantic...) is translated into one of
these at the boundary of the module that calls the library, so callers above only ever
catch our own types::

    EdgeError
    +-- ConfigurationError      fatal for what it configures (the plant, or one device)
    |   +-- PlantConfigError    the plant YAML is invalid; carries every located problem
    +-- TransientError          the device or network may recover; retry with backoff
    |   +-- DeviceUnavailable   connection refused, timed out, closed
    |   +-- ProtocolError       garbled or short reply, exception response
    +-- TransportError          MQTT broker unreachable or refused us
    +-- PluginError             adapter entry points: unknown, duplicate, failing import
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgeError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigurationError(EdgeError):
    """Wrong settings: retrying will not help until a human changes the YAML."""


@dataclass(frozen=True)
class ConfigProblem:
    """One located problem in a plant YAML, shaped for `file:line:col: path: message`."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class PlantConfigError(ConfigurationError):
    """The plant YAML is invalid; `problems` lists the errors found, not just the first.

    A file can hold hundreds of thousands of problems (4 MiB of them): the loader keeps the
    first ones in file order and counts the rest in `omitted`, so `validate`'s output and
    a rejected reload's log line stay readable and cheap."""

    def __init__(self, problems: list[ConfigProblem], omitted: int = 0) -> None:
        self.problems = problems
        self.omitted = omitted
        self.total = len(problems) + omitted
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem kept, then `... and N more problems` when some were not."""
        more = [f"... and {self.omitted} more problems"] if self.omitted else []
        return [str(p) for p in self.problems] + more


class TransientError(EdgeError):
    """The device or link may come back; the runner retries with capped backoff."""


class DeviceUnavailable(TransientError):
    """Connection refused, timed out or dropped."""


class ProtocolError(TransientError):
    """The device answered, but with something we cannot use (exception code, short frame)."""


class TransportError(EdgeError):
    """The MQTT broker is unreachable or refused the connection."""


class PluginError(EdgeError):
    """An adapter plugin is unknown, registered twice, or fails to import."""
