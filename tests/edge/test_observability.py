"""Every log line is one JSON object under systemd, including the libraries' own warnings.

Run in a child process: `configure_logging` sets process-wide logging state, and the
warnings come from a real asyncua server (started without certificates, which asyncua warns
about through the standard library's `logging`).
"""

from __future__ import annotations

import json
import subprocess
import sys

from e2e import ROOT

SCRIPT = """
import asyncio
from asyncua import Server
from edge.observability import configure_logging, get_logger
configure_logging("json")
get_logger(machine="m1").warning("ours")
async def main():
    s = Server()
    await s.init()
    s.set_endpoint("opc.tcp://127.0.0.1:0/")
    await s.start()
    await s.stop()
asyncio.run(main())
"""


def test_asyncua_warnings_come_out_as_json_lines() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines[0]["event"] == "ours" and lines[0]["machine"] == "m1"
    foreign = [x for x in lines if x.get("logger", "").startswith("asyncua")]
    assert foreign, done.stderr
    assert all(x["level"] == "warning" and x["timestamp"].endswith("Z") for x in foreign)
