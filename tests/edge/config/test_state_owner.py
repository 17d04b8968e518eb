"""Commands run as root leave files in the state directory to the service user, and the
production sample plant resolves the unit's state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.loader import load_plant
from edge.config.state_owner import hand_to_state_owner

ROOT = Path(__file__).resolve().parents[3]
SERVICE_UID = 65534  # nobody: any account but root


def test_production_sample_plant_uses_the_units_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    loaded = load_plant(ROOT / "config" / "plant.example.yaml")
    assert loaded.state_dir == Path("/var/lib/edge-gateway")
    assert not any(m.simulate for m in loaded.plant.machines)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-gateway")
    assert loaded.state_dir == Path("/var/lib/edge-gateway")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_keys_generated_by_root_belong_to_the_state_directory_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, SERVICE_UID, SERVICE_UID)
    plant = tmp_path / "plant.yaml"
    text = (ROOT / "config" / "plant.example.yaml").read_text()
    plant.write_text(text.replace("state_dir: /var/lib/edge-gateway", f"state_dir: {state}"))
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    for action in ("generate", "rotate"):
        done = subprocess.run(
            [sys.executable, "-m", "edge.cli", "keys", action, "-c", str(plant)],
            capture_output=True, text=True, cwd=ROOT, env=env, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert str(state / "keys") in done.stdout
    for p in [state / "keys", *(state / "keys").iterdir()]:
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (SERVICE_UID, SERVICE_UID), p
    assert ((state / "keys" / "signing-key.pem").stat().st_mode & 0o777) == 0o600


def test_nothing_changes_outside_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert hand_to_state_owner(state, outside) == []
