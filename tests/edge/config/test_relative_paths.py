"""Every file path in the plant YAML is relative to the YAML file's directory, never to the
working directory: under systemd that is `/`, and `ca_file: certs/ca.pem` beside the YAML
must be found there too (models/config_path.py; the loader passes the directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tls_pki import write_pki

from edge.config.loader import load_plant
from models.errors import PlantConfigError
from models.plant import SecretRef

KEY_PASSWORD = "key-password-0815"

PLANT = """\
gateway:
  id: gw-1
  site: plant-a
  state_dir: state
  web: {token: {file: secrets/web-token}}
destinations:
  - id: cloud
    url: mqtts://127.0.0.1:8883
    username: gw
    password: {file: secrets/mqtt-password}
    tls:
      ca_file: certs/ca.pem
      cert_file: certs/client.pem
      key_file: certs/client.key
      key_password: {file: secrets/key-password}
machines:
  - id: m1
    area: a1
    line: l1
    adapter: modbus
    connection: {host: 127.0.0.1, port: 5020}
    points:
      - {name: spindle_speed, register: holding, address: 20, data_type: float32}
"""

ADAPTER_PATHS = """\
  - id: ua
    area: a1
    line: l1
    adapter: opcua
    connection:
      endpoint: opc.tcp://127.0.0.1:4840/
      security_policy: Basic256Sha256
      security_mode: SignAndEncrypt
      pki_dir: opcua/pki
      trust_dir: /etc/edge-gateway/opcua-trusted
      username: {file: secrets/ua-user}
      password: {file: secrets/ua-password}
    points:
      - {name: speed, node: "nsu=urn:x;s=speed"}
  - id: shdr
    area: a1
    line: l1
    adapter: shdr
    connection: {host: 127.0.0.1, port: 7878, device_model: models/Devices.xml}
"""


def site_with_files(root: Path) -> Path:
    """A plant YAML in `root/site` whose TLS and secret files lie beside it, named relative."""
    site = root / "site"
    (site / "certs").mkdir(parents=True)
    (site / "secrets").mkdir()
    write_pki(site / "certs", client_key_password=KEY_PASSWORD.encode())
    (site / "secrets" / "key-password").write_text(KEY_PASSWORD + "\n")
    (site / "secrets" / "mqtt-password").write_text("broker-secret\n")
    (site / "secrets" / "web-token").write_text("web-token-value\n")
    (site / "plant.yaml").write_text(PLANT)
    return site / "plant.yaml"


def test_loading_anchors_every_path_at_the_yaml_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_file = site_with_files(tmp_path)
    plant_file.write_text(plant_file.read_text() + ADAPTER_PATHS)
    monkeypatch.chdir(tmp_path)  # the YAML named relative to the working directory, as a user does
    loaded = load_plant("site/plant.yaml")
    site = str(tmp_path.resolve() / "site")
    [dest] = loaded.plant.destinations
    assert dest.tls is not None
    assert (dest.tls.ca_file, dest.tls.cert_file, dest.tls.key_file) == (
        f"{site}/certs/ca.pem", f"{site}/certs/client.pem", f"{site}/certs/client.key")
    assert dest.tls.key_password == SecretRef(file=f"{site}/secrets/key-password")
    assert dest.password == SecretRef(file=f"{site}/secrets/mqtt-password")
    assert loaded.plant.gateway.web.token == SecretRef(file=f"{site}/secrets/web-token")
    ua = loaded.settings["ua"].connection  # type: ignore[attr-defined]
    assert ua.pki_dir == f"{site}/opcua/pki"
    assert ua.trust_dir == "/etc/edge-gateway/opcua-trusted"  # absolute: as written
    assert ua.username == SecretRef(file=f"{site}/secrets/ua-user")
    assert ua.password == SecretRef(file=f"{site}/secrets/ua-password")
    shdr = loaded.settings["shdr"].connection  # type: ignore[attr-defined]
    assert shdr.device_model == Path(f"{site}/models/Devices.xml")


def test_a_home_relative_path_is_a_located_error(tmp_path: Path) -> None:
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(PLANT.replace("certs/ca.pem", "~/certs/ca.pem"))
    with pytest.raises(PlantConfigError) as caught:
        load_plant(plant_file)
    [problem] = caught.value.problems
    assert (problem.line, problem.path) == (12, "destinations[0].tls.ca_file")
    assert "'~' is not expanded" in problem.message


def validate_from(cwd: str, plant: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "validate", str(plant)],
        capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
    )


def test_validate_finds_files_beside_the_yaml_from_the_root_directory(tmp_path: Path) -> None:
    """As systemd runs `validate` (ExecStartPre) and `run`: working directory `/`. The
    encrypted client key is opened with its password file, so every file is really read."""
    plant = site_with_files(tmp_path)
    ok = validate_from("/", plant)
    assert ok.returncode == 0, ok.stderr
    assert f"{plant}: ok:" in ok.stdout

    (plant.parent / "secrets" / "key-password").write_text("not-the-password\n")
    (plant.parent / "certs" / "ca.pem").unlink()
    bad = validate_from("/", plant)
    assert bad.returncode == 2, bad.stderr
    assert f"no such file: {plant.parent.resolve()}/certs/ca.pem" in bad.stderr
    assert "Traceback" not in bad.stderr
