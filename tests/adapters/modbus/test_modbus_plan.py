"""Read coalescing: request counts and offsets for ordinary and odd register maps."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adapters.modbus.plan import ReadRequest, minimum_requests, plan_reads
from adapters.modbus.settings import ModbusConnection, ModbusPoint
from models.errors import ConfigurationError


def conn(**kw: Any) -> ModbusConnection:
    return ModbusConnection.model_validate({"host": "plc", **kw})


def pts(*specs: tuple[str, int] | tuple[str, int, dict[str, Any]]) -> list[ModbusPoint]:
    """(register kind, address[, extra]) -> points named p0, p1..."""
    out = []
    for i, spec in enumerate(specs):
        extra = spec[2] if len(spec) == 3 else {}
        out.append(
            ModbusPoint.model_validate(
                {"name": f"p{i}", "register": spec[0], "address": spec[1], **extra}
            )
        )
    return out


def spans(requests: list[ReadRequest]) -> list[tuple[int, str, int, int]]:
    return [(r.unit, r.kind, r.address, r.count) for r in requests]


F32: dict[str, Any] = {"data_type": "float32"}

CASES = [
    pytest.param(
        pts(*[("holding", a) for a in range(10)]), {}, [(1, "holding", 0, 10)], id="contiguous"
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 33)),
        {},
        [(1, "holding", 0, 34)],
        id="gap-equal-to-max_gap-joins",
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 34)),
        {},
        [(1, "holding", 0, 1), (1, "holding", 34, 1)],
        id="gap-above-max_gap-splits",
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 12)),
        {"max_gap": 0},
        [(1, "holding", 0, 1), (1, "holding", 12, 1)],
        id="max_gap-0",
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 1)),
        {"max_gap": 0},
        [(1, "holding", 0, 2)],
        id="max_gap-0-adjacent-joins",
    ),
    pytest.param(
        pts(("holding", 5, F32), ("holding", 0), ("holding", 3)),
        {},
        [(1, "holding", 0, 7)],
        id="unsorted-input",
    ),
    pytest.param(
        pts(*[("holding", a) for a in range(200)]),
        {},
        [(1, "holding", 0, 125), (1, "holding", 125, 75)],
        id="125-limit",
    ),
    pytest.param(
        pts(*[("holding", a) for a in range(123)], ("holding", 123, F32)),
        {},
        [(1, "holding", 0, 125)],
        id="float-ends-exactly-at-125",
    ),
    pytest.param(
        pts(*[("holding", a) for a in range(124)], ("holding", 124, F32)),
        {},
        [(1, "holding", 0, 124), (1, "holding", 124, 2)],
        id="float-never-split-at-limit",
    ),
    pytest.param(
        pts(*[("holding", a) for a in range(20)]),
        {"max_registers_per_request": 8},
        [(1, "holding", 0, 8), (1, "holding", 8, 8), (1, "holding", 16, 4)],
        id="device-limit-8",
    ),
    pytest.param(
        pts(("coil", 0), ("holding", 0), ("discrete", 0), ("input", 0)),
        {},
        [(1, "coil", 0, 1), (1, "discrete", 0, 1), (1, "holding", 0, 1), (1, "input", 0, 1)],
        id="kinds-never-mix",
    ),
    pytest.param(
        pts(*[("coil", a) for a in range(2000)]),
        {},
        [(1, "coil", 0, 2000)],
        id="2000-coils-one-request",
    ),
    pytest.param(
        pts(*[("coil", a) for a in range(2001)]),
        {},
        [(1, "coil", 0, 2000), (1, "coil", 2000, 1)],
        id="2001-coils",
    ),
    pytest.param(
        pts(*[("discrete", a) for a in range(300)]),
        {"max_bits_per_request": 256},
        [(1, "discrete", 0, 256), (1, "discrete", 256, 44)],
        id="bits-limit",
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 1, {"unit_id": 2}), ("holding", 2)),
        {"unit": 1},
        [(1, "holding", 0, 3), (2, "holding", 1, 1)],
        id="per-point-unit-ids",
    ),
    pytest.param(
        pts(("holding", 0), ("holding", 1), ("holding", 2, F32)),
        {"one_request_per_point": True},
        [(1, "holding", 0, 1), (1, "holding", 1, 1), (1, "holding", 2, 2)],
        id="one-request-per-point",
    ),
    pytest.param(
        pts(
            ("holding", 10, {"data_type": "bit", "bit": 0}),
            ("holding", 10, {"data_type": "bit", "bit": 7}),
            ("holding", 10, {"data_type": "uint32"}),
            ("holding", 11),
        ),
        {},
        [(1, "holding", 10, 2)],
        id="overlapping-points-share-registers",
    ),
    pytest.param(
        pts(("holding", 65534, F32), ("holding", 65530)),
        {},
        [(1, "holding", 65530, 6)],
        id="top-of-address-space",
    ),
    pytest.param(
        pts(("holding", 0, {"data_type": "string", "length": 125}), ("holding", 125)),
        {},
        [(1, "holding", 0, 125), (1, "holding", 125, 1)],
        id="string-fills-a-request",
    ),
]


@pytest.mark.parametrize(("points", "settings", "expected"), CASES)
def test_plan(
    points: list[ModbusPoint], settings: dict[str, Any], expected: list[tuple[int, str, int, int]]
) -> None:
    requests = plan_reads(points, conn(**settings))
    assert spans(requests) == expected
    check_slots(points, requests, conn(**settings))


def check_slots(
    points: list[ModbusPoint], requests: list[ReadRequest], connection: ModbusConnection
) -> None:
    """Every point is served exactly once, at its own offset, inside its request."""
    served = [s.point.name for r in requests for s in r.slots]
    assert sorted(served) == sorted(p.name for p in points)
    for r in requests:
        limit = (
            connection.max_bits_per_request
            if r.kind in ("coil", "discrete")
            else connection.max_registers_per_request
        )
        assert 1 <= r.count <= limit
        for s in r.slots:
            assert s.point.kind == r.kind
            assert (s.point.unit_id or connection.unit) == r.unit
            assert s.offset == s.point.address - r.address
            assert s.offset >= 0
            assert s.end <= r.count


def cnc_map() -> list[ModbusPoint]:
    """500 points over 3 register ranges, each range small enough for one request."""
    specs: list[tuple[str, int, dict[str, Any]]] = []
    # range 1: 40 status words x 10 flag bits each = 400 bit points, holding 1000-1039
    specs += [
        ("holding", 1000 + w, {"data_type": "bit", "bit": b}) for w in range(40) for b in range(10)
    ]
    # range 2: 50 float32 measurements, input 0-99
    specs += [("input", 2 * i, F32) for i in range(50)]
    # range 3: 50 counters with a 2-register hole every 10 (within max_gap), holding 3000-3057
    specs += [("holding", 3000 + i + 2 * (i // 10), {}) for i in range(50)]
    return pts(*specs)


def test_500_point_map_over_3_ranges_needs_3_requests() -> None:
    points = cnc_map()
    assert len(points) == 500
    c = conn()
    requests = plan_reads(points, c)
    assert spans(requests) == [
        (1, "holding", 1000, 40),
        (1, "holding", 3000, 58),
        (1, "input", 0, 100),
    ]
    assert minimum_requests(points, c) == 3
    check_slots(points, requests, c)


def test_500_uint16_over_3_ranges_hits_the_125_minimum() -> None:
    points = pts(
        *[("holding", a) for a in range(200)],
        *[("holding", 1000 + a) for a in range(150)],
        *[("input", a) for a in range(150)],
    )
    c = conn()
    requests = plan_reads(points, c)
    # ceil(200/125) + ceil(150/125) + ceil(150/125): three ranges cannot go below six
    assert len(requests) == 6 == minimum_requests(points, c)
    check_slots(points, requests, c)


def test_one_request_per_point_on_the_big_map() -> None:
    points = cnc_map()
    c = conn(one_request_per_point=True)
    assert len(plan_reads(points, c)) == 500
    assert minimum_requests(points, c) == 3


def test_minimum_ignores_max_gap_but_not_the_limit() -> None:
    points = pts(("holding", 0), ("holding", 50), ("holding", 124), ("holding", 125))
    c = conn(max_gap=10)
    assert spans(plan_reads(points, c)) == [
        (1, "holding", 0, 1),
        (1, "holding", 50, 1),
        (1, "holding", 124, 2),
    ]
    assert minimum_requests(points, c) == 2  # [0..124] and [125]


def test_point_longer_than_the_limit_is_a_configuration_error() -> None:
    points = pts(("holding", 0, {"data_type": "string", "length": 20}))
    with pytest.raises(ConfigurationError, match="cannot be read in one request"):
        plan_reads(points, conn(max_registers_per_request=16))


@pytest.mark.parametrize(
    ("register", "written", "advice"),
    [
        ("holding", "40011", "40011 is Modicon numbering (1-based, table digit first): write "
                             "`register: holding, address: 10` (0-based)"),
        ("input", " 30001", "30001 is Modicon numbering (1-based, table digit first): write "
                            "`register: input, address: 0` (0-based)"),
        ("holding", 400011, "400011 is Modicon numbering (1-based, table digit first): write "
                            "`register: holding, address: 10` (0-based)"),
    ],
)
def test_a_modicon_register_number_is_refused_with_the_address_to_write(
    register: str, written: object, advice: str
) -> None:
    """A register map's "40011" copied as the address: quoted, or beyond 65535 in six
    digits, it cannot be meant as an address."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(advice)):
        ModbusPoint.model_validate({"name": "p", "register": register, "address": written})


def test_addresses_that_are_no_modicon_number_stay_valid() -> None:
    """An unquoted five-digit address is a valid one (probe hints if the device refuses
    it), and a quoted plain number was always read as that number."""
    for register, written, address in (("holding", 40011, 40011), ("holding", "10", 10),
                                       ("coil", "40011", 40011)):
        point = ModbusPoint.model_validate(
            {"name": "p", "register": register, "address": written}
        )
        assert point.address == address
