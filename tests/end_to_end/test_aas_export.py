"""`edge-gateway aas export`: what an integrator gets from the YAML alone verifies as AAS V3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aas_core3 import jsonization, verification

from edge.config.loader import load_plant

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo-plant.yaml"


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "aas", "export", "-c", str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_export_all_machines_verifies(tmp_path: Path) -> None:
    out = tmp_path / "plant-aas.json"
    res = export("-o", str(out))
    assert res.returncode == 0, res.stderr
    env = jsonization.environment_from_jsonable(json.loads(out.read_text()))
    assert list(verification.verify(env)) == []
    shells = {s.id for s in env.asset_administration_shells or []}
    machines = [m.id for m in load_plant(DEMO).plant.machines]
    assert shells == {f"urn:edge-gateway:plant-a:{m}:aas" for m in machines}


def test_export_one_machine_and_unknown_machine() -> None:
    res = export("--asset", "lathe-01")
    assert res.returncode == 0, res.stderr
    env = jsonization.environment_from_jsonable(json.loads(res.stdout))
    assert list(verification.verify(env)) == []
    (shell,) = env.asset_administration_shells or []
    assert shell.asset_information.global_asset_id == "urn:edge-gateway:plant-a:lathe-01"
    bad = export("--asset", "nope")
    assert bad.returncode == 2 and "mill-01" in bad.stderr and "Traceback" not in bad.stderr
