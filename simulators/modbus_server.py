"""Modbus TCP view of one or more `MachineModel`s; the register map is in README.md.

The register map is a contract the gateway's Modbus adapter config is written against, so
it is encoded here with `struct`, independently of the adapter's codec: a bug on either side
shows up as a disagreement instead of cancelling out.

Registers reflect time, not reads. Each read is answered from the snapshot of the latest
instant on a fixed grid (`refresh_interval`, 100 ms by default), which is exactly what a
timer refreshing the datastore every 100 ms would serve, without spending CPU on machines
nobody polls: 200 idle simulated machines cost nothing. pymodbus' `SimDevice` action hook
copies the image into its datastore just before it answers. Every block is read-only; a
write gets an illegal-address exception, as on a controller that exposes no writable
data. Addresses past the map (holding/input registers >= 300/32, coils and discrete inputs
>= 16) are outside the datastore, so pymodbus answers an illegal-address exception itself.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from models.errors import ConfigurationError
from models.machine_state import Availability
from models.sample import utc_now
from simulators.lifecycle import SimulatedMachine, SimulatorHandle, started
from simulators.machine import MachineModel, MachineSnapshot
from simulators.meter import MeterModel
from simulators.plc_codes import EXECUTION_CODES, MODE_CODES
from simulators.standalone import machine_models, serve_until_interrupted, standalone_parser

__all__ = [
    "EXECUTION_CODES",
    "HOLDING_REGISTERS",
    "INPUT_REGISTERS",
    "MODE_CODES",
    "ModbusBinding",
    "ModbusSimulator",
    "encode_holding_registers",
    "encode_sdm630_input_registers",
    "run_simulated_machines",
    "serve_modbus",
    "start_modbus_simulator",
]

log = logging.getLogger(__name__)

HOLDING_REGISTERS = 300
INPUT_REGISTERS = 32
BITS = 16  # coils / discrete inputs: one 16-bit word, only bits 0 and 1 carry meaning

_HEAD = struct.Struct(">6H")  # registers 0-5
_COUNTERS = struct.Struct(">2I")  # 10-13
_ANALOG = struct.Struct(">6f")  # 20-31
_FLOAT = struct.Struct(">f")
_EXTRAS = struct.Struct(">QhH")  # 102-107
_PROCESS = struct.Struct(">100H")  # 200-299
_IMAGE = struct.Struct(f">{HOLDING_REGISTERS}H")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_holding_registers(model: MachineModel, snap: MachineSnapshot) -> list[int]:
    """The 300 holding registers of the contract for one snapshot (gaps read 0)."""
    buf = bytearray(2 * HOLDING_REGISTERS)
    _HEAD.pack_into(buf, 0, EXECUTION_CODES[snap.execution], MODE_CODES[snap.controller_mode],
                    snap.availability is Availability.AVAILABLE, snap.emergency_stop,
                    snap.alarm_code & 0xFFFF, snap.program_number & 0xFFFF)
    _COUNTERS.pack_into(buf, 2 * 10, snap.part_count & 0xFFFFFFFF,
                        snap.bad_part_count & 0xFFFFFFFF)
    _ANALOG.pack_into(buf, 2 * 20, snap.spindle_speed, snap.spindle_load, snap.feed_rate,
                      snap.spindle_temperature, snap.coolant_temperature, snap.last_cycle_time)
    buf[2 * 40:2 * 48] = snap.program.encode("ascii", "replace")[:16].ljust(16, b"\0")
    abcd = _FLOAT.pack(snap.spindle_speed)
    buf[2 * 100:2 * 102] = abcd[2:] + abcd[:2]  # CDAB: low word first
    temp_x10 = max(-32768, min(32767, round(snap.spindle_temperature * 10)))
    status = snap.running | snap.alarm_active << 1 | snap.door_closed << 2
    _EXTRAS.pack_into(buf, 2 * 102, snap.part_count & 0xFFFFFFFFFFFFFFFF, temp_x10, status)
    _PROCESS.pack_into(buf, 2 * 200, *model.process_values(snap, 100))
    return list(_IMAGE.unpack(buf))


METER_INPUT_REGISTERS = 0x4C  # SDM630 input registers 30001-30076 (0x0000-0x004B)
_SDM630 = {  # 0-based address -> quantity; float32, high word first (the meter's order)
    "voltage": (0x0000, 0x0002, 0x0004),
    "current": (0x0006, 0x0008, 0x000A),
    "power": (0x000C, 0x000E, 0x0010),
}
SDM630_TOTAL_POWER = 0x0034
SDM630_FREQUENCY = 0x0046
SDM630_IMPORT_KWH = 0x0048
SDM630_EXPORT_KWH = 0x004A


def encode_sdm630_input_registers(meter: MeterModel, now: datetime) -> list[int]:
    """The SDM630 input registers 0x0000-0x004B for `now`: a balanced 230 V three-phase
    load drawing the meter model's power; addresses as adapters/modbus/meters/ cites."""
    buf = bytearray(2 * METER_INPUT_REGISTERS)
    watts = meter.power_w(now)
    for phase in range(3):
        _FLOAT.pack_into(buf, 2 * _SDM630["voltage"][phase], 230.0)
        _FLOAT.pack_into(buf, 2 * _SDM630["current"][phase], watts / 3 / 230.0)
        _FLOAT.pack_into(buf, 2 * _SDM630["power"][phase], watts / 3)
    _FLOAT.pack_into(buf, 2 * SDM630_TOTAL_POWER, watts)
    _FLOAT.pack_into(buf, 2 * SDM630_FREQUENCY, 50.0)
    _FLOAT.pack_into(buf, 2 * SDM630_IMPORT_KWH, meter.energy_kwh(now))
    _FLOAT.pack_into(buf, 2 * SDM630_EXPORT_KWH, 0.0)
    return list(struct.unpack(f">{METER_INPUT_REGISTERS}H", buf))


