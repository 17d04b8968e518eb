"""The outbox's free-disk floor: a default that scales with the disk, and the warning when
the state directory's file system is already below it.

A fixed 512 MiB floor made a gateway on a small eMMC or SD card (or any disk with less
free space) refuse its whole output. The floor exists so a backlog cannot fill the disk the
operating system and the databases need; it should be a share of the disk, with a minimum
that leaves SQLite room to checkpoint its WAL and a maximum so a large disk does not hold
back gigabytes for nothing. An explicit `min_free_disk_bytes` in the YAML always wins.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from models.plant import Destination

MIB = 2**20
FLOOR_SHARE = 0.05  # of the file system's size
FLOOR_MIN = 8 * MIB  # but never more than a quarter of a tiny disk
FLOOR_MAX = 512 * MIB


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """Size and free bytes of the file system holding `path` (free: for an unprivileged
    process, as `df` shows it)."""

    path: Path
    total: int
    free: int


def disk_space(path: Path) -> DiskSpace | None:
    """The file system of `path`, or of its nearest existing parent (the state directory may
    not exist before the first start); None when even that cannot be read."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return DiskSpace(path, usage.total, usage.free)


def default_floor(total: int) -> int:
    """5 % of the file system, at least 8 MiB (a quarter of a disk smaller than 32 MiB), at
    most 512 MiB."""
    low = min(FLOOR_MIN, total // 4)
    return max(low, min(FLOOR_MAX, int(total * FLOOR_SHARE)))


def resolve_floor(configured: int | None, space: DiskSpace | None) -> int:
    """The floor in force: the configured one, else the default for this disk (0, i.e. no
    floor, when the disk cannot be measured: never refuse data on a guess)."""
    if configured is not None:
        return configured
    return default_floor(space.total) if space is not None else 0


def below_floor(space: DiskSpace | None, floor: int) -> str | None:
    """A one-line warning when the file system already has less free space than `floor`."""
    if space is None or floor == 0 or space.free >= floor:
        return None
    return (
        f"state directory {space.path}: {space.free / MIB:.1f} MiB free, below the outbox's "
        f"free-disk floor of {floor / MIB:.1f} MiB (min_free_disk_bytes): while it stays "
        f"there a backlog for an unreachable broker cannot grow; live data to connected "
        f"brokers still flows"
    )


def outbox_floors(
    destinations: Iterable[Destination], state_dir: Path
) -> tuple[dict[str, int], list[str]]:
    """Each destination's floor in force, and the warnings (at most one per distinct floor)
    for `validate` and for the log at start."""
    space = disk_space(state_dir)
    floors = {d.id: resolve_floor(d.outbox.min_free_disk_bytes, space) for d in destinations}
    warnings = {w for f in floors.values() if (w := below_floor(space, f))}
    return floors, sorted(warnings)
