"""Shared pieces of the end-to-end tests: a plant YAML, the gateway as a subprocess, its
logs, verified envelope bodies, and a TCP proxy that plays a network outage for real."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config.loader import MAX_FILE_BYTES
from edge.platform_kit.verifier import verify_envelope

ROOT = Path(__file__).resolve().parents[1]
POINTS = """
    points:
      - {name: execution, register: holding, address: 0, data_type: uint16,
         map: {0: ready, 1: active, 2: interrupted, 3: feed_hold, 4: stopped, 5: program_stopped,
               6: program_completed, 7: wait, 8: optional_stop}}
      - {name: controller_mode, register: holding, address: 1, data_type: uint16,
         map: {0: automatic, 1: manual, 2: mdi, 3: edit, 4: semi_automatic}}
      - {name: part_count, register: holding, address: 10, data_type: uint32}
      - {name: bad_part_count, register: holding, address: 12, data_type: uint32}
      - {name: spindle_speed, register: holding, address: 20, data_type: float32, unit: 1/min}
      - {name: program, register: holding, address: 40, data_type: string, length: 8}
"""
# a YAML "billion laughs": 700 bytes of text, 9**9 strings once aliases are expanded
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def huge_invalid_yaml() -> str:
    """Just under the loader's size limit, no alias, shallow: every limit passes, and each
    of its ~60,000 machines holds three schema errors the loader locates in the file
    (182,356 problems: ~12 s of CPU on a loaded 2-core host, several seconds on any; it was
    28-120 s before the locator composed the file once with libyaml)."""
    line = "  - {id: m%06d, adapter: modbus, connection: {host: h, port: 502}}\n"
    count = (MAX_FILE_BYTES - 100) // len(line % 0)
    return "machines:\n" + "".join(line % i for i in range(count))


def plant_yaml(
    state_dir: Path,
    sim_ports: list[int],
    broker_port: int,
    dead_port: int | None = None,
    destinations: str | None = None,
    gateway_extra: str = "",
) -> str:
    machines = ""
    for i, port in enumerate(sim_ports):
        machines += f"""
  - id: m{i + 1}
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: 0.2
    simulator: {{seed: {i + 1}, time_scale: 60}}
    connection: {{host: 127.0.0.1, port: {port}, timeout: 0.5}}
{POINTS}"""
    if dead_port is not None:
        machines += f"""
  - id: dead
    area: hall-1
    line: line-2
    adapter: modbus
    poll_interval: 0.2
    connection: {{host: 127.0.0.1, port: {dead_port}, timeout: 0.5}}
{POINTS}"""
    dests = destinations or f'  - {{id: local, url: "mqtt://127.0.0.1:{broker_port}"}}\n'
    # web port 0: tests run beside each other (and a `make demo`) without fighting over 8080
    web = "web: {port: 0}"
    return f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state_dir}, {web}{gateway_extra}}}
destinations:
{dests}machines:{machines}
"""


@contextlib.contextmanager
def small_disk(path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of `size_mib` MiB mounted at `path` for the test (a small eMMC/SD card);
    the test is skipped, with the reason, where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a {size_mib} MiB tmpfs (needs root): {run.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path, leave: int) -> Path:
    """Take space on `path`'s file system with one file until only `leave` bytes are free;
    delete the returned file to give the space back."""
    filler = path / "filler"
    take = shutil.disk_usage(path).free - leave
    with filler.open("ab") as fh:
        os.posix_fallocate(fh.fileno(), filler.stat().st_size, max(take, 1))
    return filler


def proxied_plant(
    tmp_path: Path,
    free_port: Callable[[], int],
    broker_port: int,
    outbox: str,
    *,
    machines: int = 1,
    gateway_extra: str = "",
    state_dir: Path | None = None,
) -> tuple[Path, TcpProxy]:
    """plant.yaml with one destination `local` reached through a (stopped) `TcpProxy` to
    `broker_port`, its `outbox` settings given as YAML flow-mapping items."""
    proxy_port = free_port()
    dest = f'  - {{id: local, url: "mqtt://127.0.0.1:{proxy_port}",\n     outbox: {{{outbox}}}}}\n'
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        plant_yaml(
            state_dir or tmp_path / "state",
            [free_port() for _ in range(machines)],
            proxy_port,
            destinations=dest,
            gateway_extra=gateway_extra,
        )
    )
    return plant, TcpProxy(proxy_port, broker_port)


