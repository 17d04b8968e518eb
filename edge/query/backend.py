"""Read-only views of the running gateway: what queries answer and capacity offers say.

Split from pipeline.py so the assembly of the data flow stays readable; `Gateway` inherits
these. Nothing here writes to a machine or changes the gateway's state.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from models.capacity import (
    aggregate_windows,
    capacity_record,
    expected_program_end,
    free_slots,
    ideal_cycle_time_for,
    parse_bookings,
    performance_windows,
)
from models.plant import Booking, Machine, machine_topic
from models.sample import format_ts, utc_now

if TYPE_CHECKING:
    from edge.config.loader import LoadedPlant
    from edge.kpi.service import KpiService
    from edge.query.handler import QueryHandler


def _version() -> str:
    try:
        return version("edge-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def _capacity_digest(record: dict[str, Any]) -> str:
    """What counts as a change of an offer: capabilities, performance, whether data flows,
    and free slots at 15-minute resolution (the first slot starts `now`, which moves)."""

    def q(ts: str) -> str:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return t.replace(minute=t.minute // 15 * 15, second=0, microsecond=0).isoformat()

    return json.dumps(
        {
            "capabilities": record.get("capabilities"),
            "performance": record.get("performance"),
            "fresh": record["freshness"]["last_sample"] is not None,
            "slots": [(q(s["start"]), q(s["end"])) for s in record.get("free_slots", [])],
        },
        sort_keys=True,
        default=str,
    )


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
    Identification as `identification_<BrowseName>`. The YAML still wins (models/aas.py)."""
    out: dict[str, str] = {}
    for name, sample in last_values.items():
        if sample.value is None or sample.quality.value == "bad":
            continue
        if name in IDENTIFICATION_SIGNALS:
            out[name] = str(sample.value)
        elif name.startswith("identification_"):
            out[name.removeprefix("identification_")] = str(sample.value)
    return out


