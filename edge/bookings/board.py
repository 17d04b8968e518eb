"""The bookings as the status page shows them, and a person's decision taken there.

Why a class of its own rather than the page calling the store: a decision from the page must
be the decision `edge-gateway bookings accept|decline` takes (`OperatorDesk.decide`: one
transaction in the store, the hard limits checked again, the `accepted`/`declined` record
written with the state), and the page runs inside the gateway, so instead of waiting for the
publisher's `PRAGMA data_version` poll it flushes at once (`on_change`: the signed record on
the bookings stream, the capacity offer republished). The audit line says who decided
(`via`: the page and the remote address, or the command line and the login name) and why;
the signed record says `by: operator` either way. `edge-gateway bookings accept|decline`
decides through this class too, with no flush (`on_change` does nothing: the running
gateway notices the store's change by its poll), and so does the page of `run --workers
N`, which runs in the parent over every worker's store (`WorkerDesks`): the worker holding
the booking notices by its poll, within `booking.poll_seconds`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from edge.bookings.desk import OperatorDesk
from edge.bookings.store import BookingRow, BookingStore, BookingStoreError, Refused
from models.booking import BOOKING_STATES
from models.errors import EdgeError
from models.sample import utc_now

DECIDED = tuple(s for s in BOOKING_STATES if s != "requested")


@dataclass(frozen=True)
class BookingsView:
    """One read of the bookings for the page, at `now`."""

    now: datetime
    waiting: list[BookingRow]
    """Requests waiting for a person, the soonest hold end first."""
    upcoming: list[BookingRow]
    """Accepted bookings whose window has not ended, by start."""
    recent: list[BookingRow]
    """The latest state changes other than requests (decisions, expiries, releases...)."""


def operator() -> str:
    """Who runs this command, for the audit line of a decision taken on the command line:
    the login name (never a secret), or the numeric uid when the system has no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        return f"uid {os.getuid()}"


Desks = Callable[[], Sequence[OperatorDesk]]
"""The desks of every bookings store the page shows, asked for at each read: one for a
single process; one per worker under `run --workers N`, whose parent serves the page while
each worker keeps its own machines' bookings (`WorkerDesks`)."""


class BookingBoard:
    def __init__(
        self,
        desks: OperatorDesk | Desks,
        on_change: Callable[[], object],
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], datetime] = utc_now,
        recent: int = 20,
    ) -> None:
        self.desks: Desks = (lambda: (desks,)) if isinstance(desks, OperatorDesk) else desks
        self.on_change = on_change
        self.log = log
        self.clock = clock
        self.recent = recent

    def view(self, machine: str | None = None) -> BookingsView:
        """BookingStoreError when a store cannot be read."""
        now = self.clock()
        stores = [d.store for d in self.desks()]
        waiting = [r for s in stores for r in s.bookings(states=["requested"], machine=machine)]
        waiting.sort(key=lambda r: (r.expires or now, r.id))
        upcoming = [
            r for s in stores for r in s.bookings(states=["accepted"], machine=machine)
            if r.end is not None and r.end > now
        ]
        upcoming.sort(key=lambda r: (r.start or now, r.id))
        recent = [r for s in stores for r in s.bookings(
            states=DECIDED, machine=machine, limit=self.recent, by_update=True)]
        recent.sort(key=lambda r: (r.updated, r.id), reverse=True)
        return BookingsView(now, waiting, upcoming, recent[:self.recent])

    async def decide(self, booking: str, *, accept: bool, reason: str | None, via: str
                     ) -> BookingRow:
        """KeyError: no such booking; Refused: decided, expired, or no longer fits;
        BookingStoreError: the store failed. Each outcome is logged with `via`."""
        decision = "accept" if accept else "decline"
        try:
            desk = next((d for d in self.desks() if d.store.get(booking) is not None), None)
            if desk is None:
                raise KeyError(booking)
            row = await desk.decide(booking, accept=accept, reason=reason)
        except KeyError:
            self.log.warning("booking_decision_refused", booking=booking, decision=decision,
                             via=via, error="no such booking")
            raise
        except (Refused, BookingStoreError) as exc:
            self.log.warning("booking_decision_refused", booking=booking, decision=decision,
                             via=via, error=str(exc))
            raise
        self.log.info("booking_decided", booking=row.id, asset=row.machine, state=row.state,
                      by="operator", via=via, reason=reason)
        try:
            self.on_change()
        except EdgeError as exc:  # committed: the publisher's poll sends it later
            self.log.error("bookings_publish_deferred", booking=row.id, error=str(exc))
        return row


class WorkerDesks:
    """The workers' bookings stores as the parent of `run --workers N` reads them for the
    page: each opened once its worker has created it (a worker that has not started yet
    has no bookings), then kept open; decisions go to the store holding the booking, as
    `edge-gateway bookings accept|decline` does, and its worker notices the commit by its
    poll (`booking.poll_seconds`), signs the record and republishes the offer."""

    def __init__(self, paths: Sequence[Path], desk: Callable[[BookingStore], OperatorDesk],
                 log: FilteringBoundLogger) -> None:
        self.paths = list(paths)
        self.desk = desk
        self.log = log
        self._open: dict[Path, OperatorDesk] = {}

    def __call__(self) -> list[OperatorDesk]:
        for path in self.paths:
            if path not in self._open and path.exists():
                self._open[path] = self.desk(BookingStore(path, logger=self.log))
        return [self._open[p] for p in self.paths if p in self._open]

    def close(self) -> None:
        desks, self._open = self._open, {}
        for d in desks.values():
            d.store.close()
