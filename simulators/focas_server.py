"""A FANUC control speaking the FOCAS2 Ethernet subset the focas adapter uses.

Thin view of `MachineModel`, like every protocol server here. It restates the framing of
adapters/focas/protocol.py (see that docstring and the adapter README for the source)
without importing adapters/, so a framing bug in one cannot hide in a shared helper. It has
never been compared with a real control: it agrees with our adapter, which is all it proves.

Served functions: cnc_sysinfo (0x18), cnc_statinfo (0x19), cnc_rdprgnum (0x1C),
cnc_rdmacro (0x15) for MACROS, cnc_rdparam (0x0E) for PARAMETERS; anything else answers
error EW_FUNC (1), an unknown number EW_NUMBER (3).

statinfo from the machine state: `run` READY/PROGRAM_COMPLETED/WAIT -> 0, ACTIVE -> 3,
FEED_HOLD -> 2, INTERRUPTED/STOPPED/PROGRAM_STOPPED/OPTIONAL_STOP -> 1; `aut` AUTOMATIC
-> 1 (MEM), MDI -> 0, EDIT -> 3, MANUAL -> 5 (JOG), SEMI_AUTOMATIC -> 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

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

__all__ = ["MACROS", "PARAMETERS", "FocasSimulator", "serve_focas", "start_for_gateway"]

log = logging.getLogger(__name__)

MAGIC = b"\xa0\xa0\xa0\xa0"
_HEADER = struct.Struct(">4sHHH")
_SUB_REQUEST = struct.Struct(">HHHHiiiii")
_SUB_REPLY = struct.Struct(">HHHHh4sH")
MAX_AXIS = 8

MACROS: dict[int, Callable[[MachineSnapshot], float]] = {
    3901: lambda s: float(s.part_count),  # FANUC: number of machined parts
    3902: lambda s: 0.0,  # FANUC: number of required parts (not modelled)
    500: lambda s: float(s.bad_part_count),  # common variables: the simulator's choice
    501: lambda s: s.last_cycle_time,
    502: lambda s: s.spindle_speed,
    503: lambda s: s.spindle_load,
}
PARAMETERS: dict[int, Callable[[MachineSnapshot], int]] = {
    6711: lambda s: s.part_count,  # FANUC: parts count
    6712: lambda s: s.part_count,  # FANUC: total parts count (no reset in the model)
    6757: lambda s: round(s.last_cycle_time * 1000) % 60000,  # cycle time, ms part
    6758: lambda s: int(s.last_cycle_time // 60),  # cycle time, minutes part
}
_RUN = {
    Execution.READY: 0, Execution.PROGRAM_COMPLETED: 0, Execution.WAIT: 0,
    Execution.ACTIVE: 3, Execution.FEED_HOLD: 2,
}
_AUT = {
    ControllerMode.AUTOMATIC: 1, ControllerMode.SEMI_AUTOMATIC: 1, ControllerMode.MDI: 0,
    ControllerMode.EDIT: 3, ControllerMode.MANUAL: 5,
}


def _frame(ftype: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, 2, ftype, len(body)) + body


def _reply(func: int, error: int = 0, data: bytes = b"") -> bytes:
    return _SUB_REPLY.pack(_SUB_REPLY.size + len(data), 1, 1, func, error, b"\0" * 4,
                           len(data)) + data


def _answer(func: int, args: tuple[int, ...], s: MachineSnapshot) -> bytes:
    if func == 0x18:  # sysinfo: addinfo (bit 1: i series), max axis, type, mt, series, version
        return _reply(func, 0, struct.pack(">HH2s2s4s4s2s", 0x0002, MAX_AXIS, b"31", b" M",
                                           b"G421", b"24.0", b" 3"))
    if func == 0x19:
        alarm = 1 if (s.alarm_code or s.emergency_stop) else 0
        data = struct.pack(">7H", _AUT[s.controller_mode], _RUN.get(s.execution, 1),
                           1 if s.execution is Execution.ACTIVE else 0, 0,
                           1 if s.emergency_stop else 0, alarm, 0)
        return _reply(func, 0, data)
    if func == 0x1C:
        return _reply(func, 0, struct.pack(">ii", s.program_number, s.program_number))
    if func == 0x15:
        getter = MACROS.get(args[0])
        if getter is None or args[1] != args[0]:
            return _reply(func, 3)
        return _reply(func, 0, struct.pack(">ihh", round(getter(s) * 1000), 10, 3))
    if func == 0x0E:
        pgetter = PARAMETERS.get(args[0])
        if pgetter is None or args[1] != args[0]:
            return _reply(func, 3)
        data = struct.pack(">IhHi", args[0], 0, 3, pgetter(s)) + b"\0" * 4 * (MAX_AXIS - 1)
        return _reply(func, 0, data)
    return _reply(func, 1)


class _Session:
    def __init__(self, model: MachineModel, clock: Callable[[], datetime]) -> None:
        self.model, self.clock = model, clock
        self.buf = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Replies to every complete frame; True when the peer asked to close."""
        self.buf += data
        out = bytearray()
        while len(self.buf) >= _HEADER.size:
            magic, _version, ftype, length = _HEADER.unpack_from(self.buf)
            if magic != MAGIC:
                raise ValueError("bad magic")
            if len(self.buf) < _HEADER.size + length:
                break
            body = bytes(self.buf[_HEADER.size:_HEADER.size + length])
            del self.buf[:_HEADER.size + length]
            if ftype == 0x0101:
                out += _frame(0x0102, b"\x00\x01")
            elif ftype == 0x0201:
                out += _frame(0x0202, b"")
                return bytes(out), True
            elif ftype == 0x2101:
                out += _frame(0x2102, self._data(body))
        return bytes(out), False

    def _data(self, body: bytes) -> bytes:
        (count,) = struct.unpack_from(">H", body)
        pos, replies = 2, []
        snap = self.model.snapshot(self.clock())
        for _ in range(count):
            (size,) = struct.unpack_from(">H", body, pos)
            _, _cls, _, func, *args = _SUB_REQUEST.unpack_from(body, pos)
            replies.append(_answer(func, tuple(args), snap))
            pos += size
        return struct.pack(">H", len(replies)) + b"".join(replies)


