"""What a plant engineer new to the gateway trips over at the command line (the newcomer
walk-through): each mistake gets one line saying what is wrong, a non-zero exit code and no
traceback, and every command that runs until stopped ends cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import find_free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from e2e import ROOT, cli, plant_yaml, wait_for
from paho.mqtt import publish

from edge.signing.jws import ChainState, Signer, jwks

if TYPE_CHECKING:
    from conftest import Mosquitto

GW = "edge/plant-a/gw-01"
TOPIC = "edge/plant-a/hall-1/line-1/m1/telemetry"

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


def started(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`edge-gateway ARGS` left running, its stderr in a file to wait on."""
    err = tmp_path / "stderr.txt"
    with err.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=sink)
    return proc, err


def forged_envelope_retained(broker: Mosquitto) -> None:
    """The gateway's JWKS and one telemetry envelope whose body was changed after signing."""
    signer, chain = Signer(Ed25519PrivateKey.generate()), ChainState()
    seq, prev = chain.next(TOPIC)
    env = signer.sign_body({
        "v": 1, "gateway": "gw-01", "topic": TOPIC, "asset": "m1", "stream": "telemetry",
        "seq": seq, "prev": prev, "created": "2026-11-22T10:00:00.123Z",
        "historical": False, "records": []})
    env["payload"] = env["payload"][:-4] + ("AAAA" if env["payload"][-4:] != "AAAA" else "BBBB")
    for topic, body in ((f"{GW}/keys", jwks([signer.public_key])), (TOPIC, env)):
        publish.single(topic, json.dumps(body), qos=1, retain=True,
                       hostname=broker.host, port=broker.port)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["watch", "verify"])
def test_stopping_watch_or_verify_still_reports_what_failed(
    tmp_path: Path, mosquitto: Mosquitto, command: str, sig: signal.Signals
) -> None:
    """`watch` runs until Ctrl-C, `verify --broker` may be cut short: Ctrl-C exited 0 with
    no report (a forged envelope seen, and the exit code said all was well) and SIGTERM
    killed them. Either signal now ends the listening as `--seconds` does."""
    forged_envelope_retained(mosquitto)
    seconds = ("--seconds", "600") if command == "verify" else ()
    proc, err = started(tmp_path, command, "--broker", mosquitto.url, *seconds)
    try:
        wait_for(lambda: TOPIC in err.read_text(), 20, f"{command} to judge the envelope")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    said = err.read_text()
    assert proc.returncode == 1, out + said
    assert no_traceback(said)
    if command == "watch":
        assert out.rstrip().endswith("1 envelope(s) checked"), out
    else:
        assert out.startswith("FAILED") and "1 envelope(s)" in out, out


