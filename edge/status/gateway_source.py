"""`StatusSource` over a running gateway: the fleet's devices (runner and twin), the KPI
service, the egress stack currently behind the slot (none while a reload swaps it) and the
query handler's counts.

OEE figures are cached for ~15 s: the plant page, its live stream and a Prometheus scrape
all ask for every machine's running shift, a figure that moves by minutes; recomputing 200
shift windows costs ~130 ms, which every 2 s refresh of an open page would pay (measured in
bench/bench_status_page.py). Expiries are spread so the recomputations do not bunch up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from edge.devices.runner import DeviceRunner
from edge.devices.twin import AssetTwin
from edge.egress.formats.sparkplug import SparkplugSender
from edge.egress.outbox import Outbox
from edge.egress.sender import DestinationSender
from edge.egress.stack import EgressStack
from edge.kpi.service import KpiService
from edge.status.identity import GatewayIdentity
from edge.status.log_tap import LogTap
from edge.status.model import (
    DestinationStatus,
    GatewayStatus,
    MachineStatus,
    OeeStatus,
    PointStatus,
    PollHistogram,
    QueryCounts,
    Segment,
)
from edge.transport.mqtt import MqttTransport
from models.plant import Destination, Machine, Plant
from models.sample import Quality, Sample, utc_now
from models.shift_calendar import shift_at

ALARM_TEXT = "alarm_text"
OEE_TTL = 15.0
"""Seconds an OEE figure is reused, +-25 % so the machines do not all expire together."""


class DeviceLike(Protocol):
    """One running device as the gateway holds it."""

    @property
    def machine(self) -> Machine: ...

    @property
    def runner(self) -> DeviceRunner: ...

    @property
    def twin(self) -> AssetTwin: ...


def destination_status(
    dest: Destination,
    transport: MqttTransport,
    sender: DestinationSender | SparkplugSender,
    outbox: Outbox,
    lost_records: int = 0,
) -> DestinationStatus:
    """One destination's figures from its transport, sender and outbox (exact counters)."""
    rows, size = outbox.pending(sender.name)
    counters = outbox.counters(sender.name)
    stats = transport.stats
    return DestinationStatus(
        id=dest.id, url=dest.url or ", ".join(dest.urls), connected=transport.connected,
        protocol=str(transport.protocol_in_use), streams=tuple(dest.streams),
        # the sender's envelopes: the transport's PUBACKs also count status, keys and
        # query replies, which made `acked` exceed `sent`
        pending=rows, pending_bytes=size, sent=sender.stats.published, acked=sender.stats.sent,
        dropped=counters["dropped"], rejected=counters["rejected"],
        last_ack=transport.last_ack, reconnects=stats["reconnects"], lost_records=lost_records,
        format=dest.format,
    )


def meter_values(machine: Machine, values: Mapping[str, Sample]) -> tuple[float | None,
                                                                         float | None]:
    """(power W, energy kWh) of an energy meter from its twin's last values (the points its
    `energy` roles name); (None, None) for a machine that is no meter."""
    roles = machine.energy
    if machine.meter_for is None or roles is None:
        return None, None

    def number(point: str | None) -> float | None:
        s = values.get(point) if point else None
        v = s.value if s is not None and s.quality is not Quality.BAD else None
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return number(roles.power_w), number(roles.energy_kwh)


def _ts(text: Any) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def oee_status(
    record: Mapping[str, Any], shift_end: datetime | None, timezone: str = "UTC"
) -> OeeStatus:
    """The `oee` stream record (edge/kpi/service.py) as typed figures."""
    window, t, counts, losses = (record["window"], record["time"], record["counts"],
                                 record["losses"])
    return OeeStatus(
        shift=window.get("name"),
        start=_ts(window["start"]),
        end=shift_end or _ts(window["end"]),
        availability=record.get("availability"),
        effectiveness=record.get("effectiveness"),
        quality=record.get("quality"),
        oee=record.get("oee"),
        planned_seconds=float(t["pbt"]),
        running_seconds=float(t["apt"]),
        downtime={k: float(v) for k, v in t["downtime"].items()},
        speed_loss_seconds=losses.get("speed_loss"),
        scrap_seconds=losses.get("scrap_time"),
        parts=int(counts["pq"]),
        good_parts=int(counts["gq"]),
        timezone=timezone,
        gap_seconds=float(losses.get("gap") or 0.0),
    )


