"""The shipped unit (systemd/edge-gateway.service) as systemd reads it.

systemd ignores a directive it does not know with a warning in the journal and starts the
service anyway, so a misspelt sandbox line silently unsandboxes the gateway; and a unit
whose `ExecStart` names a flag the CLI no longer has fails only on the plant's gateway.
`systemd-analyze` reads the unit offline, without a running systemd: `verify` for syntax,
directives and executables, `security --offline` for the sandbox's exposure score.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-gateway.service"
INSTALLED = "/opt/edge-gateway/.venv/bin/edge-gateway"  # where systemd/README.md installs it
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze absent (Debian package `systemd`; `make test` "
    "installs it as root)")


def commands(text: str, key: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in text.splitlines()
            if line.startswith(f"{key}=")]


def here(tmp_path: Path) -> Path:
    """The unit with this checkout's `edge-gateway` where the install puts it: `verify`
    checks that every Exec command exists and is executable."""
    exe = Path(sys.executable).parent / "edge-gateway"
    assert exe.is_file(), exe
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(exe)))
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@needs_analyze
def test_systemd_reads_every_line_of_the_unit(tmp_path: Path) -> None:
    done = analyze("verify", str(here(tmp_path)))
    # an unknown or misplaced directive is only a warning (exit 0): none may be printed
    assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", "")


@needs_analyze
def test_a_misspelt_directive_would_be_seen(tmp_path: Path) -> None:
    """The check above can fail: the same unit with one sandbox line misspelt."""
    unit = here(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSytem="))
    assert "Unknown key" in analyze("verify", str(unit)).stderr


@needs_analyze
def test_the_sandbox_keeps_the_exposure_low(tmp_path: Path) -> None:
    """systemd's own score, 0 (locked down) to 10 (unprotected): 1.7 when written; above 2.0
    means a protection was dropped."""
    done = analyze("security", "--offline=yes", "--threshold=20", str(here(tmp_path)))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert score is not None, done.stdout[-2000:] + done.stderr
    assert done.returncode == 0, f"exposure {score.group(1)} > 2.0"


def test_the_unit_runs_commands_the_cli_has() -> None:
    """ExecStartPre validates and ExecStart runs with flags `edge-gateway` accepts."""
    text = UNIT.read_text()
    pre, start = commands(text, "ExecStartPre"), commands(text, "ExecStart")
    assert [c[0] for c in pre + start] == [INSTALLED, INSTALLED]
    parser = _parser()
    checked = parser.parse_args(pre[0][1:])
    assert checked.command == "validate"
    run = parser.parse_args(start[0][1:])
    assert (run.command, run.config, run.console) == (
        "run", Path("/etc/edge-gateway/plant.yaml"), False)
    assert checked.plant == run.config  # the file the service runs is the one checked
    assert commands(text, "ExecReload") == [["/bin/kill", "-HUP", "$MAINPID"]]
