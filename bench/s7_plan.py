"""S7 requests per poll cycle for a 500-point map against the minimum, and reads/s against
python-snap7's bare client, measured in the same run.

`python -m bench.s7_plan [--quick]` prints a table; `run()` returns the figures for
`bench/__main__.py`.

Like bench/modbus_plan.py: each S7 request is a round trip, so requests per cycle, not
points, bound a PLC's poll rate. The map has the shapes real PLC programs have: a dense
status DB of mixed types (bits, INT, DINT, REAL, LREAL, STRING[16], DTL), a process-value DB
of REALs with a reserved double word after every ten, and per-axis blocks of REALs
separated by 24 reserved bytes (wider than the default `max_gap` 16).

Figures, from the same map:

* `requests`: what plan.py decides for the PDU the server negotiated (python-snap7's server
  offers 480, an S7-1200's size) and, plan only, for 240 (S7-300) and 960 (S7-1500);
* `minimum_requests`: every distinct point byte packed back to back with one item header per
  request, a bound no plan can beat;
* live: what `S7Adapter.read_once()` sends against python-snap7's server, the variables the
  server answered (its read events, counted server-side) and the cycle time; next to it the
  plan without coalescing (`max_gap` 0, one variable per request: one request per range);
* ceiling: a bare `snap7.AsyncClient` on its own connection sending the identical requests
  (python-snap7's `S7Protocol.build_multi_read_request`, `iso_exchange_buffer`,
  `parse_response`; no values decoded), cycle for cycle interleaved with the adapter's so
  both see the same moments of a shared machine's load. The adapter's requests/s divided by
  the bare client's is the ratio that survives a change of machine; what it loses is the
  adapter's own work: splitting items, decoding every value, building samples.

The server runs in the bench process (python-snap7's server is threaded), so both the
adapter and the bare client share the GIL with it alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

from snap7.async_client import AsyncClient
from snap7.server import Server
from snap7.type import SrvArea

from adapters.base import AdapterContext
from adapters.s7.adapter import S7Adapter
from adapters.s7.plan import ReadPlan, minimum_requests, plan_reads
from adapters.s7.settings import S7Connection, S7Point, S7Settings

from .processes import HOST

STATUS_DB, PROCESS_DB, AXIS_DB = 100, 101, 102
_STATUS_TYPES = ("BOOL", "INT", "DINT", "REAL", "BOOL", "LREAL", "STRING", "DTL", "WORD")
DB_SIZE = 4096


def _status_block(count: int) -> list[dict[str, Any]]:
    """Mixed types packed densely; BOOLs four to a byte."""
    points: list[dict[str, Any]] = []
    offset = 0
    for dtype in itertools.cycle(_STATUS_TYPES):
        if len(points) >= count:
            break
        name = f"a{len(points):03d}"
        if dtype == "BOOL":
            for bit in range(min(4, count - len(points))):
                points.append({"name": f"a{len(points):03d}",
                               "address": f"DB{STATUS_DB}.DBX{offset}.{bit}"})
            offset += 2  # a BOOL group takes a word in a non-optimized DB
            continue
        letter = {"INT": "W", "WORD": "W", "DINT": "D", "REAL": "D"}.get(dtype, "B")
        p: dict[str, Any] = {"name": name, "address": f"DB{STATUS_DB}.DB{letter}{offset}",
                             "data_type": dtype}
        if dtype == "STRING":
            p["length"] = 16
        points.append(p)
        width = S7Point.model_validate(p).width
        offset += width + width % 2  # S7 aligns non-byte types on even offsets
    return points


def _reals(db: int, count: int, every: int, hole: int, prefix: str) -> list[dict[str, Any]]:
    points = []
    offset = 0
    for i in range(count):
        if i and i % every == 0:
            offset += hole
        points.append({"name": f"{prefix}{i:03d}", "address": f"DB{db}.DBD{offset}",
                       "data_type": "REAL"})
        offset += 4
    return points


def point_map() -> list[dict[str, Any]]:
    """500 points: 200 status (DB100), 200 process values (DB101), 100 axis values (DB102)."""
    return (_status_block(200) + _reals(PROCESS_DB, 200, 10, 4, "b")
            + _reals(AXIS_DB, 100, 10, 24, "c"))


class _PlcUnderTest:
    """python-snap7's server with the three DBs, counting the variables it answers."""

    def __init__(self) -> None:
        self.server = Server(log=False)
        self.items = 0
        self.server.set_read_events_callback(self._count)
        for db in (STATUS_DB, PROCESS_DB, AXIS_DB):
            image = bytearray(DB_SIZE)
            for off in range(0, DB_SIZE - 4, 4):  # small finite REALs; STRING/DTL bad anyway
                image[off:off + 4] = (0x3F800000 + off).to_bytes(4, "big")
            self.server.register_area(SrvArea.DB, db, image)
        self.server.start_to(HOST, 0)
        assert self.server.server_socket is not None
        self.port = int(self.server.server_socket.getsockname()[1])

    def _count(self, _event: Any) -> None:
        self.items += 1


