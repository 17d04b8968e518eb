"""Codec and settings: known register patterns for every data type x byte order."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.codec import (
    decode,
    decode_raw,
    encode,
    interpret,
    point_decoder,
    register_count,
)
from adapters.modbus.settings import ModbusPoint, ModbusSettings
from models.plant import Machine
from models.sample import Quality


def point(**kw: Any) -> ModbusPoint:
    return ModbusPoint.model_validate({"name": "p", "register": "holding", "address": 0, **kw})


# (data_type, extra settings, value, {byte_order: registers})
CASES: list[tuple[str, dict[str, Any], Any, dict[str, list[int]]]] = [
    (
        "uint16",
        {},
        0x1234,
        {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]},
    ),
    ("int16", {}, -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("int16", {}, -32768, {"ABCD": [0x8000], "CDAB": [0x8000], "BADC": [0x0080], "DCBA": [0x0080]}),
    (
        "uint32",
        {},
        0x01020304,
        {
            "ABCD": [0x0102, 0x0304],
            "CDAB": [0x0304, 0x0102],
            "BADC": [0x0201, 0x0403],
            "DCBA": [0x0403, 0x0201],
        },
    ),
    (
        "int32",
        {},
        -2,
        {
            "ABCD": [0xFFFF, 0xFFFE],
            "CDAB": [0xFFFE, 0xFFFF],
            "BADC": [0xFFFF, 0xFEFF],
            "DCBA": [0xFEFF, 0xFFFF],
        },
    ),
    (
        "float32",
        {},
        1.0,
        {
            "ABCD": [0x3F80, 0x0000],
            "CDAB": [0x0000, 0x3F80],
            "BADC": [0x803F, 0x0000],
            "DCBA": [0x0000, 0x803F],
        },
    ),
    (
        "float32",
        {},
        -3.5,  # 0xC0600000
        {
            "ABCD": [0xC060, 0x0000],
            "CDAB": [0x0000, 0xC060],
            "BADC": [0x60C0, 0x0000],
            "DCBA": [0x0000, 0x60C0],
        },
    ),
    (
        "uint64",
        {},
        0x0102030405060708,
        {
            "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
            "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
            "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
            "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    ("uint64", {}, 2**64 - 1, {o: [0xFFFF] * 4 for o in ("ABCD", "CDAB", "BADC", "DCBA")}),
    (
        "int64",
        {},
        -(2**63) + 1,  # 0x8000000000000001: exact, no float detour
        {
            "ABCD": [0x8000, 0, 0, 0x0001],
            "CDAB": [0x0001, 0, 0, 0x8000],
            "BADC": [0x0080, 0, 0, 0x0100],
            "DCBA": [0x0100, 0, 0, 0x0080],
        },
    ),
    (
        "float64",
        {},
        1.0,  # 0x3FF0000000000000
        {
            "ABCD": [0x3FF0, 0, 0, 0],
            "CDAB": [0, 0, 0, 0x3FF0],
            "BADC": [0xF03F, 0, 0, 0],
            "DCBA": [0, 0, 0, 0xF03F],
        },
    ),
    (
        "string",
        {"length": 2},
        "ABC",  # strings honour the byte swap only
        {
            "ABCD": [0x4142, 0x4300],
            "CDAB": [0x4142, 0x4300],
            "BADC": [0x4241, 0x0043],
            "DCBA": [0x4241, 0x0043],
        },
    ),
    (
        "bit",
        {"bit": 3},
        True,
        {"ABCD": [0x0008], "CDAB": [0x0008], "BADC": [0x0800], "DCBA": [0x0800]},
    ),
    (
        "bit",
        {"bit": 15},
        True,
        {"ABCD": [0x8000], "CDAB": [0x8000], "BADC": [0x0080], "DCBA": [0x0080]},
    ),
    ("bool", {}, True, {o: [1] for o in ("ABCD", "CDAB", "BADC", "DCBA")}),
    ("bool", {}, False, {o: [0] for o in ("ABCD", "CDAB", "BADC", "DCBA")}),
]

ROUND_TRIPS = [
    pytest.param(dt, extra, value, order, regs, id=f"{dt}-{value!r}-{order}")
    for dt, extra, value, table in CASES
    for order, regs in table.items()
]


@pytest.mark.parametrize(("data_type", "extra", "value", "byte_order", "registers"), ROUND_TRIPS)
def test_known_patterns_round_trip(
    data_type: str, extra: dict[str, Any], value: Any, byte_order: str, registers: list[int]
) -> None:
    p = point(data_type=data_type, byte_order=byte_order, **extra)
    assert encode(value, p) == registers
    decoded = decode(registers, p)
    if isinstance(value, int) and abs(value) > 2**53 - 1:
        value = str(value)  # canonical JSON carries numbers as doubles: exact as text
        assert encode(value, p) == registers
    assert decoded == value
    assert type(decoded) is type(value)


def test_every_data_type_and_order_is_covered() -> None:
    covered = {(dt, o) for dt, _, _, table in CASES for o in table}
    types = [
        "uint16",
        "int16",
        "uint32",
        "int32",
        "float32",
        "uint64",
        "int64",
        "float64",
        "string",
        "bit",
        "bool",
    ]
    assert covered == {(t, o) for t in types for o in ("ABCD", "CDAB", "BADC", "DCBA")}


@pytest.mark.parametrize(
    ("data_type", "extra", "count"),
    [
        ("int16", {}, 1),
        ("uint16", {}, 1),
        ("bool", {}, 1),
        ("bit", {"bit": 0}, 1),
        ("int32", {}, 2),
        ("uint32", {}, 2),
        ("float32", {}, 2),
        ("int64", {}, 4),
        ("uint64", {}, 4),
        ("float64", {}, 4),
        ("string", {"length": 10}, 10),
    ],
)
def test_register_count(data_type: str, extra: dict[str, Any], count: int) -> None:
    assert register_count(point(data_type=data_type, **extra)) == count


def test_coil_is_one_bit() -> None:
    p = point(register="coil")
    assert p.data_type == "bool"  # the default for bit kinds
    assert register_count(p) == 1
    assert decode([1], p) is True
    assert encode(False, p) == [0]


def test_bit_reads_only_its_bit() -> None:
    p = point(data_type="bit", bit=2)
    assert decode([0xFFFB], p) is False
    assert decode([0x0004], p) is True


def test_string_strips_trailing_nul_and_spaces() -> None:
    p = point(data_type="string", length=4)
    assert decode([0x4F4B, 0x2020, 0x0000, 0x0000], p) == "OK"
    assert decode([0x4F20, 0x4B00, 0, 0], p) == "O K"  # inner space kept
    assert decode(encode("O1234", p), p) == "O1234"


def test_string_utf8() -> None:
    p = point(data_type="string", length=3)
    assert decode(encode("Ä1", p), p) == "Ä1"


def test_scale_and_offset() -> None:
    p = point(data_type="int16", scale=0.1, offset=-10)
    assert decode([1234], p) == pytest.approx(113.4)
    assert encode(113.4, p) == [1234]
    assert decode_raw([1234], p) == 1234
    unscaled = point(data_type="uint16")
    assert isinstance(decode([7], unscaled), int)


def test_map_known_and_unknown_codes() -> None:
    p = point(map={0: "stopped", 2: "active"})
    assert interpret([2], p) == ("active", Quality.GOOD)
    assert interpret([7], p) == ("7", Quality.UNCERTAIN)
    assert encode("active", p) == [2]
    assert encode(0, p) == [0]
    with pytest.raises(ValueError, match="not in the map"):
        encode("flying", p)


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_non_finite_float_is_bad(registers: list[int]) -> None:
    p = point(data_type="float32")
    raw = decode_raw(registers, p)
    assert isinstance(raw, float)
    assert not math.isfinite(raw)
    assert interpret(registers, p) == (None, Quality.BAD)


@pytest.mark.parametrize(
    ("extra", "value"),
    [
        ({"data_type": "int16"}, 40000),
        ({"data_type": "uint16"}, -1),
        ({"data_type": "string", "length": 1}, "abc"),
        ({"data_type": "uint16"}, "x"),
        ({"data_type": "uint16"}, None),
    ],
)
def test_encode_refuses_what_does_not_fit(extra: dict[str, Any], value: Any) -> None:
    with pytest.raises(ValueError):
        encode(value, point(**extra))


@st.composite
def points(draw: st.DrawFn) -> ModbusPoint:
    """Any valid point: every kind, data type and byte order, with scale/offset or a map
    where the settings allow one."""
    kind = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
    if kind in ("coil", "discrete"):
        extra: dict[str, Any] = {"data_type": "bool"}
    else:
        data_type = draw(st.sampled_from(sorted(CODEC_TYPES)))
        extra = {"data_type": data_type, "byte_order": draw(st.sampled_from(BYTE_ORDERS))}
        if data_type == "bit":
            extra["bit"] = draw(st.integers(0, 15))
        if data_type == "string":
            extra["length"] = draw(st.integers(1, 6))
        numeric = data_type not in ("bool", "bit", "string")
        choice = draw(st.sampled_from(["plain", "scaled", "mapped"]))
        if choice == "scaled" and numeric:
            extra["scale"] = draw(st.floats(allow_nan=False, allow_infinity=False).filter(bool))
            extra["offset"] = draw(st.floats(allow_nan=False, allow_infinity=False))
        elif choice == "mapped" and data_type not in ("float32", "float64", "string"):
            extra["map"] = draw(st.dictionaries(st.integers(-5, 70000), st.text(max_size=3),
                                                max_size=4))
    return ModbusPoint.model_validate({"name": "p", "register": kind, "address": 0, **extra})


CODEC_TYPES = {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
               "bool", "bit", "string"}
BYTE_ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
EDGE_WORDS = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x7F80, 0xFF80,
              0x7FC0, 0x7FF0, 0xFFF0, 0x0080]


@settings(max_examples=3000, deadline=None)
@given(points(), st.data())
def test_point_decoder_is_interpret(p: ModbusPoint, data: st.DataObject) -> None:
    """The compiled decoder of the read loop gives exactly what `interpret` gives: same
    value, same type (1 is not 1.0 is not True; -0.0 is not 0.0), same quality."""
    word = st.one_of(st.sampled_from(EDGE_WORDS), st.integers(0, 0xFFFF))
    at = data.draw(st.integers(0, 3))
    bits = p.kind in ("coil", "discrete")
    registers = data.draw(st.lists(st.integers(0, 1) if bits else word,
                                   min_size=at + p.width, max_size=at + p.width + 3))
    expected = interpret(registers[at : at + p.width], p)
    got = point_decoder(p)(registers, at)
    assert (repr(got[0]), type(got[0]), got[1]) == (
        repr(expected[0]), type(expected[0]), expected[1])


@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
@pytest.mark.parametrize(
    ("data_type", "value"),
    [("float32", math.inf), ("float32", -math.inf), ("float32", math.nan), ("float32", -0.0),
     ("float64", math.inf), ("float64", math.nan), ("float64", -0.0), ("float64", 2.0**60),
     ("int64", 2**53), ("int64", -(2**53)), ("uint64", 2**53 - 1), ("int16", -1),
     ("int32", -(2**31)), ("uint32", 2**32 - 1)],
)
def test_point_decoder_edges(data_type: str, value: Any, byte_order: str) -> None:
    """The edges a random draw may miss: non-finite floats, -0.0, integers at 2**53."""
    p = point(data_type=data_type, byte_order=byte_order)
    registers = [0x1234, *encode(value, p)]
    expected = interpret(registers[1:], p)
    got = point_decoder(p)(registers, 1)
    assert (repr(got[0]), type(got[0]), got[1]) == (
        repr(expected[0]), type(expected[0]), expected[1])


def test_decode_refuses_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], point(data_type="float32"))


# --- settings validation -------------------------------------------------------------------

CONN = {"host": "10.0.0.5"}


@pytest.mark.parametrize(
    ("points", "connection", "message"),
    [
        (
            [{"name": "a", "register": "holding", "address": 65535, "data_type": "uint32"}],
            CONN,
            "register out of range",
        ),
        ([{"name": "a", "register": "holding", "address": 65536}], CONN, "less than or equal"),
        (
            [{"name": "a", "register": "holding", "address": 1, "data_type": "bit"}],
            CONN,
            "needs 'bit'",
        ),
        (
            [{"name": "a", "register": "holding", "address": 1, "bit": 3}],
            CONN,
            "only meaningful with data_type 'bit'",
        ),
        (
            [{"name": "a", "register": "coil", "address": 1, "data_type": "float32"}],
            CONN,
            "data_type must be 'bool'",
        ),
        (
            [{"name": "a", "register": "discrete", "address": 1, "data_type": "uint16"}],
            CONN,
            "data_type must be 'bool'",
        ),
        (
            [{"name": "a", "register": "holding", "address": 1, "data_type": "string"}],
            CONN,
            "needs 'length'",
        ),
        (
            [{"name": "a", "register": "holding", "address": 1, "length": 4}],
            CONN,
            "only meaningful with data_type 'string'",
        ),
        (
            [
                {
                    "name": "a",
                    "register": "holding",
                    "address": 1,
                    "data_type": "string",
                    "length": 2,
                    "scale": 2,
                }
            ],
            CONN,
            "numeric types only",
        ),
        (
            [
                {
                    "name": "a",
                    "register": "holding",
                    "address": 1,
                    "data_type": "float32",
                    "map": {1: "x"},
                }
            ],
            CONN,
            "integer data_type",
        ),
        ([{"name": "a", "register": "holding", "address": 1, "scale": 0}], CONN, "not be 0"),
        (
            [
                {"name": "a", "register": "holding", "address": 1},
                {"name": "a", "register": "holding", "address": 2},
            ],
            CONN,
            "duplicate point name",
        ),
        ([{"name": "Spindle", "register": "holding", "address": 1}], CONN, "pattern"),
        (
            [{"name": "a", "register": "holding", "address": 1, "colour": "red"}],
            CONN,
            "Extra inputs",
        ),
        ([{"name": "a", "register": "holding", "address": 1}], {}, "needs 'host'"),
        (
            [{"name": "a", "register": "holding", "address": 1}],
            {"transport": "rtu"},
            "needs 'port_path'",
        ),
        (
            [{"name": "a", "register": "holding", "address": 1}],
            {"transport": "rtu", "port_path": "/dev/ttyUSB0", "unit": 0},
            "broadcast",
        ),
        (
            [
                {
                    "name": "a",
                    "register": "holding",
                    "address": 1,
                    "data_type": "string",
                    "length": 10,
                }
            ],
            {**CONN, "max_registers_per_request": 8},
            "max_registers_per_request",
        ),
        ([], CONN, "at least 1"),
        ([{"name": "a", "register": "register", "address": 1}], CONN, "holding"),
    ],
)
def test_settings_errors(
    points: list[dict[str, Any]], connection: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModbusSettings.model_validate({"connection": connection, "points": points})


def test_settings_accept_a_full_map_and_are_frozen() -> None:
    s = ModbusSettings.model_validate(
        {
            "connection": {
                "transport": "rtu",
                "port_path": "/dev/ttyUSB0",
                "baudrate": 9600,
                "parity": "E",
                "unit": 3,
            },
            "points": [
                {"name": "a", "register": "holding", "address": 65534, "data_type": "uint16"},
                {
                    "name": "b",
                    "register": "holding",
                    "address": 65534,
                    "data_type": "int32",
                    "byte_order": "CDAB",
                    "scale": 0.01,
                    "unit": "mm",
                    "unit_id": 4,
                },
                {"name": "c", "register": "coil", "address": 65535},
                {"name": "d", "register": "input", "address": 0, "map": {0: "off", 1: "on"}},
            ],
        }
    )
    assert s.points[1].unit_id == 4
    assert s.connection.port == 502
    with pytest.raises(ValidationError):
        s.connection.unit = 9  # type: ignore[misc]


def test_sample_yaml_is_a_valid_machine_block() -> None:
    path = Path(__file__).parents[3] / "adapters" / "modbus" / "sample.yaml"
    block = yaml.safe_load(path.read_text(encoding="utf-8"))
    machine = Machine.model_validate(block)
    assert machine.adapter == "modbus"
    s = ModbusAdapter.settings_model.model_validate(
        {"connection": machine.connection, "points": machine.points}
    )
    assert isinstance(s, ModbusSettings)
    assert len(s.points) == 14
    assert next(p for p in s.points if p.name == "execution").map == {
        0: "stopped",
        1: "ready",
        2: "active",
        3: "interrupted",
        4: "feed_hold",
        5: "program_stopped",
        6: "program_completed",
        7: "wait",
        8: "optional_stop",
    }
