"""MTConnect MESSAGE data items over SHDR (`ts|key|native_code|text`), read over a real TCP
socket: typed by a device model or a point's `type: MESSAGE`, never guessed."""

from __future__ import annotations

from pathlib import Path

from test_shdr_adapter import read_raw

from adapters.mtconnect.shdr_protocol import DataEvent, ShdrParser
from models.sample import Quality, Sample

DEVICES = """<?xml version="1.0" encoding="UTF-8"?>
<MTConnectDevices xmlns="urn:mtconnect.org:MTConnectDevices:2.0">
 <Header creationTime="2024-01-01T00:00:00Z" instanceId="1" version="2.0"/>
 <Devices><Device id="d1" name="mill" uuid="mill-1"><DataItems>
  <DataItem id="avail" category="EVENT" type="AVAILABILITY"/>
 </DataItems><Components><Controller id="c1"><Components><Path id="p1"><DataItems>
  <DataItem id="m1" name="msg" category="EVENT" type="MESSAGE"/>
  <DataItem id="x1" name="exec" category="EVENT" type="EXECUTION"/>
 </DataItems></Path></Components></Controller></Components></Device></Devices>
</MTConnectDevices>
"""

LINES = (
    "2024-01-01T00:00:00Z|msg||Change inserts\n"  # empty native code
    "2024-01-01T00:00:01Z|msg|E42|Tür offen, Spindel stoppen ⚠|exec|ACTIVE\n"
    "2024-01-01T00:00:02Z|msg|E43\n"  # no text field: not SHDR, refused whole
    "2024-01-01T00:00:03Z|msg||UNAVAILABLE\n"
    "2024-01-01T00:00:04Z|exec|READY\n"
).encode()


def _ready(got: list[Sample]) -> bool:
    return any(x.value == "ready" for x in got)


async def test_device_model_message_text_is_the_value(tmp_path: Path) -> None:
    model = tmp_path / "Devices.xml"
    model.write_text(DEVICES, encoding="utf-8")
    got, a = await read_raw(LINES, _ready, device_model=str(model))
    assert [(s.signal, s.value, s.quality) for s in got] == [
        ("msg", "Change inserts", Quality.GOOD),
        ("msg", "Tür offen, Spindel stoppen ⚠", Quality.GOOD),
        ("execution", "active", Quality.GOOD),  # the pair after the message is read on
        ("msg", None, Quality.BAD),
        ("execution", "ready", Quality.GOOD),
    ]
    assert all(isinstance(s.value, str) for s in got if s.signal == "msg" and s.value)
    assert got[0].source_ts is not None and got[0].source_ts.second == 0
    assert a.describe()["refused"] == {"missing_value": 1}


async def test_point_declares_a_message_without_device_model() -> None:
    payload = (b"2024-01-01T00:00:00Z|pmsg|1001|Operator call: check coolant\n"
               b"2024-01-01T00:00:01Z|execution|READY\n")
    got, a = await read_raw(payload, _ready, [{"key": "pmsg", "type": "MESSAGE",
                                              "name": "operator_message"}])
    assert [(s.signal, s.value, s.quality) for s in got] == [
        ("operator_message", "Operator call: check coolant", Quality.GOOD),
        ("execution", "ready", Quality.GOOD)]
    assert a.describe()["refused"] == {}


async def test_undeclared_message_shape_keeps_the_junk_rules() -> None:
    """Without a model or a point, `msg|E1|text` is a pair and a key with no value: refused
    whole, as before (issue 12 item 5), never published as `msg=E1`."""
    payload = (b"2024-01-01T00:00:00Z|msg|E1|Change inserts\n"
               b"2024-01-01T00:00:01Z|execution|READY\n")
    got, a = await read_raw(payload, _ready)
    assert [(s.signal, s.value) for s in got] == [("execution", "ready")]
    assert a.describe()["refused"] == {"missing_value": 1}


def test_parser_keeps_the_native_code() -> None:
    p = ShdrParser(is_message=lambda key: key == "msg")
    assert p.feed("2024-01-01T00:00:00Z|msg|E7|Spindle warm-up|part_count|3\n") == [
        DataEvent("2024-01-01T00:00:00Z", "msg", "Spindle warm-up", native_code="E7"),
        DataEvent("2024-01-01T00:00:00Z", "part_count", "3")]
    assert p.malformed == 0
    assert p.feed("2024-01-01T00:00:01Z|msg|E7\n") == []
    assert p.malformed == 1
