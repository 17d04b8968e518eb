"""A Haas control speaking Machine Data Collection Q-commands, over TCP or a serial fd.

Thin view of `MachineModel`: every reply is computed from `model.snapshot(now)`, so it
agrees with the Modbus, FOCAS... views of the same machine. Replies use the Haas manual's
framing (STX text ETB CR LF `>`) by default, or the `>TEXT` CR LF style seen on many
controls (`framing="prompt"`), so the adapter's tolerance is exercised on both.

What the simulator answers (anything else: `INVALID COMMAND`):

| command | reply |
|---|---|
| Q100 | `SERIAL NUMBER, <serial>` |
| Q101 | `SOFTWARE VERSION, <version>` |
| Q102 | `MODEL, <model>` |
| Q104 | `MODE, (MEM)` / `(MDI)` / `(JOG)` / `(EDIT)` |
| Q500 | `STATUS, BUSY` while cutting, else `PROGRAM, O01000, IDLE|ALARM|FEED HOLD, PARTS, n` |
| Q600 n | `MACRO, <value>`; see MACROS; other numbers below 34000 read 0 |

This module imports nothing of adapters/ on purpose: it restates the wire format, so a
framing bug in the adapter cannot hide behind a shared helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from models.errors import ConfigurationError
from models.machine_state import ControllerMode, Execution
from models.sample import utc_now
from simulators.lifecycle import (
    SimulatedMachine,
    SimulatorHandle,
    TcpListeners,
    serve_machines,
    started,
)
from simulators.machine import MachineModel, MachineSnapshot
from simulators.standalone import standalone_main

__all__ = ["MACROS", "HaasSimulator", "reply_for", "serve_haas", "start_for_gateway"]

log = logging.getLogger(__name__)
Framing = Literal["stx", "prompt"]

MACROS: dict[int, Callable[[MachineSnapshot], float]] = {
    3027: lambda s: s.spindle_speed,  # Haas: current spindle speed
    3901: lambda s: float(s.part_count),  # Haas: M30 counter #1
    3902: lambda s: float(s.bad_part_count),  # Haas: M30 counter #2; here: bad parts
    1098: lambda s: s.spindle_load,  # the simulator's choice: spindle load %
    500: lambda s: s.last_cycle_time,  # user macros written by the part program:
    501: lambda s: s.feed_rate,
    502: lambda s: s.spindle_temperature,
    503: lambda s: s.coolant_temperature,
}
_MODES = {
    ControllerMode.AUTOMATIC: "MEM", ControllerMode.SEMI_AUTOMATIC: "MEM",
    ControllerMode.MDI: "MDI", ControllerMode.MANUAL: "JOG", ControllerMode.EDIT: "EDIT",
}


def _status(s: MachineSnapshot) -> str:
    if s.execution is Execution.ACTIVE:
        return "STATUS, BUSY"  # as on a real Haas: no program or count while running
    if s.alarm_code or s.emergency_stop or s.execution is Execution.INTERRUPTED:
        word = "ALARM"
    elif s.execution is Execution.FEED_HOLD:
        word = "FEED HOLD"
    else:
        word = "IDLE"
    return f"PROGRAM, O{s.program_number:05d}, {word}, PARTS, {s.part_count}"


def reply_for(model: MachineModel, line: str, now: datetime,
              identity: tuple[str, str, str] = ("1234567", "100.21.000.1120", "VF-2SS")) -> str:
    """The text of the reply to one request line, framing not included."""
    text = line.strip().lstrip(">").strip().lstrip("?").strip()
    if text[:1] not in ("Q", "q") or not text[1:].split(" ")[0].isdigit():
        return "INVALID COMMAND"
    head, _, arg = text[1:].partition(" ")
    q = int(head)
    serial, version, model_name = identity
    if q == 100:
        return f"SERIAL NUMBER, {serial}"
    if q == 101:
        return f"SOFTWARE VERSION, {version}"
    if q == 102:
        return f"MODEL, {model_name}"
    snap = model.snapshot(now)
    if q == 104:
        return f"MODE, ({_MODES[snap.controller_mode]})"
    if q == 500:
        return _status(snap)
    if q == 600:
        try:
            var = int(float(arg))
        except ValueError:
            return "INVALID VARIABLE"
        if not 1 <= var < 34000:
            return "INVALID VARIABLE"
        getter = MACROS.get(var)
        return f"MACRO, {(getter(snap) if getter else 0.0):.6f}"
    return "INVALID COMMAND"


def _frame(text: str, framing: Framing) -> bytes:
    if framing == "prompt":
        return b">" + text.encode("ascii", "replace") + b"\r\n"
    return b"\x02" + text.encode("ascii", "replace") + b"\x17\r\n>"


class _Session:
    """Splits incoming bytes into request lines (CR, LF or both end a request)."""

    def __init__(self, model: MachineModel, framing: Framing, clock: Callable[[], datetime],
                 serial: str) -> None:
        self.model, self.framing, self.clock, self.serial = model, framing, clock, serial
        self.buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        while True:
            ends = [i for i in (self.buf.find(b"\r"), self.buf.find(b"\n")) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = bytes(self.buf[:end]).decode("ascii", "replace")
            del self.buf[: end + 1]
            if line.strip():
                text = reply_for(self.model, line, self.clock(),
                                 (self.serial, "100.21.000.1120", "VF-2SS"))
                out += _frame(text, self.framing)
        if len(self.buf) > 1024:
            self.buf.clear()
        return bytes(out)


def _serial_of(asset: str) -> str:
    """A stable 7-digit serial number per asset, so a nameplate test can predict it."""
    return str(1000000 + sum(ord(c) * 31**i for i, c in enumerate(asset)) % 9000000)


class HaasSimulator(SimulatorHandle):
    """Running Haas endpoints; `ports` maps asset -> bound TCP port (useful when asked for 0)."""

    def __init__(self) -> None:
        self._tcp = TcpListeners("haas mdc tcp", log)
        self._fds: list[int] = []
        self.ports = self._tcp.ports

    async def add_tcp(self, model: MachineModel, host: str, port: int, framing: Framing,
                      clock: Callable[[], datetime]) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = _Session(model, framing, clock, _serial_of(model.asset))
            while data := await reader.read(4096):
                reply = session.feed(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()

        return await self._tcp.listen(model.asset, host, port, handle)

    def add_fd(self, model: MachineModel, fd: int, framing: Framing,
               clock: Callable[[], datetime]) -> None:
        """Serve on an open file descriptor: the device end of a serial line (a pty master)."""
        session = _Session(model, framing, clock, _serial_of(model.asset))
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                loop.remove_reader(fd)
                return
            reply = session.feed(data)
            with contextlib.suppress(OSError):
                os.write(fd, reply)

        loop.add_reader(fd, readable)
        self._fds.append(fd)

    async def aclose(self) -> None:
        await self._tcp.aclose()
        fds, self._fds = self._fds, []
        loop = asyncio.get_running_loop()
        for fd in fds:
            loop.remove_reader(fd)


async def serve_haas(model: MachineModel, host: str = "127.0.0.1", port: int = 5051, *,
                     framing: Framing = "stx",
                     clock: Callable[[], datetime] = utc_now) -> HaasSimulator:
    """One machine on its own TCP port (0 picks a free one; see `.ports`)."""

    async def fill(sim: HaasSimulator) -> None:
        await sim.add_tcp(model, host, port, framing, clock)

    return await started(HaasSimulator(), fill)


async def start_for_gateway(machines: list[SimulatedMachine]) -> HaasSimulator:
    """Serve each `simulate: true` Haas machine where its settings say (TCP only)."""

    async def add(sim: HaasSimulator, asset: str, settings: Any, model: MachineModel) -> None:
        conn = settings.connection
        if conn.transport != "tcp":
            raise ConfigurationError(f"{asset}: the Haas simulator serves transport 'tcp' only")
        await sim.add_tcp(model, conn.host, conn.port, "stx", utc_now)

    return await serve_machines(HaasSimulator(), machines, add)


main = standalone_main("simulators.haas_server", "A simulated CNC machine over Haas MDC",
                      port=5051, asset="sim-haas", serve=serve_haas)


if __name__ == "__main__":
    main()
