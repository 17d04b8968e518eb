"""A small MTConnect agent (HTTP `/probe`, `/current`, `/sample`) in front of `MachineModel`s.

Why a home-made agent instead of cppagent: the gateway's tests need to *cause* an agent
restart (new instanceId) and a buffer overrun on demand, over a real socket, with a clock
the test controls. The server is deliberately small (HTTP/1.1 with keep-alive, GET only,
no streaming `interval`), and it encodes the documents by hand, independently of the
adapter's parser, so a mistake on either side shows up as a disagreement.

Observations are generated lazily, like the Modbus simulator's registers: when a request
arrives, the model is sampled on a fixed grid (`refresh_interval`) from the last tick up
to now, and every data item whose value changed gets the next sequence number. An idle
agent costs nothing; a buffer of `buffer_size` observations (a ring, as in cppagent) makes
`from` older than `firstSequence` answer OUT_OF_RANGE, which is what an overrun looks like.

Machines sharing a host and port become devices of one agent (device name = asset id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape, quoteattr

from simulators.lifecycle import SimulatorHandle
from simulators.machine import MachineModel, MachineSnapshot
from simulators.standalone import machine_models, serve_until_interrupted, standalone_parser

__all__ = [
    "DATA_ITEMS",
    "AgentSimulator",
    "SimulatedAgent",
    "main",
    "serve_agents",
    "start_for_gateway",
]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TICKS = 2000  # per request: a client away for hours gets the recent past, not a stall
_MAX_REQUEST = 16 * 1024


@dataclass(frozen=True)
class ItemSpec:
    id: str
    type: str
    category: str
    component: str  # component element name: Device, Controller, Path, Rotary, Coolant, Door
    sub_type: str | None = None
    units: str | None = None


DATA_ITEMS: tuple[ItemSpec, ...] = (
    ItemSpec("avail", "AVAILABILITY", "EVENT", "Device"),
    ItemSpec("estop", "EMERGENCY_STOP", "EVENT", "Controller"),
    ItemSpec("mode", "CONTROLLER_MODE", "EVENT", "Controller"),
    ItemSpec("system", "SYSTEM", "CONDITION", "Controller"),
    ItemSpec("exec", "EXECUTION", "EVENT", "Path"),
    ItemSpec("program", "PROGRAM", "EVENT", "Path", "MAIN"),
    ItemSpec("partcount", "PART_COUNT", "EVENT", "Path", "ALL"),
    ItemSpec("badcount", "PART_COUNT", "EVENT", "Path", "BAD"),
    ItemSpec("Fact", "PATH_FEEDRATE", "SAMPLE", "Path", "ACTUAL", "MILLIMETER/SECOND"),
    ItemSpec("cycletime", "PROCESS_TIMER", "SAMPLE", "Path", "PROCESS", "SECOND"),
    ItemSpec("Srpm", "ROTARY_VELOCITY", "SAMPLE", "Rotary", "ACTUAL", "REVOLUTION/MINUTE"),
    ItemSpec("Sload", "LOAD", "SAMPLE", "Rotary", None, "PERCENT"),
    ItemSpec("Stemp", "TEMPERATURE", "SAMPLE", "Rotary", None, "CELSIUS"),
    ItemSpec("coolant_temp", "TEMPERATURE", "SAMPLE", "Coolant", None, "CELSIUS"),
    ItemSpec("door", "DOOR_STATE", "EVENT", "Door"),
)
"""The simulated device's data items: ids are what /sample carries (README of mtconnect)."""

Value = tuple[str, str, str]  # (text, condition level or "", native code)


def snapshot_values(snap: MachineSnapshot) -> dict[str, Value]:
    """Every data item's observed value for one snapshot, as MTConnect words."""
    alarm = ("Fault", str(snap.alarm_code)) if snap.alarm_code else ("Normal", "")

    def ev(text: object) -> Value:
        return (str(text), "", "")

    return {
        "avail": ev(snap.availability.value.upper()),
        "estop": ev("TRIGGERED" if snap.emergency_stop else "ARMED"),
        "mode": ev("MANUAL_DATA_INPUT" if snap.controller_mode.value == "mdi"
                   else snap.controller_mode.value.upper()),
        "system": (snap.alarm_text if snap.alarm_code else "", alarm[0], alarm[1]),
        "exec": ev(snap.execution.value.upper()),
        "program": ev(snap.program),
        "partcount": ev(snap.part_count),
        "badcount": ev(snap.bad_part_count),
        "Fact": ev(round(snap.feed_rate / 60.0, 3)),  # the model speaks mm/min
        "cycletime": ev(snap.last_cycle_time),
        "Srpm": ev(snap.spindle_speed),
        "Sload": ev(snap.spindle_load),
        "Stemp": ev(snap.spindle_temperature),
        "coolant_temp": ev(snap.coolant_temperature),
        "door": ev("CLOSED" if snap.door_closed else "OPEN"),
    }


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _element(type_: str) -> str:
    return "".join(p.capitalize() for p in type_.split("_"))


