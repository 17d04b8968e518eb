"""Valid but dangerous settings are said out loud by `validate` (exit 0, warning on stderr)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from e2e import ROOT, plant_yaml


def test_validate_warns_about_insecure_skip_verify(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    dests = ('  - {id: lab, url: "mqtts://127.0.0.1:8883", tls: {insecure_skip_verify: true}}\n'
             '  - {id: prod, url: "mqtts://127.0.0.1:8884"}\n')
    plant.write_text(plant_yaml(tmp_path / "state", [5020], 1883, destinations=dests))
    done = subprocess.run([sys.executable, "-m", "edge.cli", "validate", str(plant)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith(f"{plant}: warning: destinations[lab]: tls.insecure_skip_verify")
    assert "prod" not in done.stderr
