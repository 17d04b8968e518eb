"""A LineMeter device: a random-walk spindle speed and a part counter, over TCP.

Ships with the plugin so its tests (and a curious reader) have something to talk to.
"""

from __future__ import annotations

import asyncio
import random


class LineMeterDevice:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port = int(server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_device(host: str = "127.0.0.1", port: int = 0, seed: int = 0) -> LineMeterDevice:
    rng = random.Random(seed)
    state = {"speed": 1000.0, "parts": 0, "reads": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if line.strip() != b"READ":
                    writer.write(b"ERR unknown command\n")
                    continue
                state["reads"] += 1
                state["speed"] = max(0.0, state["speed"] + rng.uniform(-50, 50))
                if state["reads"] % 5 == 0:
                    state["parts"] += 1
                word = "run" if state["reads"] % 10 < 8 else "idle"
                writer.write(f"OK state={word} mode=auto parts={state['parts']} "
                             f"speed={state['speed']:.1f}\n".encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return LineMeterDevice(await asyncio.start_server(handle, host, port))
