"""SHDR fields as the MTConnect reference agent reads them, quoted texts included.

UPSTREAM is cppagent's own tokenizer test table, restated as line -> fields: mtconnect/cppagent
`test_package/shdr_tokenizer_test.cpp` at commit 7a15fbf179036a14823759f3a8114d435da9395f
(tests `should_handle_simple_tokens` and `should_handle_escaped_characters_in_SHDR_line`),
Copyright AMT, Apache License 2.0 (http://www.apache.org/licenses/LICENSE-2.0). The behaviour
is that of `src/mtconnect/pipeline/shdr_tokenizer.hpp` (commits 0367e746 and e9999629, the
same function). CORNERS are cases its tests do not cover; their expected fields were taken
from a build of that upstream function, not from our own reading.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_shdr_adapter import read_raw

from adapters.mtconnect.shdr import MAX_LINE
from adapters.mtconnect.shdr_protocol import AssetEvent, ConditionEvent, DataEvent, ShdrParser
from adapters.mtconnect.shdr_tokenizer import tokenize
from models.sample import Quality, Sample

UPSTREAM: list[tuple[str, list[str]]] = [
    # should_handle_simple_tokens
    ("   |hello   |   kitty| cat | ", ["", "hello", "kitty", "cat", ""]),
    ("hello|kitty", ["hello", "kitty"]),
    ("hello|kitty|", ["hello", "kitty", ""]),
    ("|hello|kitty|", ["", "hello", "kitty", ""]),
    ('hello|xxx={b="12345", c="xxxxx"}}|bbb', ["hello", 'xxx={b="12345", c="xxxxx"}}', "bbb"]),
    # should_handle_escaped_characters_in_SHDR_line: correctly escaped
    (r'"a\|b"', ["a|b"]),
    (r'"a\|b"|z', ["a|b", "z"]),
    (r'y|"a\|b"', ["y", "a|b"]),
    (r'y|"a\|b"|z', ["y", "a|b", "z"]),
    # ... with multiple pipes
    (r'"a\|b\|c"', ["a|b|c"]),
    (r'"a\|b\|c"|z', ["a|b|c", "z"]),
    (r'y|"a\|b\|c"', ["y", "a|b|c"]),
    (r'y|"a\|b\|c"|z', ["y", "a|b|c", "z"]),
    # ... with a pipe at the front
    (r'"\|b\|c"', ["|b|c"]),
    (r'"\|b\|c"|z', ["|b|c", "z"]),
    (r'y|"\|b\|c"', ["y", "|b|c"]),
    (r'y|"\|b\|c"|z', ["y", "|b|c", "z"]),
    # ... with pipes at the end
    (r'"a\|b\|"', ["a|b|"]),
    (r'"a\|b\|"|z', ["a|b|", "z"]),
    (r'y|"a\|b\|"', ["y", "a|b|"]),
    (r'y|"a\|b\|"|z', ["y", "a|b|", "z"]),
    # missing first quote: a backslash outside quotes is an ordinary character
    (r'a\|b"', ["a\\", 'b"']),
    (r'a\|b"|z', ["a\\", 'b"', "z"]),
    (r'y|a\|b"', ["y", "a\\", 'b"']),
    (r'y|a\|b"|z', ["y", "a\\", 'b"', "z"]),
    # ... and multiple pipes
    (r'a\|b\|c"', ["a\\", "b\\", 'c"']),
    (r'a\|b\|c"|z', ["a\\", "b\\", 'c"', "z"]),
    (r'y|a\|b\|c"', ["y", "a\\", "b\\", 'c"']),
    (r'y|a\|b\|c"|z', ["y", "a\\", "b\\", 'c"', "z"]),
    # missing last quote: the field is re-read as sent, up to the next pipe
    (r'"a\|b', ['"a\\', "b"]),
    (r'"a\|b|z', ['"a\\', "b", "z"]),
    (r'y|"a\|b', ["y", '"a\\', "b"]),
    (r'y|"a\|b|z', ["y", '"a\\', "b", "z"]),
    # ... and a pipe at the end et al.
    (r'"a\|', ['"a\\', ""]),
    (r'y|"a\|', ["y", '"a\\', ""]),
    (r'y|"a\|z', ["y", '"a\\', "z"]),
    (r'y|"a\|"z', ["y", '"a\\', '"z']),
    ("x|y||z", ["x", "y", "", "z"]),
]

CORNERS: list[tuple[str, list[str]]] = [
    ("", []),
    ("  ", [""]),
    ("a| ", ["a", ""]),  # trailing whitespace after the last pipe is an empty field
    ('"a"  |', ["a", ""]),
    ('"ab|c', ["ab", "c"]),  # unclosed, no backslash: the opening quote is dropped
    ('"abc"def|x', ["abc", "def", "x"]),  # a quote followed by text ends the field there
    ('" a "|b', [" a", "b"]),  # inside quotes only the end is trimmed
    (r'"a\"b" |c', ['a"b', "c"]),
    (r'x|"a\\b"', ["x", "a\\b"]),
    ('"ab\\', ['"ab\\']),  # trailing escape, never closed: as sent
    (r'"a\|b"|"c\d|x', ["a|b", '"cd', "x"]),  # escapes are edited in place for the line
    (r'"Tool \| spindle \"A\""|exec|ACTIVE', ['Tool | spindle "A"', "exec", "ACTIVE"]),
    ("a\0|b", ["a"]),  # a C string ends at NUL
]


@pytest.mark.parametrize(("line", "fields"), UPSTREAM, ids=[line for line, _ in UPSTREAM])
def test_cppagent_tokenizer_cases(line: str, fields: list[str]) -> None:
    assert tokenize(line) == fields


@pytest.mark.parametrize(("line", "fields"), CORNERS, ids=[repr(line) for line, _ in CORNERS])
def test_corners_match_the_upstream_function(line: str, fields: list[str]) -> None:
    assert tokenize(line) == fields


def test_parser_reads_quoted_message_condition_and_asset_fields() -> None:
    p = ShdrParser(is_condition=lambda key: key == "system" or None,
                   is_message=lambda key: key == "msg")
    ts = "2024-01-01T00:00:00Z"
    assert p.feed(rf'{ts}|msg|E1|"Tool \| spindle"|exec|ACTIVE') == [
        DataEvent(ts, "msg", "Tool | spindle", native_code="E1"), DataEvent(ts, "exec", "ACTIVE")]
    assert p.feed(rf'{ts}|system|FAULT|"E\|7"|HIGH||"Door \"A\" \| open"|part_count|2') == [
        ConditionEvent(ts, "system", "FAULT", "E|7", "HIGH", "", 'Door "A" | open'),
        DataEvent(ts, "part_count", "2")]
    body = r'"<CuttingTool a=\"1\">x\|y</CuttingTool>"'
    assert p.feed(rf'{ts}|@ASSET@|"T\|1"|CuttingTool|{body}') == [
        AssetEvent(ts, "ASSET", "T|1", "CuttingTool", '<CuttingTool a="1">x|y</CuttingTool>')]
    # an unquoted one-line body holding a pipe stays whole, as before
    assert p.feed(f"{ts}|@ASSET@|T2|CuttingTool|<CuttingTool>a | b</CuttingTool>") == [
        AssetEvent(ts, "ASSET", "T2", "CuttingTool", "<CuttingTool>a | b</CuttingTool>")]
    assert p.feed(f'{ts}|@REMOVE_ASSET@|"T\\|1"') == [AssetEvent(ts, "REMOVE_ASSET", "T|1", "", "")]
    assert p.malformed == 0


DEVICES = """<?xml version="1.0" encoding="UTF-8"?>
<MTConnectDevices xmlns="urn:mtconnect.org:MTConnectDevices:2.0">
 <Header creationTime="2024-01-01T00:00:00Z" instanceId="1" version="2.0"/>
 <Devices><Device id="d1" name="mill" uuid="mill-1"><DataItems>
  <DataItem id="avail" category="EVENT" type="AVAILABILITY"/>
 </DataItems><Components><Controller id="c1"><DataItems>
  <DataItem id="sys" name="system" category="CONDITION" type="SYSTEM"/>
 </DataItems><Components><Path id="p1"><DataItems>
  <DataItem id="m1" name="msg" category="EVENT" type="MESSAGE"/>
  <DataItem id="x1" name="exec" category="EVENT" type="EXECUTION"/>
 </DataItems></Path></Components></Controller></Components></Device></Devices>
