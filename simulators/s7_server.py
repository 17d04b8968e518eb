"""A Siemens S7 PLC in front of the machine model: python-snap7's server with a fixed DB layout.

The layout is the one adapters/s7/sample.yaml reads (that file runs against this
simulator unchanged, apart from host and port); every value is encoded here with `struct`,
independently of the adapter's `snap7.util` decoding, so a layout bug on either side shows
up as a disagreement:

DB10, the machine's state (92 bytes; a non-optimized DB in TIA terms):

| offset | type | content |
|---|---|---|
| 0 | INT | execution: `EXECUTION_CODES` (0 ready, 1 active, 2 interrupted, ...) |
| 2 | INT | controller mode: `MODE_CODES` (0 automatic, 1 manual, 2 mdi, ...) |
| 4.0 | BOOL | emergency stop |
| 4.1 | BOOL | alarm active |
| 4.2 | BOOL | door closed |
| 4.3 | BOOL | spindle running (cutting) |
| 4.4 | BOOL | available (0 when the model says unavailable) |
| 6 | INT | alarm code (0 = none) |
| 8 | DINT | part count |
| 12 | DINT | bad part count |
| 16 | STRING[32] | program name (34 bytes) |
| 50 | REAL | spindle speed, 1/min |
| 54 | REAL | spindle load, % |
| 58 | DTL | the PLC clock: simulated time, UTC |
| 70 | UDINT | seconds since the simulation started (operating time) |
| 74 | REAL | feed rate, mm/min |
| 78 | REAL | spindle temperature, Cel |
| 82 | REAL | coolant temperature, Cel |
| 86 | REAL | last cycle time, s |
| 90 | INT | program number |

DB20: 100 WORDs of drifting process values (`MachineModel.process_values`) for load tests.
Q0.0 spindle running, I1.3 door closed, MW100 part count modulo 32768 (INT), C5 part count
modulo 1000 (BCD, as an S5 counter holds it), T1 last cycle time as S5TIME (base 1 s).

Images are refreshed from the model every `refresh_interval` (100 ms) by a task on the
event loop; python-snap7's server answers reads from its own threads under the area lock
we take while writing, so a read never sees half of an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from snap7.server import Server
from snap7.type import SrvArea

from models.errors import ConfigurationError
from models.machine_state import Availability
from models.sample import utc_now
from simulators.lifecycle import SimulatedMachine, SimulatorHandle, serve_machines, started
from simulators.machine import MachineModel, MachineSnapshot
from simulators.plc_codes import EXECUTION_CODES, MODE_CODES
from simulators.standalone import standalone_main

__all__ = ["EXECUTION_CODES", "MODE_CODES", "S7Simulator", "serve_s7", "start_for_gateway"]

log = logging.getLogger(__name__)

STATE_DB = 10
PROCESS_DB = 20
_HEAD = struct.Struct(">hhBxhii")  # 0..15
_ANALOG = struct.Struct(">ff")  # 50
_DTL = struct.Struct(">HBBBBBBI")  # 58
_TAIL = struct.Struct(">Iffffh")  # 70..91
STATE_DB_SIZE = 92
PROGRAM_LENGTH = 32


def _bcd3(n: int) -> int:
    return (n // 100 % 10) << 8 | (n // 10 % 10) << 4 | n % 10


def encode_state_db(snap: MachineSnapshot) -> bytearray:
    """DB10 for one snapshot (see the module docstring)."""
    db = bytearray(STATE_DB_SIZE)
    bits = (snap.emergency_stop | snap.alarm_active << 1 | snap.door_closed << 2
            | snap.running << 3 | (snap.availability is Availability.AVAILABLE) << 4)
    _HEAD.pack_into(db, 0, EXECUTION_CODES[snap.execution], MODE_CODES[snap.controller_mode],
                    bits, max(-32768, min(32767, snap.alarm_code)),
                    snap.part_count & 0x7FFFFFFF, snap.bad_part_count & 0x7FFFFFFF)
    name = snap.program.encode("latin-1", "replace")[:PROGRAM_LENGTH]
    db[16:50] = bytes([PROGRAM_LENGTH, len(name)]) + name.ljust(PROGRAM_LENGTH, b"\0")
    _ANALOG.pack_into(db, 50, snap.spindle_speed, snap.spindle_load)
    t = snap.sim_time.astimezone(UTC)
    _DTL.pack_into(db, 58, t.year, t.month, t.day, t.isoweekday() % 7 + 1, t.hour, t.minute,
                   t.second, t.microsecond * 1000)
    _TAIL.pack_into(db, 70, int(snap.elapsed) & 0xFFFFFFFF, snap.feed_rate,
                    snap.spindle_temperature, snap.coolant_temperature, snap.last_cycle_time,
                    max(-32768, min(32767, snap.program_number)))
    return db


class _Plc:
    """One machine's memory images inside one python-snap7 server."""

    def __init__(self, model: MachineModel, clock: Callable[[], datetime]) -> None:
        self.model = model
        self.clock = clock
        self.server = Server(log=False)
        self.images: dict[tuple[SrvArea, int], bytearray] = {
            (SrvArea.DB, STATE_DB): bytearray(STATE_DB_SIZE),
            (SrvArea.DB, PROCESS_DB): bytearray(200),
            (SrvArea.PA, 0): bytearray(8),
            (SrvArea.PE, 0): bytearray(8),
            (SrvArea.MK, 0): bytearray(128),
            (SrvArea.CT, 0): bytearray(2 * 16),
            (SrvArea.TM, 0): bytearray(2 * 16),
        }
        for (area, index), image in self.images.items():
            self.server.register_area(area, index, image)

    def refresh(self) -> None:
        snap = self.model.snapshot(self.clock())
        values = {
            (SrvArea.DB, STATE_DB): encode_state_db(snap),
            (SrvArea.DB, PROCESS_DB): struct.pack(">100H", *self.model.process_values(snap)),
            (SrvArea.PA, 0): bytes([snap.running]),
            (SrvArea.PE, 0): bytes([0, snap.door_closed << 3]),
            (SrvArea.MK, 0): b"\0" * 100 + struct.pack(">h", snap.part_count % 32768),
            (SrvArea.CT, 0): b"\0" * 10 + struct.pack(">H", _bcd3(snap.part_count % 1000)),
            (SrvArea.TM, 0): b"\0" * 2 + struct.pack(
                ">H", 2 << 12 | _bcd3(min(999, round(snap.last_cycle_time)))),
        }
        for (area, index), data in values.items():
            self.server.lock_area(area, index)
            try:
                self.images[(area, index)][: len(data)] = data
            finally:
                self.server.unlock_area(area, index)