@dataclass
class _Obs:
    sequence: int
    item: ItemSpec
    ts: str
    value: Value


class SimulatedAgent:
    """One device's buffer and sequence numbers; `restart()` plays an agent restart."""

    def __init__(self, model: MachineModel, *, buffer_size: int = 131072,
                 refresh_interval: float = 0.1,
                 clock: Callable[[], datetime] | None = None) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        self.model = model
        self.name = model.asset
        self.uuid = f"sim-{model.asset}"
        self.buffer_size = buffer_size
        self.interval = timedelta(seconds=refresh_interval)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.instance_id = int(time.time()) * 100 + self.restarts
        self.sequence = 1  # the next sequence number to assign
        self.buffer: deque[_Obs] = deque(maxlen=self.buffer_size)
        self.latest: dict[str, _Obs] = {}
        self.tick: int | None = None
        self.advance()

    def restart(self) -> None:
        """New instanceId, sequence back to 1, buffer emptied: what an agent restart does."""
        self.restarts += 1
        self._start()

    @property
    def first_sequence(self) -> int:
        return self.buffer[0].sequence if self.buffer else self.sequence

    @property
    def last_sequence(self) -> int:
        return self.sequence - 1

    def _record(self, at: datetime) -> None:
        values = snapshot_values(self.model.snapshot(at))
        stamp = _ts(at)
        for spec in DATA_ITEMS:
            v = values[spec.id]
            old = self.latest.get(spec.id)
            if old is not None and old.value == v:
                continue
            obs = _Obs(self.sequence, spec, stamp, v)
            self.sequence += 1
            self.buffer.append(obs)
            self.latest[spec.id] = obs

    def advance(self) -> None:
        """Sample the model on the time grid up to now (at most `_MAX_TICKS` ticks)."""
        now = self.clock()
        if not self.interval:
            self._record(now)
            return
        tick = (now - _EPOCH) // self.interval
        first = tick if self.tick is None else max(self.tick + 1, tick - _MAX_TICKS + 1)
        for t in range(first, tick + 1):
            self._record(_EPOCH + t * self.interval)
        self.tick = tick

    def flood(self, count: int) -> None:
        """Append `count` observations at once (tests: overrun the buffer deterministically)."""
        spec = next(s for s in DATA_ITEMS if s.id == "cycletime")
        stamp = _ts(self.clock())
        for i in range(count):
            obs = _Obs(self.sequence, spec, stamp, (f"{i % 997}.5", "", ""))
            self.sequence += 1
            self.buffer.append(obs)
            self.latest[spec.id] = obs


def _header(agents: Sequence[SimulatedAgent], doc: str, extra: str = "") -> str:
    a = agents[0]
    return (f'<Header creationTime="{_ts(datetime.now(UTC))}" sender="edge-sim" '
            f'instanceId="{a.instance_id}" version="2.0.0" bufferSize="{a.buffer_size}"'
            f"{extra}/>")


def _doc(kind: str, body: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnect{kind} '
            f'xmlns="urn:mtconnect.org:MTConnect{kind}:2.0">{body}</MTConnect{kind}>')


def probe_document(agents: Sequence[SimulatedAgent]) -> str:
    devices = []
    for a in agents:
        comps: dict[str, list[ItemSpec]] = {}
        for s in DATA_ITEMS:
            comps.setdefault(s.component, []).append(s)

        def items(specs: list[ItemSpec]) -> str:
            out = []
            for s in specs:
                attrs = f'id="{s.id}" type="{s.type}" category="{s.category}"'
                if s.sub_type:
                    attrs += f' subType="{s.sub_type}"'
                if s.units:
                    attrs += f' units="{s.units}"'
                out.append(f"<DataItem {attrs}/>")
            return "<DataItems>" + "".join(out) + "</DataItems>"

        path = f'<Path id="path1" name="path">{items(comps["Path"])}</Path>'
        controller = (f'<Controller id="cont" name="controller">{items(comps["Controller"])}'
                      f"<Components>{path}</Components></Controller>")
        rotary = f'<Rotary id="spindle" name="C">{items(comps["Rotary"])}</Rotary>'
        axes = f'<Axes id="axes" name="base"><Components>{rotary}</Components></Axes>'
        coolant = f'<Coolant id="coolant" name="coolant">{items(comps["Coolant"])}</Coolant>'
        door = f'<Door id="door1" name="door">{items(comps["Door"])}</Door>'
        systems = f'<Systems id="systems"><Components>{coolant}</Components></Systems>'
        devices.append(
            f"<Device id={quoteattr(a.uuid)} uuid={quoteattr(a.uuid)} name={quoteattr(a.name)}>"
            f"<Description manufacturer=\"edge-gateway\" model=\"simulated CNC\"/>"
            f"{items(comps['Device'])}<Components>{axes}{controller}{systems}{door}"
            f"</Components></Device>")
    return _doc("Devices", _header(agents, "Devices") + "<Devices>" + "".join(devices)
                + "</Devices>")


