"""Figure 1: Modbus requests per poll cycle for a 500-point map, against the minimum.

Each Modbus request is a round trip (tens of milliseconds on a 19200 baud line), so the
number of requests per cycle, not the number of points, is what bounds a device's poll
rate. The map here is the shape real controllers have: a dense status/counter block, a block
of process values with small reserved holes, and per-axis blocks separated by reserved
ranges (12 registers: wider than `max_gap` 10, narrower than the default 32), which is where
coalescing trades requests for registers read.

Three numbers are compared, from the same point map:

* `len(plan_reads(...))`: what the planner decides;
* `minimum_requests(...)`: the bound with any gap readable (only the 125-register limit);
* what the `ModbusAdapter` actually sends per `read_once()` against a live pymodbus server,
  counted server-side (a `SimDevice` action hook sees every request) and via
  `adapter.last_cycle_requests`, so a planner that lies, or an adapter that re-reads, shows.

The cycle time of the coalesced plan and of `one_request_per_point` on the same loopback
server is reported as a ratio: on loopback a round trip is cheap, so this ratio is a floor
of what coalescing saves on a real network or serial line.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.base import AdapterContext
from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.plan import minimum_requests, plan_reads
from adapters.modbus.settings import ModbusConnection, ModbusPoint, ModbusSettings

from .processes import HOST

RANGES = (0, 1000, 5000)
DEFAULT_MAX_GAP = int(ModbusConnection.model_fields["max_gap"].default)
DEFAULT_VARIANT = f"default (max_gap {DEFAULT_MAX_GAP})"
POINTS = (200, 200, 100)
_A_TYPES = ("uint16", "int16", "uint32", "float32", "int32", "bit", "float64", "uint64",
            "string")


def _status_block(start: int, count: int) -> list[dict[str, Any]]:
    """Densely packed mixed types; four `bit` points share each status word."""
    points: list[dict[str, Any]] = []
    addr = start
    for dtype in itertools.cycle(_A_TYPES):
        if len(points) >= count:
            break
        if dtype == "bit":
            for bit in range(min(4, count - len(points))):
                points.append({"name": f"a{len(points):03d}", "register": "holding",
                               "address": addr, "data_type": "bit", "bit": bit})
            addr += 1
            continue
        p: dict[str, Any] = {"name": f"a{len(points):03d}", "register": "holding",
                             "address": addr, "data_type": dtype}
        if dtype == "string":
            p["length"] = 4
        points.append(p)
        addr += ModbusPoint.model_validate(p).width
    return points


def _process_block(start: int, count: int) -> list[dict[str, Any]]:
    """float32 / scaled int16 alternating, with 2 reserved registers after every 10."""
    points: list[dict[str, Any]] = []
    addr = start
    for i in range(count):
        if i and i % 10 == 0:
            addr += 2
        if i % 2 == 0:
            points.append({"name": f"b{i:03d}", "register": "holding", "address": addr,
                           "data_type": "float32", "unit": "Cel"})
            addr += 2
        else:
            points.append({"name": f"b{i:03d}", "register": "holding", "address": addr,
                           "data_type": "int16", "scale": 0.1, "unit": "%"})
            addr += 1
    return points


def _axis_blocks(start: int, count: int, hole: int = 12) -> list[dict[str, Any]]:
    """Blocks of 10 float32 per axis, each followed by `hole` reserved registers."""
    points: list[dict[str, Any]] = []
    addr = start
    for i in range(count):
        if i and i % 10 == 0:
            addr += hole
        points.append({"name": f"c{i:03d}", "register": "holding", "address": addr,
                       "data_type": "float32", "unit": "mm"})
        addr += 2
    return points


def point_map() -> list[dict[str, Any]]:
    """The 500-point map: 200 status points at 0, 200 process values at 1000, 100 axis
    values at 5000."""
    return (_status_block(RANGES[0], POINTS[0]) + _process_block(RANGES[1], POINTS[1])
            + _axis_blocks(RANGES[2], POINTS[2]))


def _settings(port: int, **connection: Any) -> ModbusSettings:
    return ModbusSettings.model_validate(
        {"connection": {"host": HOST, "port": port, "timeout": 2.0, **connection},
         "points": point_map()})


def planned(connection: ModbusConnection, points: list[ModbusPoint]) -> dict[str, Any]:
    plan = plan_reads(points, connection)
    useful = {(p.kind, a) for p in points for a in range(p.address, p.address + p.width)}
    return {
        "requests": len(plan),
        "minimum_requests": minimum_requests(points, connection),
        "registers_read": sum(r.count for r in plan),
        "registers_used": len(useful),
    }


class _RequestCounter:
    """pymodbus `SimDevice` action: called once per request the server answers."""

    def __init__(self) -> None:
        self.requests = 0

    async def action(  # noqa: PLR0917 - pymodbus' SimAction signature is positional
        self, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        return None


async def _serve(counter: _RequestCounter, size: int) -> tuple[ModbusTcpServer, int]:
    values = [(a * 7) & 0x3FFF for a in range(size)]  # small finite floats, varied ints
    regs = [SimData(0, values=values, datatype=DataType.REGISTERS, readonly=True)]
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)]
    device = SimDevice(id=1, simdata=(bits, bits, regs, regs), action=counter.action)
    server = ModbusTcpServer([device], address=(HOST, 0))
    await server.serve_forever(background=True)
    port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
    return server, int(port)


async def _live(port: int, counter: _RequestCounter, cycles: int,
                **connection: Any) -> dict[str, Any]:
    adapter = ModbusAdapter(AdapterContext(asset="plan-bench"), _settings(port, **connection))
    await adapter.connect()
    try:
        await adapter.read_once()  # warm-up: first-call costs (imports, buffers) excluded
        before = counter.requests
        seen: set[int] = set()
        bad = 0
        t0 = time.perf_counter()
        for _ in range(cycles):
            samples = await adapter.read_once()
            seen.add(adapter.last_cycle_requests)
            bad += sum(s.quality.value == "bad" for s in samples)
        elapsed = time.perf_counter() - t0
    finally:
        await adapter.aclose()
    return {
        "server_requests_per_cycle": (counter.requests - before) / cycles,
        "adapter_last_cycle_requests": max(seen),
        "adapter_last_cycle_requests_varied": len(seen) > 1,
        "cycle_ms": elapsed / cycles * 1e3,
        "bad_samples": bad,
    }


async def _measure(cycles: int) -> dict[str, Any]:
    points = [ModbusPoint.model_validate(p) for p in point_map()]
    top = max(p.address + p.width for p in points)
    result: dict[str, Any] = {
        "points": len(points),
        "ranges": [f"holding {start}.. ({n} points)" for start, n in zip(RANGES, POINTS,
                                                                         strict=True)],
        "variants": {},
    }
    counter = _RequestCounter()
    server, port = await _serve(counter, top + 16)
    try:
        variants: dict[str, dict[str, Any]] = {
            DEFAULT_VARIANT: {},
            "max_gap 10": {"max_gap": 10},
            "max_gap 0": {"max_gap": 0},
            "one_request_per_point": {"one_request_per_point": True},
        }
        for name, overrides in variants.items():
            conn = ModbusConnection.model_validate({"host": HOST, "port": port, **overrides})
            row = planned(conn, points)
            row.update(await _live(port, counter, cycles, **overrides))
            result["variants"][name] = row
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    default = result["variants"][DEFAULT_VARIANT]
    per_point = result["variants"]["one_request_per_point"]
    result["default_max_gap"] = DEFAULT_MAX_GAP
    result["plan_requests"] = default["requests"]
    result["minimum_requests"] = default["minimum_requests"]
    result["live_requests_per_cycle"] = default["server_requests_per_cycle"]
    result["coalescing_speedup"] = per_point["cycle_ms"] / default["cycle_ms"]
    return result


def run(quick: bool) -> dict[str, Any]:
    """Figure 1, with its own in-process server on a free port (no simulator needed)."""
    return asyncio.run(_measure(cycles=3 if quick else 20))