class S7Simulator(SimulatorHandle):
    """Running S7 servers, one port per machine; `ports` carry the real ports."""

    def __init__(self, refresh_interval: float = 0.1) -> None:
        self._plcs: list[_Plc] = []
        self._refresh_interval = refresh_interval
        self._task: asyncio.Task[None] | None = None
        self.ports: dict[str, int] = {}

    def add(self, model: MachineModel, host: str, port: int,
            clock: Callable[[], datetime]) -> int:
        plc = _Plc(model, clock)
        plc.refresh()
        try:
            plc.server.start_to(host, port)
        except Exception as exc:  # python-snap7 wraps bind errors in S7ConnectionError
            raise OSError(f"cannot listen for S7 on {host}:{port}: {exc}") from exc
        assert plc.server.server_socket is not None
        bound = int(plc.server.server_socket.getsockname()[1])
        self._plcs.append(plc)
        self.ports[model.asset] = bound
        log.info("simulated machine %s on s7 %s:%d", model.asset, host, bound)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())
        return bound

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            for plc in self._plcs:
                plc.refresh()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        plcs, self._plcs = self._plcs, []
        for plc in plcs:
            await asyncio.to_thread(plc.server.stop)  # joins its threads: not on the loop


async def serve_s7(model: MachineModel, host: str = "127.0.0.1", port: int = 1102, *,
                   clock: Callable[[], datetime] = utc_now,
                   refresh_interval: float = 0.1) -> S7Simulator:
    """One machine on its own port (0 picks a free one; see `.ports`)."""

    async def fill(sim: S7Simulator) -> None:
        sim.add(model, host, port, clock)

    return await started(S7Simulator(refresh_interval), fill)


async def start_for_gateway(machines: list[SimulatedMachine]) -> S7Simulator:
    """Serve each `simulate: true` S7 machine at its settings' host and port."""

    async def add(sim: S7Simulator, asset: str, settings: Any, model: MachineModel) -> None:
        conn = settings.connection
        if conn.port in sim.ports.values():
            raise ConfigurationError(
                f"{asset}: the S7 simulator serves one machine per port ({conn.port})"
            )
        sim.add(model, conn.host, conn.port, utc_now)

    return await serve_machines(S7Simulator(), machines, add)


main = standalone_main("simulators.s7_server", "A simulated machine behind an S7 PLC "
                      "(ISO-on-TCP; DB layout in the module docstring)",
                      port=1102, asset="sim-s7", serve=serve_s7)


if __name__ == "__main__":
    main()