def _streams(agent: SimulatedAgent, observations: list[_Obs]) -> str:
    by_comp: dict[str, dict[str, list[str]]] = {}
    for o in observations:
        s = o.item
        text, level, code = o.value
        if s.category == "CONDITION":
            group = "Condition"
            attrs = (f'dataItemId="{s.id}" sequence="{o.sequence}" timestamp="{o.ts}" '
                     f'type="{s.type}"')
            if code:
                attrs += f" nativeCode={quoteattr(code)}"
            xml = f"<{level} {attrs}>{escape(text)}</{level}>" if text else f"<{level} {attrs}/>"
        else:
            group = "Samples" if s.category == "SAMPLE" else "Events"
            tag = _element(s.type)
            attrs = f'dataItemId="{s.id}" sequence="{o.sequence}" timestamp="{o.ts}"'
            if s.sub_type:
                attrs += f' subType="{s.sub_type}"'
            xml = f"<{tag} {attrs}>{escape(text)}</{tag}>"
        by_comp.setdefault(s.component, {}).setdefault(group, []).append(xml)
    comps = "".join(
        f'<ComponentStream component="{c}" componentId="{c.lower()}">'
        + "".join(f"<{g}>{''.join(v)}</{g}>" for g, v in groups.items())
        + "</ComponentStream>"
        for c, groups in by_comp.items())
    return (f"<DeviceStream name={quoteattr(agent.name)} uuid={quoteattr(agent.uuid)}>"
            f"{comps}</DeviceStream>")


def error_document(agent: SimulatedAgent | None, code: str, text: str) -> str:
    head = _header([agent], "Error") if agent else ""
    return _doc("Error", f'{head}<Errors><Error errorCode="{code}">{escape(text)}'
                         "</Error></Errors>")


