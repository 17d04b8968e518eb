"""Shared fixtures: a real Mosquitto per test, and an independent paho subscriber.

Integration tests talk to real brokers because the failure modes that matter (PUBACK
timing, wills, refusals, restarts, TLS) are exactly what fakes get wrong. Each broker runs
on a free port on 127.0.0.1 with a generated config, so tests run in parallel and leave
nothing behind. A missing `mosquitto` binary fails loudly: skipping would hide that the
transport went untested.
"""

from __future__ import annotations

import getpass
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import structlog
from e2e import listens, until, wait_for
from paho.mqtt.enums import CallbackAPIVersion

_MISSING = (
    "mosquitto is not installed: run `make test`, which installs it "
    "(or `sudo apt-get install mosquitto`); the MQTT tests need a real broker"
)


def find_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 20.0) -> bool:
    """Whether something listens on `port` within `timeout` s (a loaded 2-core box can take
    seconds to start a process); the caller fails naming what did not start."""
    try:
        wait_for(lambda: listens(host, port), timeout, f"{host}:{port} to listen")
    except AssertionError:
        return False
    return True


class Mosquitto:
    """One mosquitto process; `stop()` then `start()` brings it back on the same port.

    While it is not running its port stays bound by a socket that does not listen: a
    connection is refused as by no broker, and no other process of the run gets the port
    meanwhile (a restart found it taken by another test's broker or client: EADDRINUSE)."""

    host = "127.0.0.1"

    def __init__(self, binary: str, workdir: Path, port: int, extra_config: str = "") -> None:
        self.binary, self.workdir, self.port = binary, workdir, port
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # `user` keeps a root-run mosquitto from dropping to an account that cannot read tmp files.
        self.config.write_text(
            f"listener {port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"user {getpass.getuser()}\nlog_type all\n{extra_config}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._held: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def hold(self) -> None:
        """Bind the port without listening (SO_REUSEADDR: the stopped broker's connections
        may still be in TIME_WAIT on it)."""
        if self._held is None:
            held = socket.socket()
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind((self.host, self.port))
            self._held = held

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def start(self) -> None:
        self.release()
        with self.log.open("ab") as log:
            cmd = [self.binary, "-c", str(self.config)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_port(self.host, self.port) or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"mosquitto did not start on port {self.port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.hold()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """`make(extra_config="", port=None, start=True)`; extra listeners, TLS, auth: extra_config."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        pytest.fail(_MISSING)
    made: list[Mosquitto] = []

    def make(extra_config: str = "", port: int | None = None, start: bool = True) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(made)}"
        workdir.mkdir()
        broker = Mosquitto(binary, workdir, port or find_free_port(), extra_config)
        made.append(broker)
        if start:
            broker.start()
        else:
            broker.hold()
        return broker

    yield make
    for broker in made:
        broker.stop()
        broker.release()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory()


@pytest.fixture
def cli_logging_restored() -> Iterator[None]:
    """For tests calling `edge.cli.main()`: it points structlog and the root logger at the
    test's captured stderr, which is closed after it, so later tests' log lines (paho's, our
    transport's) would fail on it. Puts both back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


@pytest.fixture
def free_port() -> Callable[[], int]:
    return find_free_port


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any
    at: float = field(default_factory=time.monotonic)  # arrival, for rates measured at the broker


class Collector:
    """An independent paho subscriber on its own thread: what really reached the broker.

    For a broker running on the test's own event loop (the embedded amqtt), pass `wait=False`
    and `await collector.subscribed()`: blocking here would starve that broker.
    """

    def __init__(self, host: str, port: int, topic: str, protocol: str, wait: bool = True) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        v5 = protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self._where = f"{topic!r} on {host}:{port}"
        self.client.connect_async(host, port)
        self.client.loop_start()
        if wait and not self._subscribed.wait(10):
            self.close()
            raise AssertionError(f"collector could not subscribe to {self._where}")

    async def subscribed(self, within: float = 10.0) -> None:
        await until(self._subscribed.is_set, within,
                    f"the collector's subscription to {self._where}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.properties)
            )

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    async def wait(self, count: int, within: float = 10.0) -> list[Received]:
        """At least `count` messages, or an AssertionError listing what did arrive."""
        try:
            await until(lambda: len(self.snapshot()) >= count, within, f"{count} messages")
        except AssertionError as exc:
            got = self.snapshot()
            raise AssertionError(f"expected {count} messages, got {len(got)}: {got}") from exc
        return self.snapshot()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_collector() -> Iterator[Callable[..., Collector]]:
    """`collect(host, port, topic="#", protocol="5", wait=True)` -> a subscribed `Collector`."""
    made: list[Collector] = []

    def collect(
        host: str, port: int, topic: str = "#", protocol: str = "5", wait: bool = True
    ) -> Collector:
        c = Collector(host, port, topic, protocol, wait)
        made.append(c)
        return c

    yield collect
    for c in made:
        c.close()
