"""Hostile or broken YAML is refused quickly with a location (issue 12 item 9), and
`validate` checks every file and secret the plant refers to, so systemd's ExecStartPre
catches what `run` or a reload would fail on (issue 11 item 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ALIAS_BOMB
from test_config import MINIMAL

from edge.config.loader import MAX_DEPTH, load_plant, parse_plant
from edge.daemon.preflight import check_references
from models.errors import PlantConfigError

HOSTILE = {
    "holiday": (MINIMAL + "shifts: {holidays: [2026-13-45]}\n", ":10:", "2026-13-45"),
    "flow_nesting": ("gateway: " + "[" * 5000 + "]" * 5000 + "\n", ":1:", "nested deeper"),
    "block_nesting": ("gateway:\n" + "- " * 5000 + "x\n", ":2:", "nested deeper"),
    "alias_bomb": (ALIAS_BOMB, ":", "alias"),
    # flat as text, 1,200 levels deep as data: each anchor holds an alias of the one before
    # (the padding raises the expansion limit above the chain's ~720,000 nodes)
    "alias_chain": (
        MINIMAL + "pad: [" + ",".join(["1"] * 80_000) + "]\nc0: &c0 [1]\n"
        + "".join(f"c{k}: &c{k} [*c{k - 1}]\n" for k in range(1, 1200)),
        ":75:",
        "aliases nest deeper than 64",
    ),
    "recursive_alias": (MINIMAL + "x: &x [*x]\n", ":10:4:", "inside its own anchor"),
    "long_integer": (MINIMAL + "x: " + "9" * 5000 + "\n", ":10:4:", "integer too long"),
    "nul": (MINIMAL + "x: \x00\n", ":10:4:", "U+0000 is not allowed"),
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,  # a spinning parser (the bug) took more than a minute
        check=False,
    )


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_refused_with_a_location(case: str) -> None:
    text, where, what = HOSTILE[case]
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    [problem] = info.value.problems
    assert str(problem).startswith(f"plant.yaml{where}") and what in str(problem)
    assert problem.line is not None and problem.column is not None


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_validate_and_run_exit_2_without_a_traceback(
    tmp_path: Path, case: str, command: str
) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(HOSTILE[case][0])
    res = run_cli(*(["validate"] if command == "validate" else ["run", "-c"]), str(plant))
    assert res.returncode == 2, res.stderr
    assert f"{plant}:" in res.stderr and "Traceback" not in res.stderr


def test_moderate_nesting_and_shared_anchors_still_load() -> None:
    anchored = MINIMAL.replace(
        "    connection: {host: 127.0.0.1, port: 5020}",
        "    connection: &conn {host: 127.0.0.1, port: 5020}\n    simulator: {c: *conn}",
    )
    assert parse_plant(anchored, "plant.yaml").plant.machines[0].id == "m1"
    nested = MINIMAL + "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    with pytest.raises(PlantConfigError) as info:  # refused by the schema, not by the limit
        parse_plant(nested, "plant.yaml")
    assert "unknown field" in str(info.value.problems[0])


def test_an_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(MINIMAL + "#" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(PlantConfigError) as info:
        load_plant(big)
    assert "larger than" in str(info.value.problems[0])


def test_an_endless_file_is_refused_at_the_limit() -> None:
    """stat() says 0 bytes for a device: /dev/zero was read until memory ran out."""
    with pytest.raises(PlantConfigError) as info:
        load_plant("/dev/zero")
    assert "larger than" in str(info.value.problems[0])


REFERENCES = """\
gateway: {id: gw-1, site: plant-a}
destinations:
  - id: secured
    url: mqtts://127.0.0.1:8883
    username: gw
    password: {env: EDGE_TEST_UNSET_PASSWORD}
  - id: files
    url: mqtts://127.0.0.1:8883
    username: gw
    password: {file: missing-password.txt}
  - id: tls
    url: mqtts://127.0.0.1:8883
    tls: {ca_file: missing-ca.pem}
platforms:
  - {id: ok, public_key_file: ok.pub.pem}
  - {id: gone, public_key_file: gone.pub.pem}
  - {id: junk, jwks_file: junk.json}
machines:
  - id: m1
    area: a1
    line: l1
    adapter: modbus
    bookings_file: missing-bookings.yaml
    connection: {host: 127.0.0.1, port: 5020}
    points:
      - {name: spindle_speed, register: holding, address: 20, data_type: float32}
"""


def test_validate_reports_every_missing_or_broken_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_TEST_UNSET_PASSWORD", raising=False)
    key = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "ok.pub.pem").write_bytes(
        key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "junk.json").write_text("{not json")
    plant = tmp_path / "plant.yaml"
    plant.write_text(REFERENCES)
    found = [str(p) for p in check_references(load_plant(plant))]
    expected = [
        (":6:", "destinations[0].password", "EDGE_TEST_UNSET_PASSWORD"),
        (":10:", "destinations[1].password", "missing-password.txt"),
        (":13:", "destinations[2].tls.ca_file", "missing-ca.pem"),
        (":16:", "platforms[1].public_key_file", "gone.pub.pem"),
        (":17:", "platforms[2].jwks_file", "junk.json"),
        (":23:", "machines[0].bookings_file", "missing-bookings.yaml"),
    ]
    assert len(found) == len(expected), found
    for line, (where, field, name) in zip(found, expected, strict=True):
        assert f"{plant}{where}" in line and field in line and name in line, line

    res = run_cli("validate", str(plant))
    assert res.returncode == 2 and "6 problem(s) found" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_validate_accepts_present_references(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "ok.pub.pem").write_bytes(
        key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "bookings.yaml").write_text(
        "- {start: '2026-01-05T06:00:00Z', end: '2026-01-05T10:00:00Z'}\n"
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        MINIMAL.replace("    connection:", "    bookings_file: bookings.yaml\n    connection:")
        + "platforms:\n  - {id: ok, public_key_file: ok.pub.pem}\n"
    )
    assert check_references(load_plant(plant)) == []


@pytest.mark.parametrize(
    ("case", "what"),
    [("alias_bomb", "line 6, column 4: aliases expand"), ("flow_nesting", "line 1, column")],
)
def test_a_hostile_bookings_file_is_refused_with_a_location(
    tmp_path: Path, case: str, what: str
) -> None:
    """A machine's `bookings_file` is YAML too, re-read on every refresh: an alias bomb there
    made `validate` spin for over a minute, deep nesting died of a RecursionError."""
    text = HOSTILE[case][0]
    (tmp_path / "bookings.yaml").write_text(text.replace("gateway: ", "", 1))
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        MINIMAL.replace("    connection:", "    bookings_file: bookings.yaml\n    connection:")
    )
    [problem] = check_references(load_plant(plant))
    assert "machines[0].bookings_file" in str(problem) and what in str(problem)
    res = run_cli("validate", str(plant))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
