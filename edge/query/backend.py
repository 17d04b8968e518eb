"""What queries answer: read-only views of the fleet, OEE, capacity and egress statistics.

`QueryBackend` implements the query handler's `Backend` from explicit dependencies. Nothing
here writes to a machine or changes the gateway's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from edge import package_version
from edge.bookings.desk import BookingDesk
from edge.bookings.store import Refused
from edge.capacity.publisher import CapacityRecords
from edge.config.loader import LoadedPlant
from edge.devices.fleet import FleetView
from edge.egress.status_scope import device_detail
from edge.kpi.service import KpiService
from edge.parts.energy import EnergyWindows
from edge.parts.store import PartStore
from edge.query.handler import QueryError
from models.booking import ALONE, PROPOSE, MachineSeen, OtherStores, every_machine
from models.plant import STREAMS, Machine, Platform, machine_topic
from models.sample import format_ts, utc_now

StatsProvider = Callable[[], dict[str, dict[str, Any]]]


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from exc
    if ts.tzinfo is None:
        raise ValueError(f"timestamp needs a time zone: {value!r}")
    return ts


IDENTIFICATION_SIGNALS = frozenset({"serial_number", "model", "manufacturer", "control_version"})


def device_identification(last_values: dict[str, Any]) -> dict[str, str]:
    """What devices say about themselves, for the AAS nameplate: Haas Q100/Q101/Q102 and
    FOCAS system info as `serial_number`, `model`, `control_version`; OPC UA DI
    Identification as `identification_<BrowseName>`. The YAML still wins (models/aas.py).
    Keyed by the signal's own name, which the nameplate element it fills carries (so a
    destination denying the signal gets the answer without it, edge/egress/redaction.py)."""
    return {name: str(sample.value) for name, sample in last_values.items()
            if sample.value is not None and sample.quality.value != "bad"
            and (name in IDENTIFICATION_SIGNALS or name.startswith("identification_"))}


_NOT_OF_A_METER = frozenset({"oee", "capacity", "bookings"})
"""An energy meter (`meter_for`) makes no parts: no OEE, no capacity offer, not bookable."""


def _published_streams(machine: Machine) -> list[str]:
    """The streams a platform can find on `machine`'s topics, so `describe` names no topic
    that never carries anything: `part` only with a `part_record`, and for an energy meter
    neither `oee`, `capacity` nor `bookings`."""
    return [
        s for s in STREAMS
        if (s != "part" or machine.part_record is not None)
        and (machine.meter_for is None or s not in _NOT_OF_A_METER)
    ]


def describe(loaded: LoadedPlant, version: str | None = None) -> dict[str, Any]:
    """`describe`: the gateway and its machines, from the configuration alone; `version`
    is the installed package's unless given (the conformance vectors pin it)."""
    plant = loaded.plant
    g = plant.gateway
    return {
        "gateway": g.id,
        "site": g.site,
        "version": package_version() if version is None else version,
        "streams": list(STREAMS),
        "machines": {
            m.id: {
                "name": m.name,
                "area": m.area,
                "line": m.line,
                "adapter": m.adapter,
                "nameplate": m.nameplate.model_dump(exclude_none=True),
                "topics": {s: machine_topic(plant, m, s) for s in _published_streams(m)},
            }
            for m in loaded.enabled_machines()
        },
    }


