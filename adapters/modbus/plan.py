"""Read coalescing: turn a point map into the fewest Modbus requests.

Each request costs a round trip (and on a 19200 baud line, tens of milliseconds), so points
are grouped by (unit id, register kind), sorted by address, and joined while

- the unused registers between two ranges stay within `max_gap` (reading a few needless
  registers is cheaper than another round trip), and
- the joined span stays within `max_registers_per_request` (125 by the spec) or
  `max_bits_per_request` (2000) for coils and discrete inputs.

Sorted greedy extension is what Telegraf and Neuron do. `one_request_per_point` turns it
off for devices that answer "illegal address" to any read crossing a field boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from models.errors import ConfigurationError

from .settings import BIT_KINDS, MAX_ADDRESS, ModbusConnection, ModbusPoint, RegisterKind


@dataclass(frozen=True, slots=True)
class PointSlot:
    """Where one point's registers sit inside a request's reply."""

    point: ModbusPoint
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.point.width


@dataclass(frozen=True, slots=True)
class ReadRequest:
    unit: int
    kind: RegisterKind
    address: int
    count: int
    slots: tuple[PointSlot, ...]

    @property
    def end(self) -> int:
        """First address after the request."""
        return self.address + self.count


def _limit(kind: RegisterKind, connection: ModbusConnection) -> int:
    if kind in BIT_KINDS:
        return connection.max_bits_per_request
    return connection.max_registers_per_request


def _group(
    points: Iterable[ModbusPoint], connection: ModbusConnection
) -> dict[tuple[int, RegisterKind], list[ModbusPoint]]:
    groups: dict[tuple[int, RegisterKind], list[ModbusPoint]] = {}
    for p in points:
        unit = p.unit_id if p.unit_id is not None else connection.unit
        groups.setdefault((unit, p.kind), []).append(p)
    return groups


def _request(unit: int, kind: RegisterKind, members: list[ModbusPoint]) -> ReadRequest:
    start = min(p.address for p in members)
    end = max(p.address + p.width for p in members)
    slots = tuple(PointSlot(p, p.address - start) for p in members)
    return ReadRequest(unit, kind, start, end - start, slots)


def plan_reads(points: Iterable[ModbusPoint], connection: ModbusConnection) -> list[ReadRequest]:
    """Requests that read every point once, ordered by unit, kind and address.

    Raises `ConfigurationError` for a point that no single request can carry.
    """
    requests: list[ReadRequest] = []
    for (unit, kind), members in sorted(_group(points, connection).items(), key=lambda g: g[0]):
        limit = _limit(kind, connection)
        members.sort(key=lambda p: (p.address, p.width))
        for p in members:
            if p.width > limit or p.address + p.width - 1 > MAX_ADDRESS:
                raise ConfigurationError(
                    f"point {p.name!r} ({p.width} at {kind} {p.address}) cannot be read in one "
                    f"request (limit {limit}, last address {MAX_ADDRESS})"
                )
        if connection.one_request_per_point:
            requests += [_request(unit, kind, [p]) for p in members]
            continue
        batch: list[ModbusPoint] = []
        start = end = 0
        for p in members:
            p_end = p.address + p.width
            if batch and p.address - end <= connection.max_gap and max(end, p_end) - start <= limit:
                batch.append(p)
                end = max(end, p_end)
                continue
            if batch:
                requests.append(_request(unit, kind, batch))
            batch, start, end = [p], p.address, p_end
        if batch:
            requests.append(_request(unit, kind, batch))
    return requests


def minimum_requests(points: Iterable[ModbusPoint], connection: ModbusConnection) -> int:
    """Lower bound for benchmarks: requests needed if any gap could be read through.

    Only the per-request span limit and the (unit, kind) split remain, so the gap between
    this and `len(plan_reads(...))` is what `max_gap` and `one_request_per_point` cost.
    """
    unlimited = connection.model_copy(
        update={"max_gap": MAX_ADDRESS + 1, "one_request_per_point": False}
    )
    return len(plan_reads(points, unlimited))