class GatewayViews:
    """Mixin of `edge.daemon.gateway.Gateway`: the query Backend (edge/query/handler.py) and the
    `capacity` stream."""

    loaded: LoadedPlant
    devices: dict[str, Any]
    kpi: KpiService | None
    queries: QueryHandler | None
    started: datetime
    out: Any
    log: Any
    _bookings_cache: dict[str, list[Booking]]
    _booking_errors: dict[str, str]

    def destination_stats(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def _assets(self, asset: str | None) -> list[str]:
        if asset is None:
            return list(self.devices)
        if asset not in self.devices:
            raise KeyError(asset)
        return [asset]

    def query_describe(self) -> dict[str, Any]:
        plant = self.loaded.plant
        g = plant.gateway
        return {
            "gateway": g.id,
            "site": g.site,
            "version": _version(),
            "streams": ["telemetry", "state", "oee", "capacity"],
            "machines": {
                m.id: {
                    "name": m.name,
                    "area": m.area,
                    "line": m.line,
                    "adapter": m.adapter,
                    "nameplate": m.nameplate.model_dump(exclude_none=True),
                    "topics": {
                        s: machine_topic(plant, m, s)
                        for s in ("telemetry", "state", "oee", "capacity")
                    },
                }
                for m in self.loaded.enabled_machines()
            },
        }

    def query_state(self, asset: str | None) -> dict[str, Any]:
        out = {}
        for a in self._assets(asset):
            d = self.devices[a]
            record = d.twin.state.as_record()
            record["ts"] = format_ts(d.twin.state.since) if d.twin.state.since else None
            record["link"] = d.runner.status.value
            out[a] = record
        return {"machines": out}

    def query_oee(self, asset: str, params: Any) -> dict[str, Any] | None:
        if self.kpi is None or asset not in self.devices:
            raise KeyError(asset)
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
            d = self.devices[a]
            signals = {
                name: (s.value, s.unit, s.ts)
                for name, s in d.twin.last_values.items()
                if s.quality.value != "bad"
            }
            oee = self.kpi.current_shift_result(a) if self.kpi is not None else None
            env = build_environment(
                self.loaded.plant,
                d.machine,
                state=d.twin.state,
                signals=signals,
                oee=oee,
                device_identification=device_identification(d.twin.last_values),
            )
            envs[a] = environment_json(env)
        return {"machines": envs}

    def query_capacity(self, asset: str | None) -> dict[str, Any]:
        return {"machines": {a: self.capacity_record(a) for a in self._assets(asset)}}

    def capacity_record(self, asset: str) -> dict[str, Any]:
        """What a platform shows a buyer: capabilities, free slots over the horizon (shift
        calendar minus bookings minus the running program), recent OEE, data freshness."""
        d = self.devices[asset]
        m, settings, now = d.machine, self.loaded.plant.gateway.capacity, utc_now()
        state = d.twin.state
        busy_until = expected_program_end(state, now, ideal_cycle_time_for(m, state.program))
        slots = free_slots(
            self.loaded.plant.shifts,
            [*m.bookings, *self._bookings_from_file(m)],
            now,
            settings.horizon,
            busy_until=busy_until,
            min_slot=settings.min_slot,
        )
        # from the closed shift windows in the store: cheap for 30 days, and the same figures
        # a platform received on the `oee` stream
        performance: dict[str, dict[str, Any] | None] = {}
        for name, (start, end) in performance_windows(now).items():
            closed = self.kpi.closed_shifts(asset, start, end) if self.kpi else []
            performance[name] = aggregate_windows(closed)
        return capacity_record(
            asset,
            m.capabilities,
            slots,
            performance,
            last_sample=d.twin.stats.last_sample,
            now=now,
            horizon=settings.horizon,
        )

    def _bookings_from_file(self, m: Machine) -> list[Booking]:
        """Re-read on every refresh so a scheduler can update it without a reload; a broken
        file is logged once and the last good list is kept."""
        if m.bookings_file is None:
            return []
        path = Path(m.bookings_file)
        path = path if path.is_absolute() else self.loaded.path.parent / path
        try:
            found = parse_bookings(yaml.safe_load(path.read_text(encoding="utf-8")) or [])
        except (OSError, yaml.YAMLError, ValueError) as exc:
            if self._booking_errors.get(m.id) != str(exc):
                self._booking_errors[m.id] = str(exc)
                self.log.error(
                    "bookings_file_unreadable_keeping_last",
                    asset=m.id,
                    path=str(path),
                    error=str(exc),
                )
            return self._bookings_cache.get(m.id, [])
        self._booking_errors.pop(m.id, None)
        self._bookings_cache[m.id] = found
        return found

    async def _capacity_loop(self) -> None:
        """Retained `capacity` per machine: on change (ignoring timestamps) and at least
        every `refresh_seconds`."""
        last: dict[str, tuple[str, float]] = {}
        loop = asyncio.get_running_loop()
        while True:
            every = self.loaded.plant.gateway.capacity.refresh_seconds
            for asset, d in list(self.devices.items()):
                if self.out is None:
                    break
                try:
                    record = self.capacity_record(asset)
                except Exception:  # a bug must not end the loop for every machine
                    self.log.exception("capacity_failed", asset=asset)
                    continue
                digest = _capacity_digest(record)
                prev = last.get(asset)
                if prev is None or prev[0] != digest or loop.time() - prev[1] >= every:
                    last[asset] = (digest, loop.time())
                    topic = machine_topic(self.loaded.plant, d.machine, "capacity")
                    self.out.egress.emit(topic, asset, "capacity", [record])
            await asyncio.sleep(min(5.0, every))

    def query_health(self) -> dict[str, Any]:
        return {
            "state": "online",
            "version": _version(),
            "started": format_ts(self.started),
            "uptime_s": round((utc_now() - self.started).total_seconds(), 3),
            "devices": {a: d.runner.status.value for a, d in self.devices.items()},
            "destinations": self.destination_stats(),
            "queries": dict(self.queries.counts) if self.queries else {},
        }