def scripted_shift_plant(
    tmp_path: Path,
    broker_port: int,
    sim_port: int,
    shift: tuple[datetime, datetime],
    script: list[dict[str, Any]],
    poll: float,
) -> Path:
    """plant.yaml with one UTC shift `test` of [start, end) today and one simulated Modbus
    machine `m1` (ideal cycle 1 s) whose `script` is anchored at the shift start."""
    start, end = shift
    plant = tmp_path / "plant.yaml"
    state = tmp_path / "state"
    plant.write_text(f"""gateway: {{id: gw-1, site: plant-a, state_dir: {state}, web: {{port: 0}}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:{broker_port}"}}
shifts:
  timezone: UTC
  shifts:
    - {{name: test, start: "{start:%H:%M:%S}", end: "{end:%H:%M:%S}",
       days: [mon, tue, wed, thu, fri, sat, sun]}}
machines:
  - id: m1
    area: hall-1
    line: line-1
    adapter: modbus
    simulate: true
    poll_interval: {poll}
    ideal_cycle_time: 1.0
    simulator: {{start: "{start.isoformat()}", script: {json.dumps(script)}}}
    connection: {{host: 127.0.0.1, port: {sim_port}, timeout: 0.5}}
{POINTS}""")
    return plant


def validate(plant: Path) -> subprocess.CompletedProcess[str]:
    """`edge-gateway validate` as a user runs it (exit code, stdout, stderr)."""
    return cli("validate", str(plant))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`edge-gateway ARGS...` as a user runs it, to its end (exit code, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


class GatewayProcess:
    """`edge-gateway run` in a subprocess with JSON logs captured to a file."""

    def __init__(
        self,
        plant: Path,
        *extra: str,
        simulators: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        """`env`: extra environment, e.g. PYTHONPATH to a test's adapter plugin; `cwd`: the
        working directory (systemd's is `/`; paths in the YAML must not depend on it)."""
        self.plant = plant
        self.env = env or {}
        self.cwd = cwd
        self.log_path = plant.parent / "gateway.log"
        self.extra = (*(("--with-simulators",) if simulators else ()), *extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge.cli",
                    "--log-format",
                    "json",
                    "--log-level",
                    "debug",
                    "run",
                    "-c",
                    str(self.plant),
                    "--no-console",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop_timed(self, timeout: float) -> float:
        """SIGTERM, the clean exit (0) it must bring, and the seconds from the signal to the
        last `gateway_stopped` line: the product's stop, without the interpreter's teardown
        after it, which a loaded host stretches and no stop-time test is about."""
        sent = datetime.now(UTC)
        self.signal(signal.SIGTERM)
        assert self.wait(timeout=timeout) == 0
        stops = [datetime.fromisoformat(e["timestamp"]) for e in self.events("gateway_stopped")]
        assert stops and max(stops) > sent, "no gateway_stopped line after the SIGTERM"
        return (max(stops) - sent).total_seconds()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, and the clean exit (0) it must bring; killed if it does not come."""
        self.signal(signal.SIGTERM)
        try:
            assert self.wait(timeout=timeout) == 0
        finally:
            self.kill()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "non-json", "line": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]


def listens(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection on `port` now."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll `predicate` until it holds; an AssertionError naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(0.05)  # between looks at the condition, not a wait for it


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 10.0,
                what: str = "a condition") -> float:
    """`wait_for` inside an event loop: polls without blocking the loop under test; returns
    the seconds it took (recovery tests report them). `predicate` may be a coroutine
    function (a look that itself asks a device)."""
    t0 = time.monotonic()

    async def holds() -> bool:
        seen = predicate()
        return bool(await seen) if inspect.isawaitable(seen) else bool(seen)

    while not await holds():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)  # between looks at the condition, not a wait for it
    return time.monotonic() - t0


def stored(state_dir: Path) -> int:
    """Envelopes in the running gateway's outbox (read-only; WAL lets us read beside it)."""
    from edge.egress.outbox import FILENAME

    path = state_dir / FILENAME
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM envelopes").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being created
        return 0
    finally:
        conn.close()


def wait_for_offline_status(collector: Any, within: float = 10) -> None:
    """After a clean stop: the gateway's `offline` status, its last message, has reached
    `collector` (a conftest.Collector subscribed to it), so everything published before it
    on the same connection has too."""

    def arrived() -> bool:
        for m in collector.snapshot():
            if m.topic.endswith("/status"):
                with contextlib.suppress(ValueError):
                    if json.loads(m.payload).get("state") == "offline":
                        return True
        return False

    wait_for(arrived, within, "the offline status")


def verified_body(payload: bytes, jwks: dict[str, Any], topic: str) -> dict[str, Any]:
    data = json.loads(payload)
    if "signature" not in data:
        return data  # type: ignore[no-any-return]  # status messages are plain JSON
    return verify_envelope(data, jwks, topic=topic)


class TcpProxy:
    """Forwards 127.0.0.1:listen_port to target_port; `stop()` drops every connection, as a
    cable pulled between gateway and broker would, and refuses new ones until `start()`.
    `hold()` keeps what the connecting side sends (the connections stay up, the other way
    flows) until `release()`: a broker that has stopped acknowledging, say."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hold = threading.Event()

    def hold(self) -> None:
        self._hold.set()

    def release(self) -> None:
        self._hold.clear()

    def start(self) -> None:
        self._stop.clear()
        server = socket.create_server(("127.0.0.1", self.listen_port), reuse_port=True)
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self, server: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        server.setblocking(False)
        sel.register(server, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        held: dict[socket.socket, bytearray] = {}  # accepted socket -> bytes not yet forwarded
        while not self._stop.is_set():
            if not self._hold.is_set():
                for source, pending in held.items():
                    if pending and source in peers:
                        with contextlib.suppress(OSError):
                            peers[source].sendall(pending)
                    pending.clear()
            for key, _ in sel.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is server:
                    client, _addr = server.accept()
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                    for s in (client, upstream):
                        s.setblocking(False)
                        sel.register(s, selectors.EVENT_READ)
                    peers[client], peers[upstream] = upstream, client
                    held[client] = bytearray()
                    continue
                if sock not in peers:  # closed with its peer earlier in this same batch
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, ConnectionError):
                    data = b""
                if data and sock in held and (self._hold.is_set() or held[sock]):
                    held[sock] += data
                    continue
                if data:
                    with contextlib.suppress(OSError):
                        peers[sock].sendall(data)
                    continue
                other = peers.pop(sock)
                peers.pop(other, None)
                for s in (sock, other):
                    with contextlib.suppress(Exception):
                        sel.unregister(s)
                    s.close()
        for s in list(peers):
            with contextlib.suppress(Exception):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        sel.close()
        server.close()


def _demo_machines(meters: bool) -> tuple[str, ...]:
    import yaml

    plant = yaml.safe_load((ROOT / "config" / "demo-plant.yaml").read_text())
    return tuple(m["id"] for m in plant["machines"] if ("meter_for" in m) == meters)


DEMO_MACHINES = _demo_machines(meters=False)
"""Every production machine of config/demo-plant.yaml, in its order (no energy meters)."""
DEMO_METERS = _demo_machines(meters=True)
"""The demo's energy meters (`meter_for:`): devices without execution state or OEE."""


def demo_plant_on_free_ports(
    directory: Path, broker_url: str | None = None, gateway_extra: dict[str, Any] | None = None
) -> Path:
    """config/demo-plant.yaml with every simulated machine moved to a free port and the state
    in `directory`, so tests of the real demo plant run beside each other (and beside a
    `make demo`) without fighting over 5021, 4841, 1883..."""
    import yaml

    from adapters.contract import closed_port as find_free_port

    plant = yaml.safe_load((ROOT / "config" / "demo-plant.yaml").read_text())
    plant["gateway"]["state_dir"] = str(directory / "state")
    plant["gateway"]["web"] = {"port": 0}
    plant["gateway"].update(gateway_extra or {})
    for machine in plant["machines"]:
        conn = dict(machine["connection"])
        if "endpoint" in conn:
            conn["endpoint"] = f"opc.tcp://127.0.0.1:{find_free_port()}/"
        elif "url" in conn:
            conn["url"] = f"http://127.0.0.1:{find_free_port()}"
        else:
            conn["port"] = find_free_port()
        machine["connection"] = conn
    if broker_url is not None:
        plant["destinations"] = [{"id": "local", "url": broker_url}]
    path = directory / "demo-plant.yaml"
    path.write_text(yaml.safe_dump(plant, sort_keys=False))
    return path
