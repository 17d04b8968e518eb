"""Mistakes an engineer makes at the command line get one line naming what is wrong and
exit 2, never a traceback (audit round 3): a broker URL without its scheme, an output file
in a directory that does not exist, a JWKS that is not one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edge.cli import EXIT_INPUT, main

if TYPE_CHECKING:
    from conftest import Mosquitto

BAD_BROKERS = ("127.0.0.1:1883", "tcp://broker:1883", "http://x")


pytestmark = pytest.mark.usefixtures("cli_logging_restored")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("url", BAD_BROKERS)
@pytest.mark.parametrize(
    "command",
    [
        ("query", "--key", "k.pem", "--gateway", "edge/s/gw", "health"),
        ("watch", "--seconds", "1"),
        ("verify", "--seconds", "1"),
    ],
)
def test_a_broker_url_without_mqtt_scheme_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...], url: str
) -> None:
    code, err = _run(capsys, *command, "--broker", url)
    assert code == EXIT_INPUT
    assert f"--broker: {url!r}: expected mqtt://HOST[:PORT]" in err


def test_outputs_into_a_missing_directory_name_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such"
    plant = Path(__file__).parents[2] / "config" / "demo-plant.yaml"
    for argv, who in (
        (("schema", "-o", str(missing / "schema.json")), "schema"),
        (("aas", "export", "-c", str(plant), "-o", str(missing / "aas.json")), "aas"),
        (("verify", "--broker", "mqtt://127.0.0.1:1", "--save", str(missing / "c")), "verify"),
    ):
        code, err = _run(capsys, *argv)
        assert code == EXIT_INPUT, (argv, err)
        assert err.startswith(f"{who}: cannot write {missing}/"), err
        assert "No such file or directory" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = _run(capsys, "keys", "platform", "-o", str(blocker / "keys"), "--id", "p")
    assert code == EXIT_INPUT
    assert err.startswith(f"keys platform: cannot write in {blocker}/keys"), err


def test_verify_names_the_jwks_file_that_is_not_a_jwks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capture = tmp_path / "capture.jsonl"
    capture.write_text("")
    for name, text in (("empty.json", "{}"), ("plant.yaml", "gateway: {id: gw}\n"),
                       ("list.json", json.dumps([{"kty": "OKP"}]))):
        jwks = tmp_path / name
        jwks.write_text(text)
        code, err = _run(capsys, "verify", str(capture), "--jwks", str(jwks))
        assert code == EXIT_INPUT, err
        assert err.startswith(f"verify: JWKS {jwks}: "), err


def test_validate_says_what_an_empty_shifts_and_destinations_mean(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`validate` printed `no destination(s), 0 shift(s)` for a plant without them, which
    read as "nothing planned, nowhere to send"; the defaults are 24/7 and the embedded
    broker (README, configuration reference)."""
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        "gateway: {id: gw, site: s, state_dir: state}\n"
        "machines:\n"
        "  - {id: m1, area: a, line: l, adapter: modbus, connection: {host: 127.0.0.1},\n"
        "     points: [{name: part_count, register: holding, address: 0}]}\n"
    )
    assert main(["validate", str(plant)]) == 0
    out = capsys.readouterr().out
    assert "no destination: the embedded broker on 127.0.0.1:1883" in out
    assert "no shift listed: planned 24/7" in out and "0 shift" not in out


def test_client_commands_do_not_log_their_own_link(
    capsys: pytest.CaptureFixture[str], mosquitto: Mosquitto
) -> None:
    """`query`, `verify` and `watch` print their result; an info line about their MQTT link
    (`mqtt_connected`) came first on stderr each time. Their default level is warning;
    `--log-level info` brings it back."""
    verify = ("verify", "--broker", mosquitto.url, "--topic", "audit/none/#", "--seconds", "0.5")
    code, err = _run(capsys, *verify)
    assert code == 1 and "mqtt_connected" not in err  # nothing verified: a failure, quietly
    code, err = _run(capsys, "--log-level", "info", *verify)
    assert "mqtt_connected" in err


