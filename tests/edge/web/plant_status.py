"""A fixed `StatusSource` for rendering tests: two machines, one destination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edge.status.model import (
    DestinationStatus,
    GatewayStatus,
    LogEntry,
    MachineStatus,
    OeeStatus,
    PointStatus,
    PollHistogram,
    QueryCounts,
    Segment,
)

T0 = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)


def machine(mid: str, **kw: object) -> MachineStatus:
    base: dict[str, object] = dict(
        id=mid, name=mid.upper(), adapter="modbus", link="up", availability="available",
        execution="active", mode="automatic", program="O1000", part_count=12,
        bad_part_count=2, alarms=(), alarm_text=None, last_sample=T0, samples=100,
        bad_samples=1, reconnects=0,
    )
    base.update(kw)
    return MachineStatus(**base)  # type: ignore[arg-type]


@dataclass
class FixedStatus:
    rows: list[MachineStatus] = field(default_factory=lambda: [
        machine("mill-01"),
        machine("lathe-01", link="down", link_reason="connection refused", execution=None,
                alarms=("E1042",), alarm_text="Spindle <overload>"),
    ])
    reloads: tuple[LogEntry, ...] = (LogEntry(T0, "ok"), LogEntry(T0, "rejected: bad"))

    def machines(self) -> Sequence[MachineStatus]:
        return self.rows

    def points(self, machine_id: str) -> Sequence[PointStatus]:
        return [
            PointStatus("spindle_speed", "holding 20+2 float32", 3030.5, "1/min", "good",
                        T0, T0 - timedelta(seconds=3), raw="0x453d 0x6000"),
            PointStatus("execution", "holding 0 uint16", "active", None, "good", T0, T0),
        ]

    def oee(self, machine_id: str) -> OeeStatus | None:
        if machine_id != "mill-01":
            return None
        return OeeStatus("early", T0, T0 + timedelta(hours=8), 0.9, 0.8, 0.95, 0.684, 3600.0,
                         3240.0, {"alarm": 200.0, "waiting": 160.0}, 300.0, 50.0, 12, 10)

    def timeline(self, machine_id: str) -> Sequence[Segment]:
        return [Segment(T0, T0 + timedelta(minutes=30), "running"),
                Segment(T0 + timedelta(minutes=30), T0 + timedelta(minutes=40), "alarm")]

    def destinations(self) -> Sequence[DestinationStatus]:
        return [DestinationStatus("local", "mqtt://127.0.0.1:1883", True, "5",
                                  ("telemetry", "state"), 3, 4096, 120, 118, 1, 0, T0, 2)]

    def gateway(self) -> GatewayStatus:
        ok = sum(1 for r in self.reloads if r.text == "ok")
        return GatewayStatus("gw-01", "plant-a", "0.1.0", "kid-1", T0, self.reloads,
                             (LogEntry(T0, "warning: x"),), 7, 70,
                             {"ok": ok, "rejected": len(self.reloads) - ok})

    def poll_durations(self, machine_id: str) -> PollHistogram | None:
        return PollHistogram((0.01, 0.1), (3, 9), 10, 0.42)

    def queries(self) -> QueryCounts:
        return QueryCounts({("oee", "ok"): 4, ("unknown", "unauthorized"): 1})
