"""Read coalescing: turn a point map into the fewest S7 read requests for a PDU size.

Three steps, each bounded by what the S7 protocol carries:

1. **Ranges.** Points are grouped by area (and DB number), sorted by byte offset and
   joined while the unused bytes between them stay within `max_gap` (reading a few bytes
   too many is cheaper than another item), as the Modbus planner does with registers.
2. **Items.** A range longer than one reply can carry (`pdu - 18` bytes: 12 header, 2
   parameter, 4 item header) is cut into chunks; a point may straddle two chunks, its bytes
   are put together again after the cycle.
3. **Requests.** Items are packed into multi-variable reads (function 0x04 with several
   address specifications), first-fit by decreasing size, while the request stays within
   the PDU (10 header + 2 + 12 per item), the reply stays within the PDU (14 + per item 4
   header, the data and a fill byte after odd lengths) and at most `max_items_per_request`
   items ride in one request (20 on S7 CPUs).

Timers and counters are element-addressed with their own transport size, which the
multi-variable encoder of python-snap7 does not produce; they are read one range per
request through `read_area`.

`minimum_requests` is the bench's yardstick: the requests needed if every point's bytes
were packed back to back with one item header per request, a bound no plan can beat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .address import Area
from .settings import S7Connection, S7Point

REPLY_OVERHEAD = 14  # S7 ACK_DATA header 12 + function and item count 2
ITEM_HEADER = 4  # return code, transport size, bit length
REQUEST_OVERHEAD = 12  # S7 job header 10 + function and item count 2
ADDRESS_SPEC = 12


def max_item_bytes(pdu: int) -> int:
    """Data bytes one item may carry when it is alone in a reply."""
    return pdu - REPLY_OVERHEAD - ITEM_HEADER


@dataclass(frozen=True, slots=True)
class PointSlot:
    """Where one point's bytes sit inside its range."""

    point: S7Point
    offset: int


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Contiguous bytes (or timer/counter elements) of one area read for several points."""

    area: Area
    db: int
    start: int
    size: int
    slots: tuple[PointSlot, ...]

    @property
    def label(self) -> str:
        where = f"DB{self.db}" if self.area is Area.DB else self.area.name.lower()
        return f"{where} {self.start}+{self.size}"


@dataclass(frozen=True, slots=True)
class Item:
    """One address specification of a request: a chunk of a range."""

    range_index: int
    area: Area
    db: int
    start: int
    size: int
    """Bytes; timer/counter elements (2 bytes each) for those areas."""

    @property
    def reply_cost(self) -> int:
        return ITEM_HEADER + self.size + (self.size & 1)


@dataclass(frozen=True, slots=True)
class Request:
    items: tuple[Item, ...]

    @property
    def element_area(self) -> bool:
        """Timers/counters: read with `read_area`, one item per request."""
        return self.items[0].area in (Area.TIMERS, Area.COUNTERS)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    ranges: tuple[ByteRange, ...]
    requests: tuple[Request, ...]
    pdu: int


def build_ranges(points: Iterable[S7Point], max_gap: int) -> list[ByteRange]:
    groups: dict[tuple[Area, int], list[S7Point]] = {}
    for p in points:
        a = p.parsed
        groups.setdefault((a.area, a.db), []).append(p)
    ranges: list[ByteRange] = []
    for (area, db), members in sorted(groups.items()):
        members.sort(key=lambda p: (p.parsed.offset, p.width))
        batch: list[S7Point] = []
        start = end = 0
        for p in members:
            p_start = p.parsed.offset
            p_end = p_start + p.width
            if batch and p_start - end <= max_gap:
                batch.append(p)
                end = max(end, p_end)
                continue
            if batch:
                ranges.append(_range(area, db, start, end, batch))
            batch, start, end = [p], p_start, p_end
        if batch:
            ranges.append(_range(area, db, start, end, batch))
    return ranges


def _range(area: Area, db: int, start: int, end: int, members: list[S7Point]) -> ByteRange:
    slots = tuple(PointSlot(p, p.parsed.offset - start) for p in members)
    return ByteRange(area, db, start, end - start, slots)


def _items(ranges: list[ByteRange], pdu: int) -> list[Item]:
    items: list[Item] = []
    for i, r in enumerate(ranges):
        element = r.area in (Area.TIMERS, Area.COUNTERS)
        unit = 2 if element else 1  # bytes per element
        limit = max_item_bytes(pdu) // unit
        for start in range(r.start, r.start + r.size, limit):
            size = min(limit, r.start + r.size - start)
            items.append(Item(i, r.area, r.db, start, size))
    return items


def _pack(items: list[Item], pdu: int, max_items: int) -> list[Request]:
    per_request = min(max_items, (pdu - REQUEST_OVERHEAD) // ADDRESS_SPEC)
    budget = pdu - REPLY_OVERHEAD
    members: list[list[Item]] = []
    used: list[int] = []  # reply bytes of each open request
    for item in sorted(items, key=lambda it: -it.reply_cost):
        for k, group in enumerate(members):
            if len(group) < per_request and used[k] + item.reply_cost <= budget:
                group.append(item)
                used[k] += item.reply_cost
                break
        else:
            members.append([item])
            used.append(item.reply_cost)
    requests = [Request(tuple(sorted(group, key=lambda it: (it.area, it.db, it.start))))
                for group in members]
    return sorted(requests, key=lambda r: (r.items[0].area, r.items[0].db, r.items[0].start))


def plan_reads(points: Iterable[S7Point], connection: S7Connection, pdu: int) -> ReadPlan:
    """Requests that read every point once, for the PDU size the CPU negotiated."""
    ranges = build_ranges(points, connection.max_gap)
    items = _items(ranges, pdu)
    elements = [it for it in items if it.area in (Area.TIMERS, Area.COUNTERS)]
    bytewise = [it for it in items if it.area not in (Area.TIMERS, Area.COUNTERS)]
    requests = _pack(bytewise, pdu, connection.max_items_per_request)
    requests += [Request((it,)) for it in elements]
    return ReadPlan(tuple(ranges), tuple(requests), pdu)


def minimum_requests(points: Iterable[S7Point], pdu: int) -> int:
    """Lower bound: every distinct point byte packed back to back, one item per request."""
    covered: set[tuple[Area, int, int]] = set()
    for p in points:
        a = p.parsed
        width = 2 if a.is_element else p.width
        start = a.offset * 2 if a.is_element else a.offset
        covered.update((a.area, a.db, start + k) for k in range(width))
    return max(1, math.ceil(len(covered) / max_item_bytes(pdu))) if covered else 0