class GatewayStatusSource:
    def __init__(
        self,
        *,
        plant: Callable[[], Plant],
        devices: Callable[[], Mapping[str, DeviceLike]],
        kpi: Callable[[], KpiService | None],
        egress: Callable[[], EgressStack | None],
        queries: Callable[[], Mapping[tuple[str, str], int]],
        version: str,
        started: datetime,
        tap: LogTap,
        unsignable: Callable[[], Mapping[str, Mapping[str, int]]] = dict,
    ) -> None:
        self._plant = plant
        self._unsignable = unsignable
        self._devices = devices
        self._kpi = kpi
        self._egress = egress
        self._identity = GatewayIdentity(plant, queries, version, started, tap)
        self._oee: dict[str, tuple[float, OeeStatus | None]] = {}
        """machine -> (monotonic expiry, figures)"""

    def machines(self) -> Sequence[MachineStatus]:
        out = []
        unsignable = self._unsignable()
        for asset, d in self._devices().items():
            refused = unsignable.get(asset, {})
            st, stats = d.twin.state, d.twin.stats
            text = d.twin.last_values.get(ALARM_TEXT)
            power, energy = meter_values(d.machine, d.twin.last_values)
            out.append(MachineStatus(
                id=asset,
                name=d.machine.name or asset,
                adapter=d.machine.adapter,
                link=d.runner.status.value,
                availability=st.availability.value,
                execution=st.execution.value if st.execution else None,
                mode=st.controller_mode.value if st.controller_mode else None,
                program=st.program,
                part_count=st.part_count,
                bad_part_count=st.bad_part_count,
                alarms=st.alarms,
                alarm_text=str(text.value) if text is not None and text.value else None,
                last_sample=stats.last_sample,
                samples=stats.samples,
                bad_samples=stats.bad_samples,
                reconnects=d.runner.reconnects,
                link_reason=d.runner.reason,
                unsignable_replaced=refused.get("replaced", 0),
                unsignable_dropped=refused.get("dropped", 0),
                meter_for=d.machine.meter_for,
                power_w=power,
                energy_kwh=energy,
            ))
        return out

    def points(self, machine_id: str) -> Sequence[PointStatus]:
        d = self._devices().get(machine_id)
        if d is None:
            return []
        addresses = d.runner.points
        values = d.twin.last_values
        raw = d.runner.raw_values()
        sources = d.runner.signal_sources()
        # the configured points in YAML order, then what the device model adds, by name
        order = [n for n in addresses if n in values]
        order += sorted(n for n in values if n not in addresses)
        out = []
        for name in order:
            s = values[name]
            out.append(PointStatus(
                name=name,
                address=addresses.get(name) or sources.get(name, "(device model)"),
                value=s.value,
                unit=s.unit,
                quality=s.quality.value,
                ts=s.gateway_ts,
                changed=d.twin.changed.get(name, s.gateway_ts),
                raw=raw.get(name),
            ))
        return out

    def oee(self, machine_id: str) -> OeeStatus | None:
        now = time.monotonic()
        cached = self._oee.get(machine_id)
        if cached is not None and now < cached[0]:
            return cached[1]
        kpi = self._kpi()
        result: OeeStatus | None = None
        if kpi is not None:
            at = utc_now()
            try:
                record = kpi.window(machine_id, "shift", now=at)
            except KeyError:  # not a machine of the KPI service (disabled, just added)
                record = None
            if record is not None:
                shifts = self._plant().shifts
                inst = shift_at(shifts, at)
                result = oee_status(record, inst.end if inst else None, shifts.timezone)
        self._oee[machine_id] = (now + OEE_TTL * random.uniform(0.75, 1.25), result)
        return result

    def timeline(self, machine_id: str) -> Sequence[Segment]:
        kpi = self._kpi()
        if kpi is None:
            return []
        return [Segment(a, b, c) for a, b, c in kpi.current_shift_segments(machine_id)]

    def destinations(self) -> Sequence[DestinationStatus]:
        stack = self._egress()
        if stack is None:  # between stop and start of a reload
            return []
        return [
            destination_status(d, stack.transports[d.id], sender, stack.outbox,
                               stack.losses.lost_records(sender.name))
            for d, sender in zip(stack.plan.destinations, stack.senders, strict=True)
        ]

    def gateway(self) -> GatewayStatus:
        stack = self._egress()
        if stack is None:  # between stop and start of a reload
            return self._identity.status(None, 0, 0)
        return self._identity.status(stack.sealer.signer.kid, stack.egress.envelopes,
                                     stack.egress.records)

    def poll_durations(self, machine_id: str) -> PollHistogram | None:
        d = self._devices().get(machine_id)
        polls = d.runner.polls if d is not None else None
        if polls is None:
            return None
        return PollHistogram(polls.bounds, polls.cumulative(), polls.count, polls.total)

    def queries(self) -> QueryCounts:
        return self._identity.query_counts()
