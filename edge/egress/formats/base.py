"""The contract between the sender and a payload format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Encoded:
    """One MQTT message as a format shapes it.

    `payload_mqtt311` is what goes out instead when the connection turned out to be MQTT
    3.1.1, which has no user properties: the transport chooses at the moment it writes the
    message (the protocol can change between reconnects), so a format that relies on a
    property is never sent without it by accident. `companions` go out after it.
    """

    payload: bytes
    user_properties: tuple[tuple[str, str], ...] = ()
    payload_mqtt311: bytes | None = None
    companions: tuple[Companion, ...] = ()


@dataclass(frozen=True)
class Companion:
    """An extra, unsigned message published after the main one was acknowledged (e.g. a
    signal's retained last value); it is not stored in the outbox on its own."""

    topic: str
    payload: bytes
    retain: bool = True


class PayloadEncoder(Protocol):
    """Turns one stored envelope (flattened JWS JSON, as the outbox holds it) into a message."""

    @property
    def name(self) -> str: ...

    @property
    def mqtt311_form(self) -> str:
        """What an MQTT 3.1.1 connection gets instead (`envelope`, `unsigned`), for the log."""
        ...

    def encode(self, envelope: bytes) -> Encoded: ...
