"""A byte pipe to the control: TCP socket or serial line, same framing on both.

Serial goes through pyserial only to open and configure the port (baud rate, parity...);
reads are driven by the event loop watching the file descriptor, so a silent serial device
costs no thread and a timeout is an ordinary `asyncio.timeout`. Every library or OS error is
translated to `DeviceUnavailable` here, the one boundary with the outside world.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from models.errors import DeviceUnavailable

from .settings import HaasConnection


class Link:
    """Open, write, read chunks, close. Subclasses: `TcpLink`, `SerialLink`."""

    endpoint: str

    async def open(self) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def read(self) -> bytes:
        """At least one byte; raises DeviceUnavailable when the peer closed."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TcpLink(Link):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.endpoint = f"tcp://{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {exc}") from exc

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc

    async def read(self) -> bytes:
        if self._reader is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        try:
            data = await self._reader.read(4096)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc
        if not data:
            raise DeviceUnavailable(f"{self.endpoint}: connection closed by the control")
        return data

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()


class SerialLink(Link):
    def __init__(self, conn: HaasConnection) -> None:
        assert conn.port_path is not None  # guaranteed by HaasConnection validation
        self.conn = conn
        self.endpoint = (
            f"serial://{conn.port_path}?{conn.baudrate}-{conn.bytesize}{conn.parity}{conn.stopbits}"
        )
        self._port: Any = None
        self._fd: int | None = None
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def open(self) -> None:
        import serial  # noqa: PLC0415 - only serial machines pay for pyserial's import

        c = self.conn
        try:
            port = serial.Serial(
                c.port_path, baudrate=c.baudrate, bytesize=c.bytesize, parity=c.parity,
                stopbits=c.stopbits, timeout=0, write_timeout=c.timeout,
            )
        except (OSError, ValueError, serial.SerialException) as exc:
            raise DeviceUnavailable(f"{self.endpoint}: cannot open: {exc}") from exc
        self._port = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)
        self._chunks = asyncio.Queue()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the port went away (USB adapter unplugged): stop watching it
            asyncio.get_running_loop().remove_reader(self._fd)
        self._chunks.put_nowait(data)

    async def write(self, data: bytes) -> None:
        if self._fd is None:
            raise DeviceUnavailable(f"{self.endpoint}: not open")
        view = memoryview(data)
        try:
            while view:
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                    continue
                view = view[n:]
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: write failed: {exc}") from exc

    async def read(self) -> bytes:
        if self._fd is None:
            raise DeviceUnavailable(f"{self.endpoint}: not open")
        data = await self._chunks.get()
        if not data:
            raise DeviceUnavailable(f"{self.endpoint}: serial port closed")
        return data

    def close(self) -> None:
        fd, self._fd = self._fd, None
        port, self._port = self._port, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        if port is not None:
            port.close()


def make_link(conn: HaasConnection) -> Link:
    if conn.transport == "serial":
        return SerialLink(conn)
    assert conn.host is not None
    return TcpLink(conn.host, conn.port)
