"""Before any worker starts: every machine's state in the files of the worker that serves it.

Why: with `run --workers N` a machine's worker is a hash of its id modulo N
(edge/config/workers.py), and each worker keeps its machines' outbox (chain heads and
pending envelopes), OEE store, part store and bookings in `<state_dir>/worker-<i>/` (one
process: `<state_dir>` itself). A changed N moves machines to other workers; without this,
their chains restarted at seq 1, their part sequence too, and envelopes still pending in a
file no process opens any more were never sent.

What: the parent, before it starts any worker (or the one process, before it starts),
looks in every store file of `<state_dir>` and of every `worker-<i>/` there is, and moves
each machine's rows that are not where the current count places them, store by store
(edge/storage/move.py: copy, commit, delete, commit; run again it finishes a move a kill
interrupted, copying nothing twice). Because the scan does not trust any record of the
previous count, a state directory left by any count, or by an interrupted move, converges
to one copy of each machine's rows, in its worker's files. Then the store files no process
opens any more (`worker-<i>/` with i >= N, or `<state_dir>`'s own when N > 1) are deleted
once they hold no row (and such a worker's unused nonce file, then its directory); what
they still hold (rows of no machine) stays and is logged. The count is written to
`<state_dir>/workers`, so `auto` keeps this layout.

Not moved (not per machine): the parent's query nonces, the keys, and each outbox's
per-destination counters of what was acknowledged, dropped or rejected (status counts of
the files that remain).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.bookings.store import BookingMachines
from edge.config.loader import LoadedPlant
from edge.config.workers import PINNED, WorkerRole, owner
from edge.egress.outbox import OutboxMachines
from edge.kpi.store import OeeMachines
from edge.parts.store import PartMachines
from edge.query.nonces import NONCE_FILE
from edge.storage.move import MachineState
from models.logger import Logger

STORES: tuple[type[MachineState], ...] = (OutboxMachines, OeeMachines, PartMachines,
                                          BookingMachines)


@dataclass(frozen=True, slots=True)
class Relocation:
    """A machine's rows of one store, moved to another worker's file."""

    store: str
    source: Path
    target: Path
    machines: tuple[str, ...]
    rows: int
    clashes: int


class Repartition:
    """Where each machine's state belongs for `count` workers, and the moves that put it
    there. `base` is the gateway's state directory (the parent's, not a worker's)."""

    def __init__(self, loaded: LoadedPlant, count: int, log: Logger,
                 alive: Callable[[], object] = lambda: None) -> None:
        """`alive` is called after each machine's move in each store: the service tells
        systemd (a watchdog ping while a SIGHUP's move runs, more start time while the
        first start's does)."""
        if loaded.worker is not None:
            raise ValueError("repartition runs in the parent, before any worker")
        self.loaded = loaded
        self.count = count
        self.base = loaded.state_dir
        self.log = log
        self.alive = alive

    def home(self, machine: str) -> Path:
        """The directory whose stores hold `machine` with `count` workers."""
        if self.count == 1:
            return self.base
        index = owner(self.loaded.plant, machine, self.count)
        return self.base / WorkerRole(index, self.count).directory

    def locations(self) -> list[Path]:
        """`base` and every `worker-<i>/` in it, in index order."""
        if not self.base.is_dir():
            return []
        workers = sorted((p for p in self.base.glob("worker-*")
                          if p.name[7:].isdigit() and p.is_dir()),
                         key=lambda p: int(p.name[7:]))
        return [self.base, *workers]

    def active(self) -> set[Path]:
        if self.count == 1:
            return {self.base}
        return {self.base / WorkerRole(i, self.count).directory for i in range(self.count)}

    def run(self) -> list[Relocation]:
        """Move what is misplaced, clear what nobody opens any more, pin the count."""
        done: list[Relocation] = []
        stores = [kind() for kind in STORES]
        for store in stores:
            for where in self.locations():
                done += self._move_out(store, where)
        self._clear_unused(stores)
        if done:
            self.log.info("worker_state_repartitioned", workers=self.count,
                          machines=sorted({m for r in done for m in r.machines}),
                          moves=len(done), rows=sum(r.rows for r in done))
        self._pin()
        return done

    def _move_out(self, store: MachineState, where: Path) -> list[Relocation]:
        path = where / store.filename
        if not path.exists():
            return []
        leaving: dict[Path, list[str]] = {}
        for machine in sorted(store.stored_machines(path)):
            home = self.home(machine)
            if home != where:
                leaving.setdefault(home, []).append(machine)
        done = []
        for home, machines in sorted(leaving.items()):
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = home / store.filename
            for machine in machines:  # one at a time: each one moved is progress kept
                moved = store.move(path, target, [machine])
                rows, clashes = sum(moved.copied.values()), sum(moved.clashes.values())
                self.log.info("machine_state_moved", store=store.label, source=str(path),
                              target=str(target), machines=[machine], rows=rows,
                              deleted=sum(moved.deleted.values()))
                if clashes:
                    self.log.warning(
                        "machine_state_clash", store=store.label, target=str(target),
                        machine=machine, clashes=dict(moved.clashes),
                        note="the target already held other state of this machine (a "
                        "worker count changed by an earlier version); the later-saved "
                        "heads were kept")
                done.append(Relocation(store.label, path, target, (machine,), rows, clashes))
                self.alive()
        return done

    def _clear_unused(self, stores: list[MachineState]) -> None:
        """Delete store files no process opens with `count` workers once they hold no row
        (their `-wal`/`-shm` too), then an emptied `worker-<i>/`."""
        active = self.active()
        for where in self.locations():
            if where in active:
                continue
            for store in stores:
                path = where / store.filename
                if not path.exists():
                    continue
                if store.holds_rows(path):
                    self.log.warning("store_left_behind", store=store.label, path=str(path),
                                     note="rows of no machine of this plant: no process "
                                     "opens this file with this worker count")
                    continue
                _unlink_with_wal(path)
            if where != self.base:
                # a worker's own nonce file is unused: the parent checks every request
                _unlink_with_wal(where / NONCE_FILE)
                with contextlib.suppress(OSError):  # not empty: something else is in it
                    where.rmdir()

    def _pin(self) -> None:
        """The layout on disk is now `count`'s: `auto` must keep it (edge/config/workers.py)."""
        try:
            self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.base / PINNED).write_text(f"{self.count}\n", encoding="utf-8")
        except OSError as exc:
            self.log.warning("workers_not_pinned", path=str(self.base / PINNED), error=str(exc))


def _unlink_with_wal(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


__all__ = ["STORES", "Relocation", "Repartition"]
