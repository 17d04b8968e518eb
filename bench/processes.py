"""The processes a benchmark starts (Mosquitto, simulators, the gateway) and what /proc says
about them.

Why subprocesses: the gateway's CPU and memory are only measurable alone when nothing else
shares its process, and the simulators must not steal its event loop. Why /proc and not
psutil: psutil is not a dependency of the project, and utime+stime / VmRSS / VmHWM are all
that is needed (the suite is Linux-only, like the gateway's systemd target).

Cleanup is layered because a benchmark that leaves a broker or 200 simulated machines
listening poisons the next run:

1. every process is registered in a `ProcessGroup`, stopped in reverse order by `close()`
   (called from a `finally`, and from `atexit`);
2. SIGTERM to the bench becomes `SystemExit`, so the `finally` blocks run;
3. on Linux each child asks the kernel for SIGTERM when the bench's main thread dies
   (`PR_SET_PDEATHSIG`), which covers SIGKILL of the bench (a CI timeout) too. The request
   is made by a tiny Python shim that then `exec`s the real command, because `preexec_fn`
   is unsafe once paho's network threads are running.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Runs in the child: ask for SIGTERM when the parent thread dies, then become the command.
_GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"  # parent already gone
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def guarded(cmd: Sequence[str]) -> list[str]:
    """`cmd`, wrapped so the kernel terminates it if the bench dies without cleaning up."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _GUARD, str(os.getpid()), *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_port_block(count: int, attempts: int = 100) -> int:
    """First port of `count` consecutive free ports (the simulator wants PORT..PORT+N-1)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 60_000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free ports found on {HOST}")


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on `port`; raises if `proc` dies first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout:.0f} s")


# ---- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and ')'
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), from /proc: a gateway's
    workers, whose CPU and memory are the gateway's too."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def system_busy_seconds() -> float:
    """CPU time all processes of the machine have used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM): resident set now and its peak over the process' life, in bytes."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


# ---- processes -----------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (negative: killed by signal)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Every child of one bench run; `close()` stops them newest first, whatever happened."""

    workdir: Path
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.close)

    def spawn(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> Child:
        """`cwd`: where `python -m` finds the packages (another source tree: its code)."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                guarded(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=cwd, env={**os.environ, **(env or {})},
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> int | None:
        code = child.stop(timeout)
        with contextlib.suppress(ValueError):
            self.children.remove(child)
        return code

    def close(self) -> None:
        while self.children:
            self.children.pop().stop(timeout=5.0)


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the children."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed (`make mosquitto` or `apt-get install mosquitto`): "
            "the benchmarks measure against a real broker"
        )
    return found


def mosquitto_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


def start_mosquitto(
    group: ProcessGroup, name: str = "mosquitto", extra: str = ""
) -> tuple[Child, int]:
    """A broker on a free loopback port, with queues deep enough never to drop for us.

    `max_queued_messages` is raised because a burst of QoS 1 messages beyond the default
    1000 would be dropped silently and read as a gateway loss. `extra`: more configuration
    (e.g. a bridge); `name` tells several brokers of one run apart.
    """
    binary = mosquitto_binary()
    port = free_port()
    conf = group.workdir / f"{name}.conf"
    conf.write_text(
        f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
        f"user {getpass.getuser()}\nmax_queued_messages 1000000\n"
        f"log_type error\nlog_type warning\n{extra}"
    )
    child = group.spawn(name, [binary, "-c", str(conf)])
    wait_port(port, 10.0, child.proc)
    return child, port


def start_simulators(
    group: ProcessGroup, machines: int, time_scale: float = 60.0
) -> tuple[Child, int]:
    """`python -m simulators.modbus_server --machines N` on N consecutive free ports."""
    base = free_port_block(machines)
    child = group.spawn(
        f"simulators-{machines}",
        [sys.executable, "-m", "simulators.modbus_server", "--machines", str(machines),
         "--port", str(base), "--time-scale", str(time_scale), "--seed", "7"],
    )
    wait_port(base + machines - 1, 60.0, child.proc)  # ports are bound in order
    return child, base
