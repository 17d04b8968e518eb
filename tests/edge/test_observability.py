"""Every log line is one JSON object under systemd, including the libraries' own warnings.

Run in a child process: `configure_logging` sets process-wide logging state, and the
warnings come from a real asyncua server (started without certificates, which asyncua warns
about through the standard library's `logging`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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


WRITES = """
import io, json, logging, sys

class Recording(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
    def write(self, s: str) -> int:
        self.calls.append(s)
        return len(s)

sys.stderr = rec = Recording()
from edge.observability import configure_logging, get_logger
configure_logging("json")
get_logger(worker=0).info("reloaded", machines=2)
logging.getLogger("asyncua").warning("theirs")
print(json.dumps(rec.calls), file=sys.__stdout__)
"""


def test_each_line_is_one_write_with_its_newline() -> None:
    """The processes of `run --workers N` share one stderr (the journal's stream, a log
    file), unbuffered under PYTHONUNBUFFERED: a line written in two calls, text then
    newline, let another process's line in between, and both became one line that is not
    JSON (a worker's `reloaded` was lost that way)."""
    done = subprocess.run([sys.executable, "-c", WRITES], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    calls = [c for c in json.loads(done.stdout) if c]  # an empty flush-write is harmless
    assert len(calls) == 2, calls
    for call in calls:
        assert call.endswith("\n") and call.count("\n") == 1, calls
        json.loads(call)


WARNS = """
import json, sys, tempfile, warnings
if sys.argv[1] == "cli":  # the entry every process runs, `run --workers N`'s workers too
    from edge.cli import main
    with tempfile.TemporaryDirectory() as tmp:
        assert main(["--log-format", "json", "schema", "-o", tmp + "/s.json"]) == 0
else:
    from edge.observability import configure_logging
    configure_logging("json")
def library_call() -> None:
    warnings.warn("old_api() is deprecated, use new_api()", UserWarning, stacklevel=1)
for _ in range(3):  # one location: Python's default filter shows it once
    library_call()
warnings.warn("another place", RuntimeWarning)
"""


@pytest.mark.parametrize("entry", ["configure_logging", "cli"])
def test_python_warnings_are_json_lines_once_per_location(entry: str) -> None:
    """`warnings.warn` printed plain text on stderr (`file:line: UserWarning: ...`),
    which broke the journal's JSON lines; now each is one `python_warning` event, and
    the default filters still apply, so a warning raised in a loop is one line."""
    done = subprocess.run([sys.executable, "-c", WARNS, entry], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    shown = [x for x in lines if x["event"] == "python_warning"]
    assert [(x["category"], x["message"]) for x in shown] == [
        ("UserWarning", "old_api() is deprecated, use new_api()"),
        ("RuntimeWarning", "another place"),
    ], done.stderr
    assert all(x["level"] == "warning" and x["location"].startswith("<string>:")
               for x in shown)


QUIET = """
import json, sys
from edge.observability import configure_logging, get_logger
from edge.status.log_tap import TAP
configure_logging("json", level="warning")
log = get_logger()
log.debug("noise")
log.info("reload_started", file="plant.yaml")
log.info("reloaded", machines=2)
log.warning("device_link_down", asset="m1")
print(json.dumps([TAP.recent.reload_counts, [t for _, t in TAP.recent.reloads],
                  TAP.recent.last_reload is not None]), file=sys.__stdout__)
"""


def test_a_reload_is_counted_whatever_the_log_level() -> None:
    """`--log-level warning` dropped `reloaded` (info) before the tap saw it: the reload
    was neither listed nor counted, and a worker had no outcome to report, so its parent
    would have waited for one in vain. The tap now sees info; the level still decides what
    is written."""
    done = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    counts, reloads, reported = json.loads(done.stdout)
    assert counts == {"ok": 1, "rejected": 0, "partial": 0} and reloads == ["ok"] and reported
    written = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.strip()]
    assert written == ["device_link_down"]
