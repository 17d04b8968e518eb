"""S7 addresses and settings: what parses, what is refused, and where the YAML error points."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from adapters.s7.address import Area, parse_address
from adapters.s7.plan import max_item_bytes, minimum_requests, plan_reads
from adapters.s7.settings import S7Connection, S7Point, S7Settings
from edge.config.loader import parse_plant
from models.errors import PlantConfigError


@pytest.mark.parametrize(("text", "area", "db", "offset", "letter", "bit"), [
    ("DB10.DBD4", Area.DB, 10, 4, "D", None),
    ("DB10.DBX0.3", Area.DB, 10, 0, "X", 3),
    ("db10.dbw2", Area.DB, 10, 2, "W", None),
    ("DB10.DBB1", Area.DB, 10, 1, "B", None),
    ("MW20", Area.MERKERS, 0, 20, "W", None),
    ("MD4", Area.MERKERS, 0, 4, "D", None),
    ("M0.1", Area.MERKERS, 0, 0, "X", 1),
    ("I0.1", Area.INPUTS, 0, 0, "X", 1),
    ("E0.1", Area.INPUTS, 0, 0, "X", 1),
    ("IW2", Area.INPUTS, 0, 2, "W", None),
    ("Q0.0", Area.OUTPUTS, 0, 0, "X", 0),
    ("AW4", Area.OUTPUTS, 0, 4, "W", None),
    ("QW4", Area.OUTPUTS, 0, 4, "W", None),
    ("T5", Area.TIMERS, 0, 5, "T", None),
    ("C3", Area.COUNTERS, 0, 3, "C", None),
    ("Z3", Area.COUNTERS, 0, 3, "C", None),
])
def test_siemens_addresses_parse(text: str, area: Area, db: int, offset: int, letter: str,
                                 bit: int | None) -> None:
    a = parse_address(text)
    assert (a.area, a.db, a.offset, a.letter, a.bit) == (area, db, offset, letter, bit)


@pytest.mark.parametrize(("text", "message"), [
    ("DB10.DBX0.8", "bit 8 does not exist"),
    ("DB10.DBX4", "needs .bit"),
    ("DB10.DBW2.1", "only X"),
    ("M4", "needs the bit number"),
    ("DB0.DBW0", "numbered from 1"),
    ("DB10,REAL4", "not an S7 address"),
    ("MW70000", "out of range"),
])
def test_bad_addresses_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@pytest.mark.parametrize(("point", "message"), [
    ({"address": "DB10.DBW2", "data_type": "REAL"}, "write DB10.DBD2"),
    ({"address": "MW2", "data_type": "DINT"}, "write MD2"),
    ({"address": "DB1.DBD0", "data_type": "LREAL"}, "starts at a byte: write DB1.DBB0"),
    ({"address": "DB1.DBX0.1", "data_type": "INT"}, "must be BOOL"),
    ({"address": "DB1.DBW0", "data_type": "BOOL"}, "needs a bit address"),
    ({"address": "DB1.DBB0", "data_type": "STRING", "length": 300}, "at most 254"),
    ({"address": "DB1.DBW0", "length": 3}, "only meaningful with STRING"),
    ({"address": "T1", "data_type": "INT"}, "timer reads as S5TIME"),
    ({"address": "DB1.DBW0", "data_type": "COUNTER"}, "from a C address"),
    ({"address": "DB1.DBB0", "data_type": "STRING", "scale": 2}, "numeric types only"),
    ({"address": "DB1.DBD0", "data_type": "REAL", "map": {1: "a"}}, "integer data_type"),
])
def test_type_and_address_must_agree(point: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        S7Point.model_validate({"name": "p", **point})


def test_rack_slot_or_tsap() -> None:
    assert S7Connection(host="h").slot == 1
    with pytest.raises(ValidationError, match="go together"):
        S7Connection(host="h", local_tsap=0x100)
    with pytest.raises(ValidationError, match="not both"):
        S7Connection.model_validate({"host": "h", "slot": 2, "local_tsap": 1, "remote_tsap": 2})


def test_invalid_address_is_a_located_yaml_error() -> None:
    text = """\
gateway: {id: gw-1, site: plant-a}
machines:
  - id: plc1
    area: a1
    line: l1
    adapter: s7
    connection: {host: 127.0.0.1, rack: 0, slot: 1}
    points:
      - {name: speed, address: DB10.DBD4, data_type: REAL}
      - name: part_count
        address: DB10.DBW8.1
"""
    with pytest.raises(PlantConfigError) as info:
        parse_plant(text, "plant.yaml")
    (problem,) = [str(p) for p in info.value.problems]
    assert problem.startswith("plant.yaml:11:")
    assert "machines[0].points[1].address" in problem and "only X (bit) access" in problem


def points(specs: list[tuple[str, str | None]]) -> list[S7Point]:
    return [S7Point.model_validate({"name": f"p{i}", "address": a, "data_type": t})
            for i, (a, t) in enumerate(specs)]


def test_plan_coalesces_per_area_within_the_gap() -> None:
    conn = S7Connection(host="h", max_gap=4)
    pts = points([("DB1.DBD0", "REAL"), ("DB1.DBD8", "REAL"), ("DB1.DBD100", "REAL"),
                  ("DB2.DBW0", None), ("MW0", None), ("M3.1", None), ("T1", None),
                  ("T2", None)])
    plan = plan_reads(pts, conn, 480)
    labels = [r.label for r in plan.ranges]
    assert labels == ["timers 1+2", "merkers 0+4", "DB1 0+12", "DB1 100+4", "DB2 0+2"]
    # four byte ranges ride in one multi-variable read; the timers in one read of their own
    assert [len(r.items) for r in plan.requests] == [4, 1]


def test_plan_respects_the_pdu() -> None:
    conn = S7Connection(host="h", max_gap=0)
    # 500 REALs, every other double word: 250 ranges of 4 bytes at gap 4
    pts = points([(f"DB1.DBD{8 * i}", "REAL") for i in range(500)])
    for pdu in (240, 480, 960):
        plan = plan_reads(pts, conn, pdu)
        for req in plan.requests:
            assert len(req.items) <= 20
            assert 12 + 12 * len(req.items) <= pdu
            assert 14 + sum(4 + it.size + it.size % 2 for it in req.items) <= pdu
        assert sum(len(r.items) for r in plan.requests) == 500
    merged = plan_reads(pts, S7Connection(host="h", max_gap=4), 480)
    assert len(merged.requests) == 9 == -(-4 * 999 // max_item_bytes(480))
    assert minimum_requests(pts, 480) == -(-2000 // 462)


def test_settings_need_points_with_unique_names() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        S7Settings.model_validate({"connection": {"host": "h"}, "points": [
            {"name": "a", "address": "MW0"}, {"name": "a", "address": "MW2"}]})
