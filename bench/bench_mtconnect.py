"""MTConnect figures (printed, not asserted): `python bench/bench_mtconnect.py`.

1. `/sample` streaming: observations/s the agent adapter ingests from the agent simulator
   over real HTTP on 127.0.0.1, pages of `count` observations, the whole path included
   (HTTP, safe XML parse, normalization into Samples). The simulator's buffer is filled
   first with a fast simulated clock, so the figure is the adapter's, not the machine's.
2. SHDR: lines/s parsed from the OKUMA recording (tests/fixtures/mtconnect-cppagent), parser +
   normalizer only (no socket), and end to end over TCP from the replayer at unlimited speed.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.base import AdapterContext  # noqa: E402
from adapters.mtconnect.agent import MtconnectAgentAdapter  # noqa: E402
from adapters.mtconnect.settings import MtconnectAgentSettings, ShdrSettings  # noqa: E402
from adapters.mtconnect.shdr import ShdrAdapter  # noqa: E402
from simulators.machine import MachineModel  # noqa: E402
from simulators.mtconnect_agent import serve_agents  # noqa: E402
from simulators.shdr_replay import replay  # noqa: E402

MATERIAL = ROOT / "tests" / "fixtures" / "mtconnect-cppagent"  # vendored, see its README


async def bench_agent(total: int = 200_000, count: int = 1000) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    now = [start]
    model = MachineModel("bench", seed=1, time_scale=1.0, start=start)
    sim = await serve_agents([(model, "127.0.0.1", 0)], buffer_size=total + 1000,
                             refresh_interval=0, clock=lambda: now[0])
    settings = MtconnectAgentSettings.model_validate(
        {"connection": {"url": sim.url("bench"), "count": count}})
    a = MtconnectAgentAdapter(AdapterContext("bench", poll_interval=0.01), settings)
    await a.connect()
    it = aiter(a.stream())
    await anext(it)  # /current
    agent = sim.agents["bench"]
    agent.flood(total)
    begin, samples, obs0 = time.perf_counter(), 0, a.observations
    while a.next_sequence is not None and a.next_sequence <= agent.last_sequence:
        samples += len(await anext(it))
    dt = time.perf_counter() - begin
    n = a.observations - obs0
    print(f"mtconnect /sample: {n} observations in {dt:.2f} s = {n / dt:,.0f} obs/s "
          f"({a.pages} pages of <= {count}, {samples} samples)")
    await a.aclose()
    await sim.aclose()


def bench_shdr_parse(path: Path, rounds: int = 5) -> None:
    lines = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").splitlines()
    settings = ShdrSettings.model_validate({"connection": {
        "host": "127.0.0.1", "device_model": str(MATERIAL / "demo_Devices.xml"),
        "device": "OKUMA"}})
    best = float("inf")
    produced = 0
    for _ in range(rounds):
        a = ShdrAdapter(AdapterContext("okuma"), settings)
        t = time.perf_counter()
        produced = len(a.parse_lines(lines))
        best = min(best, time.perf_counter() - t)
    print(f"shdr parse (okuma.txt, {len(lines)} lines -> {produced} samples): "
          f"{len(lines) / best:,.0f} lines/s (best of {rounds})")


async def bench_shdr_tcp(path: Path) -> None:
    server = await replay(path, port=0, speed=1e9)
    settings = ShdrSettings.model_validate({"connection": {
        "host": "127.0.0.1", "port": server.port(),
        "device_model": str(MATERIAL / "demo_Devices.xml"), "device": "OKUMA"}})
    a = ShdrAdapter(AdapterContext("okuma"), settings)
    t = time.perf_counter()
    await a.connect()
    async for _batch in a.stream():
        if a.lines >= 10_770:
            break
    dt = time.perf_counter() - t
    print(f"shdr over TCP (replayer -> adapter): {a.lines} lines in {dt:.3f} s = "
          f"{a.lines / dt:,.0f} lines/s")
    await a.aclose()
    await server.aclose()


def main() -> None:
    asyncio.run(bench_agent())
    rec = MATERIAL / "okuma.txt.gz"
    bench_shdr_parse(rec)
    asyncio.run(bench_shdr_tcp(rec))


if __name__ == "__main__":
    main()
