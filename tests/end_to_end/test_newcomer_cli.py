"""What a plant engineer new to the gateway trips over at the command line (the newcomer
walk-through): each mistake gets one line saying what is wrong, a non-zero exit code and no
traceback, and every command that runs until stopped ends cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from e2e import cli

PLANT = """gateway: {{id: gw-1, site: plant-a, state_dir: {state}}}
destinations:
  - {{id: local, url: "mqtt://127.0.0.1:1"}}
machines:
  - id: m1
    area: hall-1
    line: line-1
    adapter: modbus
    connection: {{host: 127.0.0.1, port: 1, timeout: 0.5}}
    points:
      - {{name: part_count, register: holding, address: 10, data_type: uint32}}
"""


@pytest.fixture
def plant(tmp_path: Path) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(PLANT.format(state=tmp_path / "state"))
    return path


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (("watch", "--broker", "mqtt://127.0.0.1:1", "--every", "0"), "0"),
        (("watch", "--broker", "mqtt://127.0.0.1:1", "--seconds", "-1"), "-1"),
        (("verify", "--broker", "mqtt://127.0.0.1:1", "--seconds", "0"), "0"),
        (("browse", "opc.tcp://127.0.0.1:1", "--timeout", "nan"), "nan"),
        (("query", "--broker", "mqtt://127.0.0.1:1", "--key", "k.pem", "--gateway",
          "edge/s/gw", "--timeout", "0", "health"), "0"),
        (("probe", "-c", "{plant}", "m1", "--timeout", "-1"), "-1"),
        (("run", "-c", "{plant}", "--console-every", "inf"), "inf"),
    ],
)
def test_seconds_options_refuse_zero_negative_and_endless(
    plant: Path, argv: tuple[str, ...], value: str
) -> None:
    """`watch --every 0` redrew its table in a busy loop (millions of lines a minute), and
    `probe --timeout -1` ran to report "no answer within -1 s": now a usage error."""
    done = cli(*(a.format(plant=plant) for a in argv), timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"expected seconds above 0, got {value!r}" in done.stderr
    assert no_traceback(done.stderr) and done.stdout == ""


def test_browse_of_a_port_that_never_answers_says_so() -> None:
    """A port that accepts the connection and says nothing (another service, a frozen
    server) read `browse: cannot connect to opc.tcp://...: ` with nothing after the colon."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"opc.tcp://127.0.0.1:{silent.getsockname()[1]}"
        done = cli("browse", endpoint, "--timeout", "0.5", timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"browse: cannot connect to {endpoint}: no OPC UA answer within 0.5 s "
        "(another service on that port, or the server is frozen)"
    )