class FocasSimulator(SimulatorHandle):
    """Running FOCAS endpoints; `ports` maps asset -> bound TCP port."""

    def __init__(self) -> None:
        self._tcp = TcpListeners("focas", log)
        self.ports = self._tcp.ports

    async def add(self, model: MachineModel, host: str, port: int,
                  clock: Callable[[], datetime] = utc_now) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = _Session(model, clock)
            with contextlib.suppress(ValueError, struct.error):  # garbage: the session ends
                while data := await reader.read(65536):
                    out, done = session.feed(data)
                    if out:
                        writer.write(out)
                        await writer.drain()
                    if done:
                        break

        return await self._tcp.listen(model.asset, host, port, handle)

    async def aclose(self) -> None:
        await self._tcp.aclose()


async def serve_focas(model: MachineModel, host: str = "127.0.0.1", port: int = 8193, *,
                      clock: Callable[[], datetime] = utc_now) -> FocasSimulator:
    """One machine on its own port (0 picks a free one; see `.ports`)."""

    async def fill(sim: FocasSimulator) -> None:
        await sim.add(model, host, port, clock)

    return await started(FocasSimulator(), fill)


async def start_for_gateway(machines: list[SimulatedMachine]) -> FocasSimulator:
    """Serve each `simulate: true` FOCAS machine at its settings' host and port."""

    async def add(sim: FocasSimulator, asset: str, settings: Any, model: MachineModel) -> None:
        conn = settings.connection
        if not conn.host:
            raise ConfigurationError(f"{asset}: FOCAS simulation needs connection.host")
        await sim.add(model, conn.host, conn.port)

    return await serve_machines(FocasSimulator(), machines, add)


main = standalone_main("simulators.focas_server", "A simulated CNC machine over FOCAS2 Ethernet",
                      port=8193, asset="sim-focas", serve=serve_focas)


if __name__ == "__main__":
    main()
