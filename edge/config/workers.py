"""Which worker process of a host serves which machine (`run --workers N`).

Why a hash of the machine id, not its position in the YAML: a machine's chains (`seq`,
`prev` per topic) live in the outbox of the worker that serves it, so the assignment must
not move when machines are added, removed or reordered; only a change of N moves machines,
and then the parent moves their state to the new worker's files before any worker starts
(edge/daemon/repartition.py), so their chains continue. crc32 is stable across processes
and Python versions, unlike `hash()`.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import ConfigurationError

if TYPE_CHECKING:
    from edge.config.loader import LoadedPlant
    from models.plant import Machine, Plant

MAX_DEFAULT_WORKERS = 4
"""`auto` never starts more processes than this, however many cores there are: each costs
~85 MB and the gain shrinks (2 workers gave 1.47x on a busy 2-core host, bench 2i), and an
edge box keeps cores for its broker and the rest of the machine."""
MACHINES_PER_WORKER = 16
"""`auto` gives each worker at least this many machines: a smaller plant stays one process
(one core polls and signs well over a dozen machines; a process more is memory for nothing)."""
OUTBOX = "outbox.sqlite3"
"""edge/egress/outbox.py FILENAME (not imported: egress imports the configuration; a test
keeps the two equal)."""
PINNED = "workers"
"""The file in the state directory that keeps the count `auto` chose at the first start."""


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Worker `index` of `count`: serves the machines `worker_of` gives it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def directory(self) -> str:
        """Its own state subdirectory: its outbox and OEE store (the key stays shared)."""
        return f"worker-{self.index}"

    @property
    def suffix(self) -> str:
        """Appended to MQTT client ids: brokers drop a session whose id connects again."""
        return f"-w{self.index}"

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        """`I/N`, as the parent passes it on the command line."""
        index, _, count = text.partition("/")
        return cls(int(index), int(count))


def worker_of(machine_id: str, count: int) -> int:
    return zlib.crc32(machine_id.encode()) % count


def placement(machine: Machine) -> str:
    """The id whose hash places `machine`: an energy meter (`meter_for`) goes with the
    machine it meters, whose part and energy records are built from its readings."""
    return machine.meter_for or machine.id


def owner(plant: Plant, machine_id: str, count: int) -> int:
    """The worker that serves `machine_id` (or would, for an id not in the plant)."""
    try:
        return worker_of(placement(plant.machine(machine_id)), count)
    except KeyError:
        return worker_of(machine_id, count)


def assignment(machines: list[Machine], count: int) -> list[list[str]]:
    """Machine ids per worker, in YAML order within each."""
    out: list[list[str]] = [[] for _ in range(count)]
    for m in machines:
        out[worker_of(placement(m), count)].append(m.id)
    return out


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. systemd's CPUAffinity=)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(machines: int, cores: int | None = None) -> int:
    """`auto`: one worker per core, at most `MAX_DEFAULT_WORKERS`, at least
    `MACHINES_PER_WORKER` machines each."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(cores, MAX_DEFAULT_WORKERS, machines // MACHINES_PER_WORKER))


def one_process_only(loaded: LoadedPlant) -> str | None:
    """Why this plant must run as one process, or None: a Sparkplug node is one MQTT
    session (N workers would be N sessions birthing and killing the same node)."""
    for dest in loaded.plant.destinations:
        if dest.format == "sparkplug_b":
            return f"destination {dest.id} is sparkplug_b (one edge node, one session)"
    return None


def resolve_workers(loaded: LoadedPlant, configured: int | None) -> int:
    """The worker count to run: `configured` (None or 0: `auto`). `auto` is decided once per state
    directory and kept in its `workers` file, because the count places each machine's outbox
    and chains: a count that followed the core count or the plant's size would move machines
    between workers' files (a start held up while their state is copied over,
    edge/daemon/repartition.py) after a hardware change or when machines are added. A state
    directory a single process already used (its own outbox) stays one process; one that N
    workers used (`worker-<i>/`) stays N. One process, unpinned, while `one_process_only`
    says so (an explicit count above 1 is then a ConfigurationError)."""
    only = one_process_only(loaded)
    if configured:
        if configured > 1 and only is not None:
            raise ConfigurationError(f"workers {configured}: {only}; run with --workers 1")
        return configured
    state = loaded.state_dir
    pinned = state / PINNED
    if only is not None:
        return 1
    try:
        return max(1, min(64, int(pinned.read_text(encoding="utf-8").split()[0])))
    except (OSError, ValueError, IndexError):
        pass
    used = [i for i in range(64) if (state / WorkerRole(i, 64).directory / OUTBOX).exists()]
    if (state / OUTBOX).exists():
        count = 1
    elif used:  # run with an explicit count before: keep its layout
        count = max(used) + 1
    else:
        count = default_workers(len(loaded.enabled_machines()))
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        pinned.write_text(f"{count}\n", encoding="utf-8")
    except OSError:
        pass  # unwritable: egress refuses the state directory with a clear error
    return count


def workers_for(loaded: LoadedPlant, override: int | None) -> int:
    """The count `loaded` runs with: `run --workers` (`override`; 0: `auto`) wins over the
    YAML's `gateway.workers`; `auto` as `resolve_workers` decides it. Asked at the start and
    again on SIGHUP, which restarts the pool when the answer changed."""
    configured = loaded.plant.gateway.workers
    return resolve_workers(loaded, override if override is not None
                           else (None if configured == "auto" else configured))


def state_files(loaded: LoadedPlant, name: str) -> list[Path]:
    """The state file `name` (bookings, parts...) of one process and of every worker
    (`worker-<i>/`) that exists, for commands that read them beside a running gateway."""
    base = loaded.state_dir
    found = [base / name] if (base / name).exists() else []
    workers = sorted((p for p in base.glob("worker-*") if p.name[7:].isdigit()),
                     key=lambda p: int(p.name[7:])) if base.is_dir() else []
    return found + [p / name for p in workers if (p / name).exists()]


def as_worker(loaded: LoadedPlant, role: WorkerRole) -> LoadedPlant:
    """`loaded` as worker `role` serves it: its machines only, its own state directory."""
    machines = [m for m in loaded.plant.machines
                if worker_of(placement(m), role.count) == role.index]
    ids = {m.id for m in machines}
    plant = loaded.plant.model_copy(update={"machines": machines})
    return dataclasses.replace(loaded, plant=plant, worker=role,
                               settings={k: v for k, v in loaded.settings.items() if k in ids})


__all__ = ["MACHINES_PER_WORKER", "MAX_DEFAULT_WORKERS", "OUTBOX", "PINNED", "WorkerRole",
           "as_worker", "assignment", "default_workers", "one_process_only",
           "owner", "placement", "resolve_workers", "state_files",
           "usable_cores", "worker_of", "workers_for"]