class AgentSimulator(SimulatorHandle):
    """Running agents; `agents[asset]` to restart or flood one, `url(asset)` to reach it."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.agents: dict[str, SimulatedAgent] = {}
        self.endpoints: dict[str, tuple[str, int]] = {}
        self.requests = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    def url(self, asset: str) -> str:
        host, port = self.endpoints[asset]
        return f"http://{host}:{port}"

    def port(self, asset: str) -> int:
        return self.endpoints[asset][1]

    async def aclose(self) -> None:
        servers, self.servers = self.servers, []
        for s in servers:
            s.close()
        for w in list(self.writers):
            w.close()
        if self.tasks:  # closed sockets end the handlers; cancel only what lingers
            _done, lingering = await asyncio.wait(list(self.tasks), timeout=1)
            for t in lingering:
                t.cancel()
        for s in servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await s.wait_closed()

    def respond(self, group: list[SimulatedAgent], target: str) -> tuple[int, str]:
        """(status, XML) for one GET; the whole HTTP side is in `_serve`."""
        self.requests += 1
        parts = urlsplit(target)
        segs = [unquote(s) for s in parts.path.split("/") if s]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        agents = group
        if len(segs) == 2:
            agents = [a for a in group if segs[0] in (a.name, a.uuid)]
            if not agents:
                return 404, error_document(group[0], "NO_DEVICE", f"no device {segs[0]!r}")
            segs = segs[1:]
        request = segs[0] if segs else "probe"
        if request == "probe":
            return 200, probe_document(agents)
        if request not in ("current", "sample"):
            return 400, error_document(group[0], "UNSUPPORTED", f"unsupported {request!r}")
        for a in agents:
            a.advance()
        if request == "current":
            streams = [(a, sorted(a.latest.values(), key=lambda o: o.sequence)) for a in agents]
            return 200, self._streams_doc(agents, streams)
        if len(agents) != 1:
            return 400, error_document(group[0], "UNSUPPORTED",
                                       "sample needs a device in the path on this agent")
        a = agents[0]
        try:
            start = int(query.get("from", a.first_sequence))
            count = int(query.get("count", 100))
        except ValueError:
            return 400, error_document(a, "INVALID_REQUEST", "from/count must be integers")
        if count < 1:
            return 400, error_document(a, "OUT_OF_RANGE", "count must be >= 1")
        if start < a.first_sequence or start > a.sequence:
            return 400, error_document(
                a, "OUT_OF_RANGE",
                f"'from' must be between {a.first_sequence} and {a.sequence}")
        begin = start - a.first_sequence
        chosen = [a.buffer[i] for i in range(begin, min(len(a.buffer), begin + count))]
        nxt = chosen[-1].sequence + 1 if chosen else start
        return 200, self._streams_doc([a], [(a, chosen)], nxt)

    @staticmethod
    def _streams_doc(agents: list[SimulatedAgent], streams: list[tuple[SimulatedAgent,
                     list[_Obs]]], nxt: int | None = None) -> str:
        a = agents[0]
        extra = (f' firstSequence="{a.first_sequence}" lastSequence="{a.last_sequence}" '
                 f'nextSequence="{a.sequence if nxt is None else nxt}"')
        body = "".join(_streams(agent, obs) for agent, obs in streams)
        return _doc("Streams", _header(agents, "Streams", extra) + f"<Streams>{body}</Streams>")

    async def _serve(self, group: list[SimulatedAgent], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > _MAX_REQUEST:
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = [*lines[0].split(" "), "", "", ""][:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in lines[1:] if ln)}
                if method not in ("GET", "HEAD"):
                    status, body = 405, error_document(group[0], "UNSUPPORTED", "GET only")
                else:
                    status, body = self.respond(group, target)
                data = body.encode()
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                          405: "Method Not Allowed"}[status]
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml; charset=utf-8\r\n"
                    f"Content-Length: {len(data)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                    + (b"" if method == "HEAD" else data))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the simulator is closing
        finally:
            if task is not None:
                self.tasks.discard(task)
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve_agents(machines: Sequence[tuple[MachineModel, str, int]], *,
                       buffer_size: int = 131072, refresh_interval: float = 0.1,
                       clock: Callable[[], datetime] | None = None) -> AgentSimulator:
    """Serve (model, host, port) triples; machines on one host/port share one agent.

    Port 0 picks a free port (read it back with `url(asset)`). Raises OSError when a port
    cannot be bound, ValueError for an asset listed twice.
    """
    sim = AgentSimulator()
    groups: dict[tuple[str, int], list[SimulatedAgent]] = {}
    for model, host, port in machines:
        if model.asset in sim.agents:
            raise ValueError(f"asset {model.asset!r} listed twice")
        agent = SimulatedAgent(model, buffer_size=buffer_size,
                               refresh_interval=refresh_interval, clock=clock)
        sim.agents[model.asset] = agent
        groups.setdefault((host, port), []).append(agent)
    try:
        for (host, port), group in groups.items():
            def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                        g: list[SimulatedAgent] = group) -> Any:
                return sim._serve(g, r, w)

            server = await asyncio.start_server(handler, host, port)
            sim.servers.append(server)
            bound = server.sockets[0].getsockname()[1]
            for a in group:
                sim.endpoints[a.name] = (host, bound)
                log.info("simulated machine %s on mtconnect agent http://%s:%d/%s",
                         a.name, host, bound, a.name)
    except BaseException:
        await sim.aclose()
        raise
    return sim


async def start_for_gateway(machines: list[tuple[str, Any, MachineModel]]) -> AgentSimulator:
    """The `simulate: true` starter for adapter type `mtconnect` (edge/daemon/simulation.py).

    Each machine's agent listens where its `connection.url` points.
    """
    triples = []
    for _asset, settings, model in machines:
        conn = settings.connection
        triples.append((model, conn.host, conn.port))
    return await serve_agents(triples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = standalone_parser(
        prog="python -m simulators.mtconnect_agent",
        description="A simulated CNC machine behind a small MTConnect agent",
        port=5000, asset="sim-1")
    parser.add_argument("--buffer-size", type=int, default=131072)
    args = parser.parse_args(argv)
    [model] = machine_models(args)
    serve_until_interrupted(lambda: serve_agents([(model, args.host, args.port)],
                                                 buffer_size=args.buffer_size))


if __name__ == "__main__":
    main()