@dataclass(frozen=True)
class ModbusBinding:
    """Where one machine answers. Unit 0 answers every unit id on its port. With `meter`,
    the unit is that machine's energy meter instead (SDM630 input registers)."""

    model: MachineModel
    host: str = "127.0.0.1"
    port: int = 5020
    unit: int = 1
    meter: MeterModel | None = None


class _Device:
    """One machine's register image, refreshed on the time grid when a client reads it."""

    def __init__(self, model: MachineModel, clock: Callable[[], datetime],
                 refresh_interval: float, meter: MeterModel | None = None) -> None:
        self.model = model
        self.meter = meter
        self.meter_inputs = [0] * METER_INPUT_REGISTERS
        self.clock = clock
        self.interval = timedelta(seconds=refresh_interval)
        self.tick: int | None = None
        self.holding = [0] * HOLDING_REGISTERS
        self.coils = 0
        self.inputs = 0

    def refresh(self) -> None:
        now = self.clock()
        if self.interval:
            tick = (now - _EPOCH) // self.interval
            if tick == self.tick:
                return
            self.tick, now = tick, _EPOCH + tick * self.interval
        if self.meter is not None:
            self.meter_inputs = encode_sdm630_input_registers(self.meter, now)
            return
        snap = self.model.snapshot(now)
        self.holding = encode_holding_registers(self.model, snap)
        self.coils = int(snap.running)
        self.inputs = snap.alarm_active | snap.emergency_stop << 1

    async def action(  # noqa: PLR0917 - pymodbus' SimAction signature is positional
        self, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this after its own range check, before it answers from `registers`."""
        if values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        self.refresh()
        if function_code == 3:
            registers[:HOLDING_REGISTERS] = self.holding
        elif function_code == 4 and self.meter is not None:
            registers[:METER_INPUT_REGISTERS] = self.meter_inputs
        elif function_code == 4:
            registers[:INPUT_REGISTERS] = self.holding[:INPUT_REGISTERS]
        elif function_code == 1:
            registers[0] = self.coils
        elif function_code == 2:
            registers[0] = self.inputs
        return None

    def sim_device(self, unit: int) -> SimDevice:
        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * BITS, datatype=DataType.BITS, readonly=True)]

        def regs(n: int) -> list[SimData]:
            return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS, readonly=True)]

        inputs = INPUT_REGISTERS if self.meter is None else METER_INPUT_REGISTERS
        return SimDevice(id=unit, simdata=(bits(), bits(), regs(HOLDING_REGISTERS),
                                           regs(inputs)), action=self.action)


class ModbusSimulator(SimulatorHandle):
    """Running Modbus servers; `endpoints` carry the real ports (useful when asked for 0)."""

    def __init__(self) -> None:
        self._servers: list[ModbusTcpServer] = []
        self.endpoints: tuple[ModbusBinding, ...] = ()

    def port(self, asset: str) -> int:
        return next(e.port for e in self.endpoints if e.model.asset == asset)

    async def listen(self, host: str, port: int, group: list[ModbusBinding],
                     clock: Callable[[], datetime], refresh_interval: float) -> None:
        """One server on `host`:`port` answering every machine of `group` at its unit id."""
        # a meter is exact at every read (its integral is cheap): energy per part is checked
        # against the model to 1 %, and a 100 ms grid would blur the instants
        devices = [_Device(b.model, clock, refresh_interval if b.meter is None else 0.0,
                           b.meter).sim_device(b.unit)
                   for b in group]
        server = ModbusTcpServer(devices, address=(host, port))
        self._servers.append(server)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for Modbus TCP on {host}:{port}") from exc
        bound = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
        self.endpoints += tuple(replace(b, port=bound) for b in group)

    async def aclose(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]


async def serve_modbus(
    bindings: Iterable[ModbusBinding | tuple[MachineModel, str, int, int]], *,
    refresh_interval: float = 0.1, clock: Callable[[], datetime] = utc_now,
) -> ModbusSimulator:
    """Serve every machine; machines sharing host and port become units of one server.

    `refresh_interval` 0 answers each read from `clock()` exactly (tests with a frozen clock).
    Raises ValueError for a duplicate unit on one port, OSError when a port cannot be bound.
    """
    if refresh_interval < 0:
        raise ValueError("refresh_interval must be >= 0")
    groups: dict[tuple[str, int], list[ModbusBinding]] = defaultdict(list)
    for item in bindings:
        b = item if isinstance(item, ModbusBinding) else ModbusBinding(*item)
        if not 0 <= b.unit <= 247:
            raise ValueError(f"{b.model.asset}: unit id {b.unit} outside 0..247")
        if any(o.unit == b.unit for o in groups[(b.host, b.port)]):
            raise ValueError(f"unit id {b.unit} used twice on {b.host}:{b.port}")
        groups[(b.host, b.port)].append(b)

    async def fill(sim: ModbusSimulator) -> None:
        for (host, port), group in groups.items():
            await sim.listen(host, port, group, clock, refresh_interval)

    handle = await started(ModbusSimulator(), fill)
    for e in handle.endpoints:
        log.info("simulated machine %s on modbus tcp %s:%d unit %d",
                 e.model.asset, e.host, e.port, e.unit)
    return handle


async def start_modbus_simulator(
    model: MachineModel, host: str = "127.0.0.1", port: int = 5020, unit: int = 1, *,
    refresh_interval: float = 0.1, clock: Callable[[], datetime] = utc_now,
) -> ModbusSimulator:
    """One machine on its own port: what the gateway CLI calls per `simulate: true` machine."""
    return await serve_modbus([ModbusBinding(model, host, port, unit)],
                              refresh_interval=refresh_interval, clock=clock)


async def start_for_gateway(
    machines: list[SimulatedMachine], meters: Mapping[str, MeterModel] | None = None
) -> ModbusSimulator:
    """Serve each `simulate: true` Modbus machine at its settings' host, port and unit;
    machines sharing a port become units of one server. A machine in `meters` is a
    simulated energy meter (SDM630 input registers) instead of a machine."""
    meters = meters or {}
    bindings = []
    for asset, settings, model in machines:
        conn = settings.connection
        if conn.transport != "tcp":
            raise ConfigurationError(f"{asset}: the Modbus simulator serves transport 'tcp' only")
        bindings.append(ModbusBinding(model, conn.host, conn.port, conn.unit, meters.get(asset)))
    return await serve_modbus(bindings)


async def run_simulated_machines(
    bindings: Iterable[ModbusBinding | tuple[MachineModel, str, int, int]], *,
    refresh_interval: float = 0.1,
) -> None:
    """Serve until cancelled (Ctrl-C, task cancel), then close every port."""
    async with await serve_modbus(bindings, refresh_interval=refresh_interval):
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = standalone_parser(
        prog="python -m simulators.modbus_server",
        description="Simulated CNC machines over Modbus TCP (register map: simulators/README.md)",
        port=5020, asset="sim", fleet="serve N machines on ports PORT..PORT+N-1 (load tests)")
    parser.add_argument("--unit", type=int, default=1)
    args = parser.parse_args(argv)
    bindings = [ModbusBinding(model, args.host, args.port + i, args.unit)
                for i, model in enumerate(machine_models(args))]
    serve_until_interrupted(lambda: serve_modbus(bindings))


if __name__ == "__main__":
    main()
