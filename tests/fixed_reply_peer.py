"""A TCP peer that answers every request with the same bytes (or never answers): the
misbehaving control of the adapters' error-path tests (Haas, FOCAS), over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def fixed_reply_peer(reply: bytes | None) -> AsyncIterator[int]:
    """Listens on a free port (yielded); answers each read with `reply` (None: silence)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):
            if reply is not None:
                writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()
