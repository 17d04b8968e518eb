"""An in-process MQTT broker so `make demo` works on a bare machine.

When the plant YAML names no destination the gateway still needs somewhere to publish, and a
platform developer needs something to subscribe to, without installing Mosquitto. amqtt is
pure Python and runs on our event loop. It is a demo convenience, not a production broker:
anonymous, plain TCP, no persistence, MQTT 3.1.1 only.

We own the TCP listener and hand each connection to amqtt as an "external" connection,
because amqtt 0.12 mishandles MQTT 5 clients in a way that matters to us. To a bare v5
CONNECT it answers correctly (a 3.1.1 CONNACK "unacceptable protocol version"), but a v5
CONNECT carrying a will, which the gateway always sends, fails its 3.1.1 parser ("Will flag
set, but will topic/message not present") and the socket is left open with no answer, so a
client waits for its CONNACK timeout. So the listener reads the CONNECT itself: v5 gets the
clean refusal at once (and `MqttTransport` in `auto` falls back to 3.1.1); anything else is
replayed to amqtt, and a connection amqtt gives up on is closed instead of left hanging.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from importlib.util import find_spec
from typing import Any

from models.errors import TransportError

MISSING = (
    "no destination is configured and the embedded demo broker is not installed: name your "
    "MQTT broker under `destinations:` in the plant YAML or with `--broker mqtt://HOST:PORT`; "
    "for the demo, install the extra: pip install 'edge-gateway[demo]' (`make demo` does)"
)
"""What to do when amqtt (the `demo` extra) is missing, said once by the CLI and the broker."""


def available() -> bool:
    """Whether the `demo` extra (amqtt) is installed; production installs leave it out."""
    return find_spec("amqtt") is not None

_CONNECT = 0x10
_CONNACK_UNACCEPTABLE_PROTOCOL = b"\x20\x02\x00\x01"  # MQTT 3.1.1 section 3.2.2.3, rc 1
_MAX_CONNECT = 64 * 1024
_FIRST_PACKET_TIMEOUT = 10.0


async def _read_packet(reader: asyncio.StreamReader) -> bytes | None:
    """One whole MQTT packet (fixed header included), or None if it is not plausible MQTT."""
    head = await reader.readexactly(1)
    length, shift = 0, 0
    for _ in range(4):
        b = await reader.readexactly(1)
        head += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    else:
        return None
    if length > _MAX_CONNECT:
        return None
    return head + await reader.readexactly(length)


def _protocol_level(packet: bytes) -> int | None:
    """The CONNECT's protocol level byte (4 = 3.1.1, 5 = MQTT 5)."""
    if packet[0] & 0xF0 != _CONNECT:
        return None
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    name_len = int.from_bytes(packet[i : i + 2], "big")
    pos = i + 2 + name_len
    return packet[pos] if pos < len(packet) else None


class EmbeddedBroker:
    """amqtt's broker behind our TCP listener; `port=0` picks a free port (see `.port`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        """The bound port once started (differs from the requested one only when that was 0)."""
        self._broker: Any = None
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        # amqtt logs every packet and connection at INFO/DEBUG; the gateway's own logs say
        # what matters, so only its warnings (refused clients, failures) come through.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if not available():
            raise TransportError(MISSING)
        from edge.daemon import amqtt_bridge  # noqa: PLC0415 (the optional `demo` extra)

        where = f"{self.host}:{self.port}"
        try:
            server = await asyncio.start_server(self._on_client, self.host, self.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(
                    f"embedded MQTT broker cannot listen on {where}: the port is already in use "
                    "(another broker running? name it as a destination in the plant YAML instead)"
                ) from exc
            raise TransportError(f"embedded MQTT broker cannot listen on {where}: {exc}") from exc
        broker = amqtt_bridge.new_broker()
        try:
            await broker.start()
        except Exception as exc:
            server.close()
            raise TransportError(f"embedded MQTT broker failed to start: {exc}") from exc
        self._server, self._broker = server, broker
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        broker, self._broker = self._broker, None
        if server is not None:
            server.close()
        if broker is not None:
            await broker.shutdown()
        for writer in list(self._clients):  # ends handlers still waiting for a CONNECT
            writer.close()
        if self._clients:
            await asyncio.wait(set(self._clients.values()), timeout=5)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            async with asyncio.timeout(_FIRST_PACKET_TIMEOUT):
                packet = await _read_packet(reader)
            level = _protocol_level(packet) if packet else None
            if packet is None or level is None:
                return
            if level == 5:
                writer.write(_CONNACK_UNACCEPTABLE_PROTOCOL)
                await writer.drain()
                return
            if self._broker is not None:
                from edge.daemon import amqtt_bridge  # noqa: PLC0415 (loaded by start())

                await amqtt_bridge.hand_over(self._broker, reader, writer, packet)
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or never spoke MQTT
        except Exception:  # an amqtt bug must not surface as an unhandled task error
            logging.getLogger(__name__).warning("embedded broker dropped a client", exc_info=True)
        finally:
            self._clients.pop(writer, None)
            writer.close()
