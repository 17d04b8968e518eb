"""One plant YAML over several gateway hosts (edge/config/shares.py).

Why: a plant that outgrows one host is split by naming a gateway per machine; the promises
are that `validate` catches every way a machine could be served twice or by nobody (with the
YAML line), and that a host running its share sees only its machines under its own id, in
its own state directory (own outbox, own key).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.loader import load_share, parse_plant
from edge.config.shares import ENV_VAR, shares
from edge.query.backend import describe
from models.errors import PlantConfigError

ROOT = Path(__file__).resolve().parents[3]


def machine(mid: str, gateway: str | None) -> str:
    gw = f"\n    gateway: {gateway}" if gateway else ""
    return f"""
  - id: {mid}
    area: a1
    line: l1
    adapter: modbus{gw}
    connection: {{host: 127.0.0.1, port: 5020}}
    points:
      - {{name: spindle_speed, register: holding, address: 20, data_type: float32}}"""


def split(gateways: str = "[gw-a, gw-b]", gw_id: str = "gw-a",
          machines: tuple[tuple[str, str | None], ...] = (
              ("m1", "gw-a"), ("m2", "gw-b"), ("m3", "gw-a"))) -> str:
    return (f"gateway: {{id: {gw_id}, site: plant-a, state_dir: state}}\n"
            f"gateways: {gateways}\nmachines:" + "".join(machine(m, g) for m, g in machines)
            + "\n")


def problems(text: str) -> list[str]:
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    return [str(p) for p in info.value.problems]


def test_valid_split_lists_each_share() -> None:
    plant = parse_plant(split(), "plant.yaml").plant
    assert shares(plant) == {"gw-a": ["m1", "m3"], "gw-b": ["m2"]}


def test_unassigned_machine_is_located() -> None:
    text = split(machines=(("m1", "gw-a"), ("m2", "gw-b"), ("m3", None)))
    out = problems(text)
    assert len(out) == 1
    assert out[0].startswith("plant.yaml:20:5: machines[2]: machine 'm3' names no gateway")


def test_unknown_gateway_is_located() -> None:
    text = split(machines=(("m1", "gw-a"), ("m2", "gw-b"), ("m3", "gw-c")))
    assert problems(text) == [
        "plant.yaml:24:14: machines[2].gateway: 'gw-c' is not one of gateways (gw-a, gw-b)"]


def test_empty_share_duplicate_and_default_outside_the_list() -> None:
    out = problems(split(gateways="[gw-a, gw-b, gw-a, gw-z]", gw_id="gw-x"))
    assert "plant.yaml:1:15: gateway.id: 'gw-x' is not one of gateways" in out[0]
    assert any("gateways[2]: gateway 'gw-a' is listed twice" in p for p in out)
    assert any("gateways[3]: gateway 'gw-z' serves no machine" in p for p in out)


def test_machine_gateway_without_a_split_is_an_error() -> None:
    text = split().replace("gateways: [gw-a, gw-b]\n", "")
    out = problems(text)
    assert all("no 'gateways' list" in p for p in out) and len(out) == 3


def with_meter_of_m2(gateway: str) -> str:
    text = split(machines=(("m1", "gw-a"), ("m2", "gw-b"), ("m3", "gw-a"), ("meter", gateway)))
    return text.replace("  - id: meter\n    area: a1\n    line: l1\n    adapter: modbus\n",
                        "  - id: meter\n    area: a1\n    line: l1\n    adapter: modbus\n"
                        "    meter_for: m2\n    energy: {energy_kwh: spindle_speed}\n")


def test_a_meter_in_another_share_than_its_machine_is_located() -> None:
    """A meter's readings go into its machine's part records and OEE windows, which only
    the machine's own gateway keeps: a meter served by another host would meter nothing."""
    assert problems(with_meter_of_m2("gw-a")) == [
        "plant.yaml:34:14: machines[3].gateway: meter 'meter' is served by 'gw-a' but the "
        "machine it meters, 'm2', by 'gw-b': its readings go into that machine's part records "
        "and OEE windows, so give both the same gateway"]
    plant = parse_plant(with_meter_of_m2("gw-b"), "plant.yaml").plant
    assert shares(plant) == {"gw-a": ["m1", "m3"], "gw-b": ["m2", "meter"]}


@pytest.fixture
def plant_file(tmp_path: Path) -> Path:
    p = tmp_path / "plant.yaml"
    p.write_text(split())
    return p


def test_share_is_narrowed_with_its_own_id_and_state(
        plant_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    b = load_share(plant_file, "gw-b")
    assert b.share == "gw-b" and b.plant.gateway.id == "gw-b"
    assert [m.id for m in b.plant.machines] == ["m2"] and set(b.settings) == {"m2"}
    a = load_share(plant_file, None)  # default: gateway.id
    assert [m.id for m in a.plant.machines] == ["m1", "m3"]
    assert a.state_dir != b.state_dir and a.state_dir.name == "gw-a"
    assert b.keys_dir == b.state_dir / "keys"
    # `describe` (what a platform asks a gateway) names the share's gateway and machines
    assert describe(b)["gateway"] == "gw-b" and list(describe(b)["machines"]) == ["m2"]
    assert list(describe(a)["machines"]) == ["m1", "m3"]


def test_env_var_picks_the_share_and_the_flag_wins(
        plant_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "gw-b")
    assert load_share(plant_file, None).share == "gw-b"
    assert load_share(plant_file, "gw-a").share == "gw-a"


def test_unknown_share_is_a_clear_error(
        plant_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(PlantConfigError) as info:
        load_share(plant_file, "gw-q")
    assert "'gw-q' is not one of gateways (gw-a, gw-b)" in str(info.value.problems[0])


def test_unsplit_plant_is_served_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    p = tmp_path / "plant.yaml"
    p.write_text(split().replace("gateways: [gw-a, gw-b]\n", "").replace(
        "\n    gateway: gw-a", "").replace("\n    gateway: gw-b", ""))
    loaded = load_share(p, None)
    assert loaded.share is None and len(loaded.plant.machines) == 3
    with pytest.raises(PlantConfigError):
        load_share(p, "gw-b")


def test_validate_prints_the_shares(plant_file: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edge.cli", "validate", str(plant_file)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "share gw-a: 2 machine(s): m1, m3" in out.stdout
    assert "share gw-b: 1 machine(s): m2" in out.stdout


def test_run_with_an_unknown_share_exits_2_without_traceback(plant_file: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-c", str(plant_file),
                          "--gateway-id", "gw-q", "--no-console"],
                         capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)
    assert out.returncode == 2
    assert "gw-q" in out.stderr and "Traceback" not in out.stderr