def health(
    started: datetime,
    *,
    devices: dict[str, str],
    detail: dict[str, Any],
    destinations: dict[str, dict[str, Any]],
    losses: dict[str, Any],
    unsignable: dict[str, Any],
    queries: dict[str, int],
    now: datetime | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """`health` (before the handler scopes it to the platform and its destination);
    `detail`: `device_reasons` and `device_faults` when some device is not up. `now` and
    `version` default to the wall clock and the installed package's (the conformance
    vectors pin both)."""
    now = utc_now() if now is None else now
    return {
        "state": "online",
        "version": package_version() if version is None else version,
        "started": format_ts(started),
        "uptime_s": round((now - started).total_seconds(), 3),
        "devices": devices,
        **detail,
        "destinations": destinations,
        "losses": losses,
        "unsignable": unsignable,
        "queries": queries,
    }


class QueryBackend:
    """The query handler's `Backend`; `counts` gives the handler's own counters to `health`
    (the handler is built after its backend). `clock` (uptime, and `started` when not
    given) and `version` (`describe`, `health`; default the installed package's) are
    injectable so that docs/vectors/generate.py gets the same replies every run."""

    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        fleet: FleetView,
        kpi: KpiService,
        capacity: CapacityRecords,
        *,
        stats: StatsProvider,
        counts: Callable[[], dict[str, int]],
        losses: Callable[[], dict[str, Any]] = dict,
        unsignable: Callable[[], dict[str, Any]] = dict,
        bookings: BookingDesk | None = None,
        started: datetime | None = None,
        parts: PartStore | None = None,
        energy: EnergyWindows | None = None,
        clock: Callable[[], datetime] = utc_now,
        version: str | None = None,
    ) -> None:
        self.clock = clock
        self.version = version
        self.parts = parts
        self.energy = energy
        self.config = config
        self.fleet = fleet
        self.kpi = kpi
        self.capacity = capacity
        self.stats = stats
        self.counts = counts
        self.losses = losses
        self.unsignable = unsignable
        self.bookings = bookings
        self.started = started or clock()

    def _assets(self, asset: str | None) -> list[str]:
        running = self.fleet.assets()
        if asset is None:
            return running
        if asset not in running:
            raise KeyError(asset)
        return [asset]

    def query_describe(self) -> dict[str, Any]:
        return describe(self.config(), self.version)

    def query_state(self, asset: str | None) -> dict[str, Any]:
        out = {}
        for a in self._assets(asset):
            d = self.fleet.device(a)
            record = d.twin.state.as_record()
            record["ts"] = format_ts(d.twin.state.since) if d.twin.state.since else None
            record["link"] = d.runner.status.value
            out[a] = record
        return {"machines": out}

    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        self._assets(asset)
        metered = self.fleet.device(asset).machine.meter_for
        if metered is not None:  # no OEE engine (edge/kpi/service.py `producing`)
            raise QueryError("not_found", f"{asset} is the energy meter of {metered}: it has "
                             f"no OEE; its energy counts for {metered} (ask `oee` or `energy` "
                             f"of {metered})")
        kind = params.get("window", "shift")
        start, end = _ts(params.get("start")), _ts(params.get("end"))
        hours = params.get("hours")
        if kind == "hours":
            kind = "last_hour"
        if hours is not None and not isinstance(hours, int | float):
            raise ValueError("hours must be a number")
        return self.kpi.window(asset, kind, start=start, end=end, hours=hours)

    def query_aas(self, asset: str | None) -> dict[str, Any]:
        from models.aas import build_environment, environment_json  # noqa: PLC0415

        envs = {}
        for a in self._assets(asset):
            d = self.fleet.device(a)
            signals = {
                name: (s.value, s.unit, s.ts)
                for name, s in d.twin.last_values.items()
                if s.quality.value != "bad"
            }
            env = build_environment(
                self.config().plant,
                d.machine,
                state=d.twin.state,
                signals=signals,
                oee=self.kpi.current_shift_result(a),
                device_identification=device_identification(d.twin.last_values),
                carbon=None if self.energy is None else self.energy.footprints(a),
                carbon_method="" if self.energy is None else self.energy.method(),
            )
            envs[a] = environment_json(env)
        return {"machines": envs}

    def query_capacity(self, asset: str | None) -> dict[str, Any]:
        # an energy meter is never offered nor bookable (edge/capacity/publisher.py,
        # edge/bookings/desk.py): an answer with its "free slots" would invite a `reserve`
        # that is refused
        assets = self._assets(asset)
        if asset is not None and (metered := self.fleet.device(asset).machine.meter_for):
            raise QueryError("not_found", f"{asset} is the energy meter of {metered}: it "
                             f"makes no parts, so has no capacity (ask `capacity` of "
                             f"{metered})")
        producing = [a for a in assets if self.fleet.device(a).machine.meter_for is None]
        return {"machines": {a: self.capacity.record(a) for a in producing}}

    def query_parts(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Part records of one machine, oldest first, each with the signed envelope it was
        published in (null if no destination took the `part` stream); paged by `after`."""
        self._assets(asset)
        limit = params.get("limit", 100)
        after = params.get("after")
        verdict = params.get("verdict")
        program = params.get("program")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
            raise ValueError("limit must be an integer from 1 to 500")
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise ValueError("after must be a part_seq (integer)")
        if verdict is not None and verdict not in ("good", "scrap", "unknown"):
            raise ValueError("verdict must be good, scrap or unknown")
        if program is not None and not isinstance(program, str):
            raise ValueError("program must be a string")
        if self.parts is None:
            return {"asset": asset, "parts": [], "next": None}
        page = self.parts.page(
            [asset], start=_ts(params.get("start")), end=_ts(params.get("end")),
            program=program, verdict=verdict,
            after=None if after is None else (asset, after), limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return {
            "asset": asset,
            "parts": [{"part_seq": p.record["part_seq"], "envelope": p.envelope,
                       "record": p.record} for p in page],
            "next": page[-1].record["part_seq"] if more else None,
        }

    def query_energy(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """A window as `oee` takes it (shift, last_hour/hours, today, range) with its energy:
        total, producing, idle, stopped, per good part, CO2e."""
        window = self.query_oee(asset, params)
        if window is None or self.energy is None:
            return None
        figures = self.energy.for_oee_record(asset, window)
        if figures is None:
            return None
        return {"asset": asset, "window": window["window"], "energy": figures}

    def query_health(self) -> dict[str, Any]:
        return health(self.started, devices=self.fleet.statuses(),
                      detail=device_detail(self.fleet), destinations=self.stats(),
                      losses=self.losses(), unsignable=self.unsignable(),
                      queries=self.counts(), now=self.clock(), version=self.version)

    async def query_booking(
        self, method: str, platform: Platform, params: Mapping[str, Any],
        others: OtherStores = ALONE, seen: MachineSeen = every_machine,
    ) -> dict[str, Any]:
        """`reserve`, `release`, `bookings` for `platform` (docs/protocol.md, "Bookings");
        `others`: what the other workers' booking stores bring (`run --workers N`), and
        `propose` (the parent's, never a platform's) what `reserve` would decide here.
        `seen`: the machines the destination asked through shows; the platform's bookings
        on others are answered as bookings it does not have."""
        desk = self.bookings
        if desk is None:
            raise QueryError("not_found", "this gateway takes no bookings")
        try:
            if method == "reserve":
                return await desk.reserve(platform, params, others, seen)
            if method == PROPOSE:
                return await desk.propose(platform, params, others, seen)
            if method == "release":
                return await desk.release(platform, params, seen)
            return desk.list(platform, params, seen)
        except KeyError as exc:
            raise QueryError("not_found", str(exc.args[0]) if exc.args else "not found") from exc
        except Refused as exc:
            raise QueryError("bad_request", str(exc)) from exc
