"""SHDR over TCP (port 7878 style): a recorded file replayed, or a `MachineModel` served live.

Two servers, one protocol:

- `ShdrReplayer` serves a recording (e.g. the OKUMA one in tests/fixtures/mtconnect-cppagent)
  at real or accelerated speed. Every client gets the whole file from its first line, so a test sees
  exactly the recording. Delays come from the recorded timestamps: a gap is
  `(t - t_prev) / speed`; a timestamp that goes *backwards* (a new run on its own clock)
  or jumps forward by more than `max_gap` recorded seconds is replayed after `run_gap`
  instead, so a recording of separate runs does not stall the replay for half an hour.
  Multiline asset blocks are sent whole, with the line that opens them.
- `serve_shdr` / `start_for_gateway` serve `MachineModel`s: on connect the full state,
  then the data items that changed, sampled on a `refresh_interval` grid; alarms as an
  SHDR condition (`system|FAULT|<code>|||"<text>"`, the text quoted and `\\`, `"`, `|`
  escaped with a backslash, which the reference agent reads back whole) and a tool as a
  multiline asset.

Both answer `* PING` with `* PONG <heartbeat_ms>`, as MTConnect adapters do. Only the
standard library and `models`/`simulators.machine` are imported (simulators never import
adapters/), so the timestamp parsing here is deliberately separate from the adapter's.

CLI: `python -m simulators.shdr_replay FILE --port 7878 --speed 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from simulators.lifecycle import SimulatorHandle
from simulators.machine import MachineModel, MachineSnapshot

__all__ = [
    "Record",
    "ShdrReplayer",
    "ShdrServer",
    "load_recording",
    "main",
    "serve_shdr",
    "start_for_gateway",
]

log = logging.getLogger(__name__)

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _recorded_time(line: str) -> datetime | None:
    m = _TS.match(line)
    if m is None:
        return None
    micro = int((m.group(2) or "0")[:6].ljust(6, "0"))
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC, microsecond=micro)


@dataclass(frozen=True)
class Record:
    """One line as sent (with its multiline body), and the recorded delay before it."""

    text: str
    delay: float  # recorded seconds since the previous record (already clamped)


def load_recording(path: Path | str, *, max_gap: float = 10.0,
                   run_gap: float = 0.5) -> list[Record]:
    """Split a recording into records; backward or huge forward jumps become `run_gap`."""
    records: list[Record] = []
    prev: datetime | None = None
    marker: str | None = None
    block: list[str] = []
    data = Path(path).read_bytes()
    if Path(path).suffix == ".gz":  # the vendored test recording is stored compressed
        data = gzip.decompress(data)
    for raw in data.decode("utf-8", errors="replace").splitlines():
        if marker is not None:
            block.append(raw)
            if raw.strip() == marker:
                records[-1] = Record("\n".join(block), records[-1].delay)
                marker, block = None, []
            continue
        if not raw.strip():
            continue
        t = _recorded_time(raw)
        delay = 0.0
        if t is not None:
            if prev is not None:
                delta = (t - prev).total_seconds()
                delay = delta if 0 <= delta <= max_gap else run_gap
            prev = t
        records.append(Record(raw, delay))
        m = re.search(r"\|(--multiline--\w+)\s*$", raw)
        if m and "@" in raw:
            marker, block = m.group(1), [raw]
    return records


class _Server(SimulatorHandle):
    """Shared TCP plumbing: client registry, PING/PONG, orderly close."""

    def __init__(self, heartbeat_ms: int) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pings = 0
        self.endpoints: dict[str, tuple[str, int]] = {}
        self.answer_pings = True

    def port(self, key: str = "") -> int:
        if key:
            return self.endpoints[key][1]
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def _listen(self, host: str, port: int,
                      feeder: Callable[[asyncio.StreamWriter], Any]) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.add(writer)
            feed = asyncio.ensure_future(feeder(writer))
            try:
                while line := await reader.readline():
                    if line.strip().upper() == b"* PING" and self.answer_pings:
                        self.pings += 1
                        writer.write(f"* PONG {self.heartbeat_ms}\n".encode())
                        await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                feed.cancel()
                with contextlib.suppress(BaseException):
                    await feed
                self.writers.discard(writer)
                writer.close()

        def spawn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(handle(r, w))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        server = await asyncio.start_server(spawn, host, port)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def drop_clients(self) -> None:
        """Close every client connection (tests: the device goes away)."""
        for w in list(self.writers):
            w.close()

    async def aclose(self) -> None:
        servers, self.servers = self.servers, []
        for s in servers:
            s.close()
        self.drop_clients()
        for t in list(self.tasks):
            t.cancel()
        for t in list(self.tasks):
            with contextlib.suppress(BaseException):
                await t


class ShdrReplayer(_Server):
    """Serves a recording; each client gets it from the start (`loop` to repeat)."""

    def __init__(self, records: list[Record], *, speed: float = 1.0, loop: bool = False,
                 heartbeat_ms: int = 10000) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        super().__init__(heartbeat_ms)
        self.records = records
        self.speed = speed
        self.loop = loop
        self.finished = asyncio.Event()

    async def start(self, host: str = "127.0.0.1", port: int = 7878) -> ShdrReplayer:
        await self._listen(host, port, self._feed)
        return self

    async def _feed(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time()
            for r in self.records:
                due += r.delay / self.speed
                if (wait := due - loop.time()) > 0:
                    await writer.drain()
                    await asyncio.sleep(wait)
                writer.write(r.text.encode() + b"\n")
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
            await writer.drain()
            self.finished.set()
            if not self.loop:
                return


async def replay(path: Path | str, host: str = "127.0.0.1", port: int = 7878, *,
                 speed: float = 1.0, loop: bool = False, max_gap: float = 10.0,
                 heartbeat_ms: int = 10000) -> ShdrReplayer:
    """Start serving a recorded file; port 0 picks a free port (`.port()`)."""
    records = load_recording(path, max_gap=max_gap)
    return await ShdrReplayer(records, speed=speed, loop=loop,
                              heartbeat_ms=heartbeat_ms).start(host, port)


# --- live machines ---------------------------------------------------------------------

TOOL_ASSET = ('<CuttingTool toolId="T1" serialNumber="1" assetId="T1.1"><CuttingToolLifeCycle>'
              '<ToolLife type="PART_COUNT" countDirection="UP" initial="0" limit="500">0'
              "</ToolLife></CuttingToolLifeCycle></CuttingTool>")


def shdr_values(snap: MachineSnapshot) -> dict[str, str]:
    """The SHDR keys of a simulated machine (README of adapters/mtconnect lists them)."""
    return {
        "avail": snap.availability.value.upper(),
        "estop": "TRIGGERED" if snap.emergency_stop else "ARMED",
        "mode": ("MANUAL_DATA_INPUT" if snap.controller_mode.value == "mdi"
                 else snap.controller_mode.value.upper()),
        "execution": snap.execution.value.upper(),
        "program": snap.program,
        "part_count": str(snap.part_count),
        "bad_part_count": str(snap.bad_part_count),
        "spindle_speed": f"{snap.spindle_speed:g}",
        "spindle_load": f"{snap.spindle_load:g}",
        "feed_rate": f"{snap.feed_rate:g}",
        "spindle_temperature": f"{snap.spindle_temperature:g}",
        "coolant_temperature": f"{snap.coolant_temperature:g}",
        "door": "CLOSED" if snap.door_closed else "OPEN",
    }


def _quoted(text: str) -> str:
    """An SHDR text field that may hold `|` and `"`: an agent reads it back as sent (but for
    spaces before the closing quote, which it drops)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("|", "\\|")
    return f'"{escaped}"'


