"""The booking desk: answers a platform's `reserve`, `release` and `bookings` queries.

    query handler (signed, authorized, fresh, rate-limited) --> QueryBackend --> BookingDesk
        --> BookingStore (one transaction: read accepted bookings, decide, commit)
        --> BookingPublisher.flush (signed `bookings` records into the outbox, capacity
            republished for the machine) --> the reply

The reply leaves only after the decision is committed (on the gateway's store writer
thread: the desk awaits it, the event loop keeps polling), so an acceptance the platform was
told about survives SIGKILL. What blocks a machine's time besides the store's accepted
bookings is gathered here (`PlantHolds`: the YAML's bookings and bookings files,
maintenance, blackouts; plus the running job's expected end from the capacity view), so
the decision and the capacity offer see the same time as taken.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from edge.bookings.store import BookingRow, BookingStore, OperatorDecision, Release, Reserve
from edge.capacity.bookings import BookingsFiles
from edge.config.loader import LoadedPlant
from models.booking import (
    ALONE,
    BOOKING_STATES,
    Candidate,
    Interval,
    MachineSeen,
    OtherStores,
    Usage,
    every_machine,
    parse_reserve,
    plant_holds,
)
from models.capacity import ideal_cycle_time_for
from models.plant import Machine, Platform
from models.sample import utc_now

RunningUntil = Callable[[str, datetime], datetime | None]
"""machine, now -> the running job's expected end (models.capacity.expected_program_end)."""


class PlantHolds:
    """Time the plant itself has taken on a machine: YAML bookings, bookings files,
    maintenance and blackouts, each with a reason a platform can read."""

    def __init__(self, config: Callable[[], LoadedPlant], files: BookingsFiles) -> None:
        self.config = config
        self.files = files

    def holds(self, machine: Machine) -> list[tuple[Interval, str]]:
        plant = self.config().plant
        out = plant_holds(plant.booking, machine.id)
        for b in [*machine.bookings, *self.files.bookings(machine)]:
            ref = f" {b.reference}" if b.reference else ""
            out.append((b.interval(), f"plant booking{ref}"))
        return out


class BookingDesk:
    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        store: BookingStore,
        holds: PlantHolds,
        running_until: RunningUntil,
        on_change: Callable[[], object],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.holds = holds
        self.running_until = running_until
        self.on_change = on_change
        self.clock = clock

    def _candidate(self, m: Machine, program: str | None, now: datetime) -> Candidate:
        busy = self.holds.holds(m)
        until = self.running_until(m.id, now)
        if until is not None and until > now:
            busy.append(((now, until), "the running job"))
        return Candidate(m.id, tuple(busy), ideal_cycle_time_for(m, program))

    def _machines(
        self, platform: Platform, asset: str | None, process: str | None, only: str | None
    ) -> list[Machine]:
        """Machines the request may go to, in YAML order (`only`: that one of them);
        KeyError when there is none."""
        # an energy meter (`meter_for`) makes no parts: it is never offered, so never booked
        enabled = [m for m in self.config().enabled_machines() if m.meter_for is None]
        if only is not None:
            enabled = [m for m in enabled if m.id == only]
        if asset is not None:
            found = [m for m in enabled if m.id == asset]
            if not found:
                raise KeyError(f"unknown machine {asset!r}")
            return found
        assert process is not None
        wanted = process.strip().lower()
        found = [
            m
            for m in enabled
            if m.capabilities is not None
            and wanted in m.capabilities.processes
            and any(fnmatch.fnmatchcase(m.id, p) for p in platform.machines)
        ]
        if not found:
            raise KeyError(f"no machine shared with this platform offers process {process!r}")
        return found

    async def reserve(
        self, platform: Platform, params: Mapping[str, Any], others: OtherStores = ALONE,
        seen: MachineSeen = every_machine,
    ) -> dict[str, Any]:
        """ValueError: bad params; KeyError: no such machine or process. `others`: what
        the gateway's other booking stores bring (`run --workers N`). `seen`: the machines
        the destination asked through shows (`platform` is already narrowed to them, so no
        candidate is hidden; asking again with the reference of an open booking on a hidden
        machine is refused, naming no machine: ValueError). Returns once the decision is
        committed (on the store's writer thread, edge/bookings/store.py)."""
        req = parse_reserve(params)
        now = self.clock()
        machines = self._machines(platform, req.asset, req.process, others.machine)
        plant = self.config().plant
        row, new = await self.store.decide(Reserve(
            platform.id, req, [self._candidate(m, req.program, now) for m in machines],
            plant.shifts, plant.booking, now, disclosed=platform.public_reference,
            elsewhere=others.usage, seen=seen))
        self.on_change()  # also when not new: the transaction may have expired held requests
        return {**row.result(), "new": new}

    async def propose(
        self, platform: Platform, params: Mapping[str, Any], others: OtherStores = ALONE,
        seen: MachineSeen = every_machine,
    ) -> dict[str, Any]:
        """What `reserve` would decide here now (state, machine), committing nothing."""
        req = parse_reserve(params)
        now = self.clock()
        machines = self._machines(platform, req.asset, req.process, others.machine)
        plant = self.config().plant
        row, _ = await self.store.decide(Reserve(
            platform.id, req, [self._candidate(m, req.program, now) for m in machines],
            plant.shifts, plant.booking, now, elsewhere=others.usage, commit=False,
            seen=seen))
        return {"state": row.state, "machine": row.machine}

    def usage(self, platform: str) -> Usage:
        """What `platform` holds in this desk's store now, for its quota elsewhere."""
        return self.store.usage(platform, self.clock())

    async def release(
        self, platform: Platform, params: Mapping[str, Any], seen: MachineSeen = every_machine
    ) -> dict[str, Any]:
        """KeyError: not this platform's booking, or on a machine `seen` hides (the same
        words: a destination that hides the machine does not reveal the booking); ValueError:
        bad params; Refused: closed."""
        row = self._own(platform, params, seen)
        released = await self.store.withdraw(Release(platform.id, row.id, self.clock()))
        self.on_change()
        return released.result()

    def _own(
        self, platform: Platform, params: Mapping[str, Any], seen: MachineSeen
    ) -> BookingRow:
        booking, reference = params.get("booking"), params.get("reference")
        if booking is not None and isinstance(booking, str):
            row = self.store.get(booking)
            if row is None or row.platform != platform.id \
                    or (row.machine and not seen(row.machine)):
                raise KeyError(f"no booking {booking!r} of this platform")
            return row
        if reference is not None and isinstance(reference, str):
            rows = self.store.bookings(
                platform=platform.id,
                reference=reference,
                states=("requested", "accepted"),
                limit=1,
                seen=seen,
            )
            if not rows:
                raise KeyError(f"no open booking with reference {reference!r}")
            return rows[0]
        raise ValueError("give params.booking (the gateway's id) or params.reference (yours)")

    def list(
        self, platform: Platform, params: Mapping[str, Any], seen: MachineSeen = every_machine
    ) -> dict[str, Any]:
        """The platform's own bookings on machines `seen` shows, newest first (`state`,
        `reference`, `limit`: a page of `limit` of those when there are as many)."""
        states = params.get("state")
        if isinstance(states, str):
            states = [states]
        if states is not None and (
            not isinstance(states, list) or not all(s in BOOKING_STATES for s in states)
        ):
            raise ValueError(f"state must be one or a list of {', '.join(BOOKING_STATES)}")
        limit = params.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValueError("limit must be an integer from 1 to 1000")
        reference = params.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise ValueError("reference must be a string")
        rows = self.store.bookings(
            platform=platform.id, states=states, reference=reference, limit=limit, seen=seen
        )
        return {"bookings": [r.result() for r in rows]}


