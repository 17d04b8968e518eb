"""Where the gateway's CPU goes: py-spy over the running daemon, summarized for the report.

Taken after a measured window, never during it (py-spy's sampling would land in the CPU
figure). py-spy skips idle threads, so every share is a share of CPU the gateway used.

Besides the generic views (self time per function, per module; inclusive time of the
gateway's own functions), `STAGES` names the pipeline's stages so the report can say
"signing costs X %" without anyone reading flame graphs. A stage whose function was renamed
shows 0 %: update the table, it is matched by name only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (label, function names as py-spy prints them; "Class" alone matches all of its methods;
# several names: a stage renamed between revisions, so before/after profiles line up)
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("poll loop: Modbus requests + decode (`ModbusAdapter.read_once`)",
     ("ModbusAdapter.read_once",)),
    ("read plan recomputed per poll (`minimum_requests`, via `describe()`)",
     ("minimum_requests",)),
    ("samples -> twin + egress (`DeviceFleet.on_samples`)",
     ("DeviceFleet.on_samples", "Gateway._on_samples")),
    ("  Sample -> record dict (`telemetry_record[s]`)", ("telemetry_record", "telemetry_records")),
    ("  of which timestamp text (`format_ts`)", ("format_ts",)),
    ("  twin update (`AssetTwin.apply`)", ("AssetTwin.apply",)),
    ("  OEE on a state change (`KpiService.on_state`)", ("KpiService.on_state",)),
    ("seal: sign + store (`Sealer.seal`)", ("Sealer.seal",)),
    ("  RFC 8785 canonicalization (`canonical_json`)", ("canonical_json",)),
    ("  Ed25519 + base64url (`sign_jws`)", ("sign_jws",)),
    ("  outbox append (`Outbox.append`)", ("Outbox.append",)),
    ("outbox ack after PUBACK (`Outbox.ack`)", ("Outbox.ack",)),
    ("MQTT transport (`MqttTransport.*`)", ("MqttTransport",)),
)


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame_key(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (to/file.py)`: per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.removeprefix(str(ROOT) + "/")
    return f"{name} ({path})"


def _bucket(key: str) -> str:
    path = key.rsplit("(", 1)[-1].rstrip(")")
    top = path.split("/", 1)[0]
    if top.startswith(".") or top[:1].isdigit():  # stdlib: "/lib/python3.11/asyncio/..."
        top = path.split("/", 2)[1] if path.count("/") >= 2 else path
    return top.removesuffix(".py")


def _matches(func: str, pattern: str) -> bool:
    return func == pattern or func.startswith(pattern + ".")


def summarize(raw: Path, seconds: float) -> dict[str, Any]:
    """Shares (% of samples) from py-spy's `--format raw` output (collapsed stacks)."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_key(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        leaf[frames[-1]] += n
        buckets[_bucket(frames[-1])] += n
        funcs = {f.split(" (", 1)[0] for f in frames}
        for f in set(frames):
            inclusive[f] += n
        for label, patterns in STAGES:
            if any(_matches(f, p) for f in funcs for p in patterns):
                stages[label] += n
    total = max(total, 1)

    def share(c: Counter[str], k: int, only_project: bool = False) -> list[list[Any]]:
        items = [(name, n) for name, n in c.most_common()
                 if not only_project or name.rsplit("(", 1)[-1].startswith(
                     ("edge/", "adapters/", "models/"))]
        return [[name, round(100 * n / total, 1)] for name, n in items[:k]]

    return {
        "available": True,
        "samples": total,
        "seconds": seconds,
        "raw": str(raw),
        "stages": [[label, round(100 * stages[label] / total, 1)] for label, _ in STAGES],
        "self_top": share(leaf, 15),
        "self_by_module": share(buckets, 12),
        "inclusive_project_top": share(inclusive, 15, only_project=True),
    }


def profile(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Record `seconds` of the process `pid` with py-spy and summarize it."""
    binary = py_spy_binary()
    if binary is None:
        return {"available": False, "reason": "py-spy not installed (pip install py-spy)"}
    cmd = [binary, "record", "--format", "raw", "--nonblocking", "--rate", "200",
           "--duration", str(int(seconds)), "--output", str(out), "--pid", str(pid)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"py-spy failed: {exc}"}
    if done.returncode != 0 or not out.exists():
        return {"available": False, "reason": f"py-spy failed: {done.stderr.strip()[-300:]}"}
    return summarize(out, seconds)
