"""A worker's status-page figures as JSON, and back (`run --workers N`).

Why: with several worker processes the parent serves the status page and `/metrics`
(edge/status/worker_source.py), but the figures live in the workers; they cross the
worker channel (edge/daemon/worker_channel.py) as JSON. The snapshot types of
edge/status/model.py are frozen dataclasses of plain values and datetimes, so one small
codec driven by their field types covers them all (datetimes as ISO 8601 strings, tuples as
lists), and a new field of those types needs no change here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from edge.status.model import (
    DestinationStatus,
    MachineStatus,
    OeeStatus,
    PointStatus,
    PollHistogram,
    Segment,
    StatusSource,
)

T = TypeVar("T")


def plain(value: Any) -> Any:
    """`value` (a snapshot, or containers of them) as JSON-native values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if hint is datetime:
        return datetime.fromisoformat(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _convert(rest[0], value) if len(rest) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict):
        return {k: _convert(args[1], v) for k, v in value.items()}
    return value


def revive(cls: type[T], data: Mapping[str, Any]) -> T:
    """A snapshot of type `cls` from `plain`'s output; KeyError/ValueError when it is not."""
    hints = _hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: _convert(hints[f.name], data[f.name]) for f in fields if f.name in data})


def worker_snapshot(source: StatusSource, machine: str | None) -> dict[str, Any]:
    """What the parent's status page needs of one worker: every machine's row, OEE and poll
    histogram, the destinations, the sealed counts, and `machine`'s points and timeline
    when it is one of this worker's."""
    machines = source.machines()
    ids = {m.id for m in machines}
    gateway = source.gateway()
    return {
        "machines": plain(machines),
        "oee": {m.id: plain(source.oee(m.id)) for m in machines},
        "polls": {m.id: plain(source.poll_durations(m.id)) for m in machines},
        "destinations": plain(source.destinations()),
        "sealed": [gateway.envelopes_sealed, gateway.records_sealed],
        "points": plain(source.points(machine)) if machine in ids else [],
        "timeline": plain(source.timeline(machine)) if machine in ids else [],
    }


@dataclasses.dataclass(frozen=True)
class WorkerSnapshot:
    """`worker_snapshot` read back by the parent."""

    machines: tuple[MachineStatus, ...] = ()
    oee: Mapping[str, OeeStatus | None] = dataclasses.field(default_factory=dict)
    polls: Mapping[str, PollHistogram | None] = dataclasses.field(default_factory=dict)
    destinations: tuple[DestinationStatus, ...] = ()
    sealed: tuple[int, int] = (0, 0)
    points: tuple[PointStatus, ...] = ()
    timeline: tuple[Segment, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> WorkerSnapshot:
        def maybe(kind: type[T], value: Any) -> T | None:
            return None if value is None else revive(kind, value)

        envelopes, records = data.get("sealed", (0, 0))
        return cls(
            machines=tuple(revive(MachineStatus, m) for m in data.get("machines", [])),
            oee={k: maybe(OeeStatus, v) for k, v in data.get("oee", {}).items()},
            polls={k: maybe(PollHistogram, v) for k, v in data.get("polls", {}).items()},
            destinations=tuple(revive(DestinationStatus, d)
                               for d in data.get("destinations", [])),
            sealed=(int(envelopes), int(records)),
            points=tuple(revive(PointStatus, p) for p in data.get("points", [])),
            timeline=tuple(revive(Segment, s) for s in data.get("timeline", [])),
        )


__all__ = ["WorkerSnapshot", "plain", "revive", "worker_snapshot"]