def capacity_held(
    config: Callable[[], LoadedPlant], store: BookingStore
) -> Callable[[str, datetime], list[Interval]]:
    """What the capacity offer leaves out besides the YAML's and files' bookings: accepted
    platform bookings, waiting requests within their hold, maintenance and blackouts (the
    same time `reserve` refuses)."""

    def held(asset: str, now: datetime) -> list[Interval]:
        rules = config().plant.booking
        return [iv for iv, _ in (*plant_holds(rules, asset), *store.holding(asset, now))]

    return held


def part_links(store: BookingStore) -> Callable[[str, datetime], dict[str, Any] | None]:
    """machine, a part's end -> the `booking` its `part` record carries (the accepted
    booking whose window holds the end), or None."""

    def link(asset: str, at: datetime) -> dict[str, Any] | None:
        row = store.covering(asset, at)
        return None if row is None else row.link()

    return link


class OperatorDesk:
    """`edge-gateway bookings list|accept|decline`: a person's decisions, written to the
    same store from another process. The running gateway notices the commit (it polls
    `PRAGMA data_version` every `booking.poll_seconds`), signs the record and republishes
    the capacity offer. Accepting checks the hard limits again, except the running job's
    remaining time, which only the running gateway knows (the person at the machine does)."""

    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        store: BookingStore,
        holds: PlantHolds,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self.holds = holds
        self.clock = clock

    async def decide(self, booking: str, *, accept: bool, reason: str | None) -> BookingRow:
        """KeyError: no such booking; Refused: not waiting, or it no longer fits. What else
        holds the machine is gathered here (the plant's holds read config and files) and
        the decision committed in the store's transaction, on its writer thread in the
        gateway."""
        plant = self.config().plant
        row = self.store.get(booking)
        if row is None:
            raise KeyError(booking)
        try:
            busy = self.holds.holds(plant.machine(row.machine))
        except KeyError:
            busy = plant_holds(plant.booking, row.machine)
        return await self.store.withdraw(OperatorDecision(
            booking, accept, reason, tuple(busy), plant.shifts, self.clock()))


def booking_line(row: BookingRow) -> str:
    """One row of `edge-gateway bookings list`."""
    r = row.result()
    held = f"  held until {r['hold_until']}" if r["hold_until"] else ""
    # why it waited, while it waits: after a decision it read as if it still waited
    waiting = row.waits_for and row.state == "requested"
    waits = f"  waits for: {'; '.join(row.waits_for)}" if waiting else ""
    reason = f"  ({row.reason})" if row.reason else ""
    return (
        f"{row.id}  {row.state:<9}  {row.platform}/{row.reference}  {row.machine}  "
        f"{_window(row, r)}{held}{reason}{waits}"
    )


def _window(row: BookingRow, result: dict[str, Any]) -> str:
    """The booked window; a request refused before it got one shows what was asked,
    never `None .. None`."""
    if result["start"] is not None:
        return f"{result['start']} .. {result['end']}"
    asked = [f"{key} {row.request[key]}" for key in WINDOW_KEYS if row.request.get(key)]
    return f"asked: {', '.join(asked)}" if asked else "no window"


WINDOW_KEYS = ("start", "end", "duration_minutes", "earliest_start", "latest_start", "quantity")
