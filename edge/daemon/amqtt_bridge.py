"""The amqtt side of the embedded demo broker (edge/daemon/embedded_broker.py explains why
the listener is ours). Its own module so that only `make demo` (the `demo` extra) needs amqtt:
a production install never imports it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker


class _Replay(StreamReaderAdapter):  # type: ignore[misc]
    """Serves the bytes we already read (the CONNECT) before the rest of the stream."""

    def __init__(self, reader: asyncio.StreamReader, head: bytes) -> None:
        super().__init__(reader)
        self._head = bytearray(head)

    async def read(self, n: int = -1) -> bytes:
        if not self._head:
            return bytes(await super().read(n))
        take = len(self._head) if n < 0 else min(n, len(self._head))
        out = bytes(self._head[:take])
        del self._head[:take]
        if n >= 0 and len(out) < n:
            out += bytes(await super().read(n - len(out)))
        return out


def new_broker() -> Any:
    return Broker({
        "listeners": {"default": {"type": "external"}},
        # Replaces amqtt's defaults, which add packet/event loggers and $SYS publishing.
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
        },
    })


async def hand_over(
    broker: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: bytes
) -> None:
    """Give amqtt a connection whose CONNECT packet we have already read."""
    await broker.external_connected(
        _Replay(reader, connect), StreamWriterAdapter(writer), "default"
    )