def _settings(port: int, **connection: Any) -> S7Settings:
    return S7Settings.model_validate(
        {"connection": {"host": HOST, "port": port, "timeout": 2.0, **connection},
         "points": point_map()})


async def _bare_cycle(client: AsyncClient, plan: ReadPlan) -> None:
    """The plan's requests with the bare library: encode, exchange, parse; no values."""
    for request in plan.requests:
        pdu = client.protocol.build_multi_read_request(
            [(int(it.area), it.db, it.start, it.size) for it in request.items])
        client.protocol.parse_response(bytes(await client.iso_exchange_buffer(bytearray(pdu))))


async def _live(plc: _PlcUnderTest, cycles: int, **connection: Any) -> dict[str, Any]:
    """Adapter cycles interleaved with bare-client cycles of the identical requests, so
    both see the same moments of a shared machine's load."""
    adapter = S7Adapter(AdapterContext(asset="s7-bench"), _settings(plc.port, **connection))
    bare = AsyncClient()
    await adapter.connect()
    await bare.connect(HOST, 0, 1, plc.port)
    try:
        await adapter.read_once()  # warm-up
        await _bare_cycle(bare, adapter.plan)
        requests = items = 0
        spent = bare_spent = 0.0
        for _ in range(cycles):
            items0 = plc.items
            t0 = time.perf_counter()
            await adapter.read_once()
            spent += time.perf_counter() - t0
            items += plc.items - items0
            requests += adapter.last_cycle_requests
            t0 = time.perf_counter()
            await _bare_cycle(bare, adapter.plan)
            bare_spent += time.perf_counter() - t0
    finally:
        await adapter.aclose()
        await bare.disconnect()
    return {
        "pdu": adapter.plan.pdu,
        "requests": len(adapter.plan.requests),
        "live_requests_per_cycle": requests / cycles,
        "server_items_per_cycle": items / cycles,
        "cycle_ms": spent / cycles * 1e3,
        "requests_per_s": requests / spent,
        "bare_requests_per_s": requests / bare_spent,
        "over_bare": bare_spent / spent,
    }


async def _measure(cycles: int) -> dict[str, Any]:
    points = [S7Point.model_validate(p) for p in point_map()]
    conn = S7Connection(host=HOST)
    result: dict[str, Any] = {
        "points": len(points),
        "one_request_per_point": len(points),
        "plans": {
            pdu: {"requests": len(plan_reads(points, conn, pdu).requests),
                  "minimum_requests": minimum_requests(points, pdu)}
            for pdu in (240, 480, 960)
        },
    }
    plc = _PlcUnderTest()
    try:
        result["default"] = await _live(plc, cycles)
        result["uncoalesced"] = await _live(plc, cycles, max_gap=0, max_items_per_request=1)
    finally:
        await asyncio.to_thread(plc.server.stop)
    d = result["default"]
    result["plan_requests"] = d["requests"]
    result["minimum_requests"] = minimum_requests(points, d["pdu"])
    result["coalescing_speedup"] = result["uncoalesced"]["cycle_ms"] / d["cycle_ms"]
    result["ceiling_reads_per_s"] = d["bare_requests_per_s"]
    result["adapter_over_ceiling"] = d["over_bare"]
    result["uncoalesced_over_ceiling"] = result["uncoalesced"]["over_bare"]
    return result


def run(quick: bool) -> dict[str, Any]:
    return asyncio.run(_measure(cycles=5 if quick else 200))


def table(r: dict[str, Any]) -> str:
    d, u = r["default"], r["uncoalesced"]
    rows = [
        f"S7 read plan, {r['points']} points (one request per point would be "
        f"{r['one_request_per_point']})",
        *(f"  PDU {pdu}: {p['requests']} requests per cycle, minimum {p['minimum_requests']}"
          for pdu, p in r["plans"].items()),
        f"  live (PDU {d['pdu']}): {d['live_requests_per_cycle']:.0f} requests, "
        f"{d['server_items_per_cycle']:.0f} variables answered, {d['cycle_ms']:.1f} ms per "
        f"cycle",
        f"  without coalescing (max_gap 0, 1 variable per request): "
        f"{u['live_requests_per_cycle']:.0f} requests, {u['cycle_ms']:.1f} ms per cycle "
        f"({r['coalescing_speedup']:.1f}x slower)",
        f"  adapter {d['requests_per_s']:,.0f} requests/s vs bare python-snap7 "
        f"{r['ceiling_reads_per_s']:,.0f} of the same requests: {r['adapter_over_ceiling']:.2f} "
        f"of the ceiling (the adapter also decodes 500 values per cycle); uncoalesced: "
        f"{r['uncoalesced_over_ceiling']:.2f}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.s7_plan", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
