"""sd_notify against a real datagram socket, as systemd's Type=notify + WatchdogSec see it."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for


@pytest.mark.slow
def test_ready_watchdog_and_stopping_reach_the_notify_socket(
    tmp_path: Path,
    mosquitto: Mosquitto,
    free_port: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    received: list[str] = []

    def drain() -> None:
        while True:
            try:
                received.append(sock.recv(4096).decode())
            except TimeoutError:
                return

    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port))
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: (drain(), any(m.startswith("READY=1") for m in received))[1], 20, "READY")
        wait_for(
            lambda: (drain(), sum(m == "WATCHDOG=1" for m in received) >= 3)[1],
            10,
            "three watchdog pings (one per 0.5 s)",
        )
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
        drain()
        assert "STOPPING=1" in received
    finally:
        gw.kill()
        sock.close()