</MTConnectDevices>
"""


@pytest.mark.parametrize("unit", ["\\", '"a\\|'], ids=["backslashes", "escaped-bars"])
def test_a_hostile_line_of_escapes_is_split_in_linear_time(unit: str) -> None:
    """A device may send a line of up to MAX_LINE escapes (issue 12: the reader faces hostile
    devices). Cutting each dropped backslash out of the string made that quadratic: 1 MB took
    28 s of the event loop. The linear split takes 0.1-0.4 s, 0.7 s on a starved host: the
    bound, 10 s, is ~15x that and far below the quadratic split's time, so the test fails on
    the quadratic split, not on a slow host."""
    line = ('"' + "\\" * MAX_LINE if unit == "\\" else unit * MAX_LINE)[:MAX_LINE]
    started = time.monotonic()
    fields = tokenize(line)
    assert time.monotonic() - started < 10.0
    if unit == "\\":  # unclosed and escaped: re-read as sent, one field
        assert fields == [line]
    else:  # as the short line splits: `"a\|"a\|"a\|` -> `"a\`, `"a`, `"a`, ``
        assert fields == ['"a\\'] + ['"a'] * (MAX_LINE // 4 - 1) + [""]


async def test_quoted_texts_arrive_intact_over_a_socket(tmp_path: Path) -> None:
    """An adapter quoting its texts as cppagent's adapters do: the MESSAGE text with `\\|`
    and the condition's quoted code and text come through whole, and the pairs after them
    are still read as pairs (a plain split would have shifted every field after the pipe)."""
    model = tmp_path / "Devices.xml"
    model.write_text(DEVICES, encoding="utf-8")
    payload = (
        br'2024-01-01T00:00:00Z|msg|E42|"Coolant low \| refill \"tank 2\""|exec|ACTIVE' b"\n"
        br'2024-01-01T00:00:01Z|system|FAULT|"OV\|1"|||"Spindle \| overload"|exec|READY' b"\n"
    )

    def done(got: list[Sample]) -> bool:
        return any(s.value == "ready" for s in got)

    got, a = await read_raw(payload, done, device_model=str(model))
    assert [(s.signal, s.value, s.quality) for s in got] == [
        ("msg", 'Coolant low | refill "tank 2"', Quality.GOOD),
        ("execution", "active", Quality.GOOD),
        ("alarm", "OV|1", Quality.GOOD),
        ("execution", "ready", Quality.GOOD),
    ]
    assert a.normalizer.conditions.active == {"sys": {"OV|1": "Spindle | overload"}}
    assert a.describe()["refused"] == {}