def _condition(snap: MachineSnapshot) -> str:
    if snap.alarm_code:
        return f"system|FAULT|{snap.alarm_code}|||{_quoted(snap.alarm_text)}"
    return "system|NORMAL||||"


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ShdrServer(_Server):
    """Live SHDR of `MachineModel`s, one port per machine."""

    def __init__(self, refresh_interval: float, heartbeat_ms: int,
                 clock: Callable[[], datetime]) -> None:
        super().__init__(heartbeat_ms)
        self.refresh_interval = refresh_interval
        self.clock = clock

    async def add(self, model: MachineModel, host: str, port: int) -> None:
        async def feed(writer: asyncio.StreamWriter) -> None:
            now = self.clock()
            snap = model.snapshot(now)
            sent = shdr_values(snap)
            cond = _condition(snap)
            ts = _stamp(now)
            writer.write(("|".join([ts, *(f"{k}|{v}" for k, v in sent.items())]) + "\n"
                          f"{ts}|{cond}\n"
                          f"{ts}|@ASSET@|T1.1|CuttingTool|--multiline--SIM1\n{TOOL_ASSET}\n"
                          "--multiline--SIM1\n").encode())
            await writer.drain()
            step = timedelta(seconds=self.refresh_interval)
            tick = (now - _EPOCH) // step
            while True:
                tick += 1
                at = _EPOCH + tick * step
                wait = (at - self.clock()).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
                snap = model.snapshot(at)
                values = shdr_values(snap)
                changed = [f"{k}|{v}" for k, v in values.items() if sent.get(k) != v]
                sent = values
                ts = _stamp(at)
                out = ""
                if changed:
                    out += "|".join([ts, *changed]) + "\n"
                if (c := _condition(snap)) != cond:
                    cond = c
                    out += f"{ts}|{c}\n"
                if out:
                    writer.write(out.encode())
                    await writer.drain()

        bound = await self._listen(host, port, feed)
        self.endpoints[model.asset] = (host, bound)
        log.info("simulated machine %s on shdr tcp %s:%d", model.asset, host, bound)


async def serve_shdr(machines: Sequence[tuple[MachineModel, str, int]], *,
                     refresh_interval: float = 0.1, heartbeat_ms: int = 10000,
                     clock: Callable[[], datetime] | None = None) -> ShdrServer:
    """Serve (model, host, port) triples as live SHDR; port 0 picks a free port."""
    server = ShdrServer(refresh_interval, heartbeat_ms, clock or (lambda: datetime.now(UTC)))
    try:
        for model, host, port in machines:
            await server.add(model, host, port)
    except BaseException:
        await server.aclose()
        raise
    return server


async def start_for_gateway(machines: list[tuple[str, Any, MachineModel]]) -> ShdrServer:
    """The `simulate: true` starter for adapter type `shdr` (edge/daemon/simulation.py)."""
    return await serve_shdr([(model, settings.connection.host, settings.connection.port)
                             for _asset, settings, model in machines])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.shdr_replay",
                                     description="Replay a recorded SHDR file over TCP")
    parser.add_argument("file", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--speed", type=float, default=1.0, help="10 = ten times faster")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    parser.add_argument("--max-gap", type=float, default=10.0,
                        help="recorded seconds above which a gap is shortened")
    parser.add_argument("--heartbeat", type=int, default=10000, help="PONG interval, ms")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        async with await replay(args.file, args.host, args.port, speed=args.speed,
                                loop=args.loop, max_gap=args.max_gap,
                                heartbeat_ms=args.heartbeat):
            log.info("replaying %s on %s:%d at x%g", args.file, args.host, args.port,
                     args.speed)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