@pytest.mark.parametrize("state_dir", ["/proc/nope", "a-file/state"])
def test_validate_warns_of_a_state_dir_this_user_cannot_create(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, state_dir: str
) -> None:
    """`validate` said ok for a state_dir that cannot be created, then `run` exited 2. It
    often runs as another user than the service, so this is a warning naming the path and
    why, and the exit code stays 0."""
    (tmp_path / "a-file").write_text("not a directory\n")
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        f"gateway: {{id: gw, site: s, state_dir: {state_dir}}}\n"
        "machines:\n"
        "  - {id: m1, area: a, line: l, adapter: modbus, connection: {host: 127.0.0.1},\n"
        "     points: [{name: part_count, register: holding, address: 0}]}\n"
    )
    code, err = _run(capsys, "validate", str(plant))
    assert code == 0
    where = state_dir if state_dir.startswith("/") else str(tmp_path / state_dir)
    assert f"warning: state_dir {where} cannot be created by this user" in err
    assert "run` as this user would fail" in err
    # a usable one: no warning, and validate leaves no directory behind
    plant.write_text(plant.read_text().replace(state_dir, "fresh/state"))
    code, err = _run(capsys, "validate", str(plant))
    assert code == 0 and "state_dir" not in err
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("opc.tcp://127.0.0.1:1/", "--depth", "-1"), "expected 0 or more levels, got '-1'"),
        (("opc.tcp://127.0.0.1:1/", "--depth", "two"), "--depth: expected 0 or more levels"),
        (("127.0.0.1:4840",), "browse: '127.0.0.1:4840': expected opc.tcp://HOST:PORT[/path]"),
    ],
)
def test_browse_input_errors_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    """`browse --depth -1` was accepted and browse's input errors exited 1; the other
    commands exit 2 for a usage error (a start node the server lacks: tests/edge/
    commissioning). A server that is not there stays a runtime error, exit 1."""
    code, err = _run(capsys, "browse", *argv)
    assert code == EXIT_INPUT and says in err
    code, err = _run(capsys, "browse", "opc.tcp://127.0.0.1:1/", "--timeout", "1")
    assert code == 1 and "cannot connect" in err


def test_validate_names_the_plant_as_given_and_files_where_the_gateway_looks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema problems read `plant.yaml:...` but a missing key or bookings file read
    `/abs/path/plant.yaml:...: cannot load keys from /abs/path/nokey.pem: [Errno 2] ...
    '/abs/path/nokey.pem'`: every line now names the plant as given, and each file where the
    gateway looks for it (beside the YAML, wherever `validate` runs), with the OS reason once."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "plant.yaml").write_text(
        "gateway: {id: gw, site: s, state_dir: state}\n"
        "platforms: [{id: p1, public_key_file: nokey.pem}]\n"
        "machines:\n"
        "  - {id: m1, area: a, line: l, adapter: modbus, connection: {host: 127.0.0.1},\n"
        "     bookings_file: nob.yaml, points: [{name: part_count, register: holding,\n"
        "     address: 0}]}\n"
    )
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "validate", "site/plant.yaml")
    problems = err.splitlines()[:-1]
    assert code == EXIT_INPUT and len(problems) == 2, err
    assert all(line.startswith("site/plant.yaml:") for line in problems), err
    assert "Errno" not in err
    site = tmp_path.resolve() / "site"
    assert f"cannot load keys from {site}/nokey.pem: No such file or directory" in problems[0]
    assert f"cannot use {site}/nob.yaml: No such file or directory" in problems[1]


def test_a_query_to_a_gateway_path_nobody_publishes_says_to_check_it(
    capsys: pytest.CaptureFixture[str], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A mistyped `--gateway` got only "no verified reply within 10 s"; the broker shows no
    gateway ever published its keys there, which points at the path."""
    from edge.platform_kit.keys import make_platform_keys

    private = make_platform_keys(tmp_path, "acme").private_key
    code, err = _run(
        capsys, "query", "--broker", mosquitto.url, "--key", str(private),
        "--gateway", "edge/plant-x/gw-typo", "--timeout", "1", "health",
    )
    assert code == 1
    assert err.strip() == (
        "query: no verified reply within 1 s: no gateway has published on this broker under "
        "edge/plant-x/gw-typo (nothing retained on edge/plant-x/gw-typo/keys): check the "
        "path, {prefix}/{site}/{gateway id} as in the gateway's `status` topic"
    )