def test_ctrl_c_in_a_query_is_not_a_success(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A query stopped before its answer exited 0, as if answered: now 130, as a shell
    reports a command ended by Ctrl-C, with one line saying so."""
    made = cli("keys", "platform", "-o", str(tmp_path / "platform"), "--id", "p1")
    assert made.returncode == 0, made.stderr
    proc, err = started(tmp_path, "--log-level", "info", "query", "--broker", mosquitto.url,
                        "--key", str(tmp_path / "platform" / "p1.key.pem"),
                        "--gateway", "edge/plant-a/nobody", "--timeout", "600", "health")
    try:
        wait_for(lambda: "mqtt_connected" in err.read_text(), 20, "the query to be sent")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    said = err.read_text()
    assert proc.returncode == 130, out + said
    assert said.rstrip().endswith("query: interrupted") and no_traceback(said)


@pytest.mark.parametrize("platform_id", ["Plant A", "a/b", ""])
def test_keys_platform_refuses_an_id_the_yaml_would_refuse(
    tmp_path: Path, platform_id: str
) -> None:
    """`keys platform --id "Plant A"` wrote the keys and printed a `platforms:` block that
    `validate` then refused (ids are `[a-z0-9_-]+`); `--id a/b` said it could not write in
    the directory. Now a usage error, before any file is written."""
    done = cli("keys", "platform", "-o", str(tmp_path / "keys"), "--id", platform_id)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--id: {platform_id!r}: expected 1-64 of a-z, 0-9" in done.stderr
    assert no_traceback(done.stderr) and done.stdout == ""
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(
    ("before", "after", "where"),
    [
        ('url: "mqtt://127.0.0.1:1"', 'url: "mqtt://127.0.0.1:99999"', "3:22: destinations[0].url"),
        ("adapter: modbus\n    connection: {host: 127.0.0.1, port: 1, timeout: 0.5}",
         'adapter: opcua\n    connection: {endpoint: "opc.tcp://10.0.0.5:99999"}',
         "9:28: machines[0].connection.endpoint"),
        ("adapter: modbus\n    connection: {host: 127.0.0.1, port: 1, timeout: 0.5}",
         'adapter: mtconnect\n    connection: {url: "http://10.0.0.5:5000x", device: d1}',
         "9:23: machines[0].connection.url"),
    ],
)
def test_a_url_port_that_is_no_tcp_port_is_located(
    tmp_path: Path, plant: Path, before: str, after: str, where: str
) -> None:
    """A port past 65535 or not a number passed the URL checks: `validate` of a broker URL
    ended in urllib's traceback, an OPC UA endpoint or MTConnect agent URL validated and
    never connected."""
    text = plant.read_text().replace(before, after)
    if "points:" in text and "modbus" not in text:  # the profile / agent needs no points
        text = text[: text.index("    points:")]
    plant.write_text(text)
    done = cli("validate", str(plant))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"plant.yaml:{where}: Value error, the port after the host must be a TCP port, " \
        "1-65535" in done.stderr
    assert no_traceback(done.stderr)


def test_browse_refuses_an_endpoint_port_past_65535() -> None:
    done = cli("browse", "opc.tcp://10.0.0.5:99999")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "browse: 'opc.tcp://10.0.0.5:99999': the port after the host must be a TCP port, 1-65535"
    )


CTRL_C_WHILE_IMPORTING = """
import sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise KeyboardInterrupt  # as Python raises it for a SIGINT arriving then
        return None

sys.meta_path.insert(0, CtrlC())
from edge.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("module", ["edge.daemon.preflight", "edge.observability"])
def test_ctrl_c_while_a_command_starts_is_quiet(plant: Path, module: str) -> None:
    """Ctrl-C in the first second of `make demo` (the command's imports) printed a
    KeyboardInterrupt traceback, from each worker process too. The Ctrl-C is played at a
    fixed point of the start (an import), not at a time that may or may not hit it."""
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_IMPORTING, module, "run", "-c", str(plant)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "edge-gateway: interrupted"


@pytest.mark.slow
def test_ctrl_c_as_workers_start_stops_all_without_traceback(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A terminal's Ctrl-C goes to the whole process group: with `--workers 2` it reached
    the workers while they were still importing (right after `worker_started`), and each
    printed a KeyboardInterrupt traceback. Workers now have their own process group; the
    parent stops them with SIGTERM."""
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [find_free_port(), find_free_port()],
                                mosquitto.port))
    log = tmp_path / "gateway.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--log-format", "json", "run", "-c", str(plant),
             "--no-console", "--with-simulators", "--workers", "2"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, text=True,
            start_new_session=True,  # a group of its own, as a terminal's foreground job
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(lambda: log.read_text().count('"worker_started"') == 2, 60, "both workers")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to every process of the group
        assert proc.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    said = log.read_text()
    assert no_traceback(said) and "KeyboardInterrupt" not in said, said[-3000:]
    assert '"gateway_stopped"' in said


@pytest.mark.slow  # the connect attempt lasts its 10 s
def test_watch_of_a_broker_that_is_not_there_draws_no_empty_tables() -> None:
    """`watch --broker` with a wrong port drew an empty table every `--every` seconds for
    the 10 s it tried, then said it could not connect: now only the one line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = cli("watch", "--broker", f"mqtt://127.0.0.1:{port}", "--every", "0.1")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.rstrip().endswith(f"watch: cannot connect to mqtt://127.0.0.1:{port}")


def test_query_of_a_broker_that_is_not_there_says_so_once(tmp_path: Path) -> None:
    """`query` (as `watch` and `verify --broker`) to a broker that is not there printed the
    transport's `mqtt_connect_failed` warning (as JSON in a pipe) before its own
    "cannot connect" line: the same news twice. The command's line is the one now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    key = tmp_path / "k.pem"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    done = cli("query", "--broker", f"mqtt://127.0.0.1:{port}", "--key", str(key),
               "--gateway", GW, "--timeout", "1", "health")
    assert done.returncode == 1, done.stderr
    said = f"cannot connect to mqtt://127.0.0.1:{port}"
    assert done.stderr.count(said) == 1, done.stderr
    assert "mqtt_connect_failed" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"edge-gateway: {said}"], done.stderr
