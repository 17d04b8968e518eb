"""Which worker process of a host serves which machine (`run --workers N`).

Why a hash of the machine id, not its position in the YAML: a machine's chains (`seq`,
`prev` per topic) live in the outbox of the worker that serves it, so the assignment must
not move when machines are added, removed or reordered; only a change of N moves machines
(their chains then restart at seq 1 in the new worker's outbox, as when a machine moves
between the shares of a split plant). crc32 is stable across processes and Python
versions, unlike `hash()`.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config.loader import LoadedPlant

MAX_DEFAULT_WORKERS = 8
"""`--workers auto` never starts more processes than this, however many cores there are."""


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


def assignment(machine_ids: list[str], count: int) -> list[list[str]]:
    """Machine ids per worker, in YAML order within each."""
    out: list[list[str]] = [[] for _ in range(count)]
    for mid in machine_ids:
        out[worker_of(mid, count)].append(mid)
    return out


def default_workers(machines: int) -> int:
    """One worker per core, at most `MAX_DEFAULT_WORKERS` and never more than machines."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS, machines))


def as_worker(loaded: LoadedPlant, role: WorkerRole) -> LoadedPlant:
    """`loaded` as worker `role` serves it: its machines only, its own state directory."""
    machines = [m for m in loaded.plant.machines if worker_of(m.id, role.count) == role.index]
    ids = {m.id for m in machines}
    plant = loaded.plant.model_copy(update={"machines": machines})
    return dataclasses.replace(loaded, plant=plant, worker=role,
                               settings={k: v for k, v in loaded.settings.items() if k in ids})


__all__ = ["MAX_DEFAULT_WORKERS", "WorkerRole", "as_worker", "assignment", "default_workers",
           "worker_of"]
