"""MTConnect mapping, settings and safe XML parsing, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.mtconnect.documents import ErrorDocument, parse_probe, parse_streams
from adapters.mtconnect.settings import MtconnectAgentSettings, ShdrSettings
from adapters.mtconnect.shdr_protocol import (
    AssetEvent,
    Command,
    ConditionEvent,
    DataEvent,
    ShdrParser,
)
from adapters.mtconnect.vocabulary import DataItem, Normalizer, parse_timestamp, signal_name
from models.errors import ProtocolError
from models.sample import Quality

# vendored with licence and provenance: tests/fixtures/mtconnect-cppagent/README.md
MATERIAL = Path(__file__).resolve().parents[2] / "fixtures" / "mtconnect-cppagent"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<MTConnectStreams><Header instanceId="1"/><Streams>&lol9;</Streams></MTConnectStreams>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<MTConnectDevices><Devices><Device name="d">&x;</Device></Devices></MTConnectDevices>"""


def items() -> dict[str, DataItem]:
    specs = [
        DataItem("exec", "EXECUTION"), DataItem("mode", "CONTROLLER_MODE"),
        DataItem("avail", "AVAILABILITY"), DataItem("estop", "EMERGENCY_STOP"),
        DataItem("prog", "PROGRAM", sub_type="MAIN"), DataItem("pc", "PART_COUNT"),
        DataItem("bad", "PART_COUNT", sub_type="BAD"),
        DataItem("S1", "ROTARY_VELOCITY", "SAMPLE", sub_type="ACTUAL",
                 units="REVOLUTION/MINUTE", component="Rotary"),
        DataItem("S2", "ROTARY_VELOCITY", "SAMPLE", sub_type="ACTUAL",
                 units="REVOLUTION/MINUTE", component="Rotary"),
        DataItem("Sload", "LOAD", "SAMPLE", units="PERCENT", component="Rotary"),
        DataItem("Fact", "PATH_FEEDRATE", "SAMPLE", sub_type="ACTUAL",
                 units="MILLIMETER/SECOND", component="Path"),
        DataItem("system", "SYSTEM", "CONDITION"), DataItem("hyd", "HYDRAULIC", "CONDITION"),
    ]
    return {i.id: i for i in specs}


@pytest.mark.parametrize(("item", "raw", "signal", "value"), [
    ("exec", "FEED_HOLD", "execution", "feed_hold"),
    ("exec", "PROGRAM_COMPLETED", "execution", "program_completed"),
    ("mode", "MANUAL_DATA_INPUT", "controller_mode", "mdi"),
    ("mode", "SEMI_AUTOMATIC", "controller_mode", "semi_automatic"),
    ("avail", "AVAILABLE", "availability", "available"),
    ("estop", "TRIGGERED", "emergency_stop", True),
    ("estop", "ARMED", "emergency_stop", False),
    ("prog", "O1234", "program", "O1234"),
    ("pc", "17", "part_count", 17),
    ("bad", "2", "bad_part_count", 2),
    ("S1", "1200.5", "spindle_speed", 1200.5),
    ("S2", "300", "s2", 300.0),  # the second spindle keeps its own name
    ("Sload", "35", "spindle_load", 35.0),
    ("Fact", "12.5", "feed_rate", 12.5),
])
def test_state_vocabulary(item: str, raw: str, signal: str, value: object) -> None:
    n = Normalizer("m1", items())
    s = n.sample(n.items[item], raw, NOW, NOW)
    assert s is not None
    assert (s.signal, s.value, s.quality) == (signal, value, Quality.GOOD)
    assert s.source_ts == NOW


def test_units_unavailable_and_unknown_words() -> None:
    n = Normalizer("m1", items())
    s = n.sample(n.items["S1"], "UNAVAILABLE", NOW, NOW)
    assert s is not None and (s.value, s.quality, s.unit) == (None, Quality.BAD, "1/min")
    f = n.sample(n.items["Fact"], "1", None, NOW)
    assert f is not None and f.unit == "mm/s"
    odd = n.sample(n.items["exec"], "DANCING", NOW, NOW)
    assert odd is not None and odd.quality is Quality.UNCERTAIN


@pytest.mark.parametrize(("native", "units", "scale", "raw", "value", "unit"), [
    ("MILLIMETER/MINUTE", "MILLIMETER/SECOND", None, "600", 10.0, "mm/s"),
    ("INCH/MINUTE", "MILLIMETER/SECOND", None, "60", 25.4, "mm/s"),
    ("FAHRENHEIT", "CELSIUS", None, "212", 100.0, "Cel"),
    ("MILLIMETER", "MILLIMETER", 10.0, "125", 12.5, "mm"),  # nativeScale divides first
    ("INCH_3D", "MILLIMETER_3D", None, "1 0 2", "25.4 0.0 50.8", "millimeter_3d"),
    ("FURLONG/FORTNIGHT", "MILLIMETER/SECOND", None, "7", 7.0, "furlong/fortnight"),
    ("MILLIMETER/MINUTE", None, None, "7", 7.0, "mm/min"),
])
def test_native_units_converted_or_labelled(native: str, units: str | None,
                                            scale: float | None, raw: str, value: object,
                                            unit: str) -> None:
    """SHDR sends native units; an unknown conversion is labelled, never mislabelled."""
    item = DataItem(id="x", type="PATH_FEEDRATE", category="SAMPLE", units=units,
                    native_units=native, native_scale=scale)
    shdr = Normalizer("m1", {"x": item}, native_units=True)
    s = shdr.sample(item, raw, NOW, NOW)
    assert s is not None and (s.value, s.unit, s.quality) == (
        pytest.approx(value) if isinstance(value, float) else value, unit, Quality.GOOD)
    agent = Normalizer("m1", {"x": item})  # an agent has converted already
    a = agent.sample(item, "600", NOW, NOW)
    assert a is not None and a.value == 600.0


@pytest.mark.parametrize("raw", ["1\x00\x00\x00", "abc", "nan", "inf", "1_0", "1 b"])
def test_a_number_that_is_not_a_number_is_bad(raw: str) -> None:
    n = Normalizer("m1", items())
    s = n.sample(n.items["S1"], raw, NOW, NOW)
    assert s is not None and (s.value, s.quality) == (None, Quality.BAD)
    pc = n.sample(DataItem(id="pc", type="PART_COUNT"), raw, NOW, NOW)
    assert pc is not None and (pc.value, pc.quality) == (None, Quality.BAD)


def test_conditions_become_alarm_with_native_code() -> None:
    n = Normalizer("m1", items())
    sysitem, hyd = n.items["system"], n.items["hyd"]

    def cond(item: DataItem, level: str, code: str = "") -> object:
        s = n.condition(item, level, code, message="", source_ts=NOW, gateway_ts=NOW)
        return None if s is None else (s.signal, s.value)

    assert cond(sysitem, "NORMAL") is None  # nothing changed
    assert cond(sysitem, "FAULT", "1001") == ("alarm", "1001")
    assert cond(hyd, "WARNING", "7") is None  # a warning is not an alarm
    assert cond(hyd, "FAULT", "2001") == ("alarm", "2001")
    assert cond(hyd, "NORMAL") == ("alarm", "1001")  # NORMAL clears that item only
    assert cond(sysitem, "NORMAL", "1001") == ("alarm", "")


def test_renames_and_drop_unlisted() -> None:
    n = Normalizer("m1", items(), {"S2": "subspindle_speed"}, keep_unlisted=False)
    assert n.signal_of(n.items["S2"]) == "subspindle_speed"
    assert n.signal_of(n.items["S1"]) == "spindle_speed"
    n2 = Normalizer("m1", {"x": DataItem("x", "X_THING")}, keep_unlisted=False)
    assert n2.sample(n2.items["x"], "1", NOW, NOW) is None


def test_timestamps_and_names() -> None:
    t = parse_timestamp("2022-08-08T13:51:34.7167146Z")
    assert t == datetime(2022, 8, 8, 13, 51, 34, 716714, tzinfo=UTC)
    assert parse_timestamp("2022-08-08T13:51:34Z@12.5") == datetime(2022, 8, 8, 13, 51, 34,
                                                                    tzinfo=UTC)
    assert parse_timestamp("garbage") is None
    assert signal_name("S1CuttingSpeedA") == "s1_cutting_speed_a"
    assert signal_name("X1actm") == "x1actm"


def test_billion_laughs_and_xxe_refused() -> None:
    with pytest.raises(ProtocolError, match="unsafe XML"):
        parse_streams(BILLION_LAUGHS)
    with pytest.raises(ProtocolError, match="unsafe XML"):
        parse_probe(XXE)
    with pytest.raises(ProtocolError, match="malformed"):
        parse_streams(b"<MTConnectStreams><unclosed>")


def test_error_document() -> None:
    doc = parse_streams(b'<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:2.0">'
                        b'<Header instanceId="7" firstSequence="100"/><Errors>'
                        b'<Error errorCode="OUT_OF_RANGE">too old</Error></Errors>'
                        b"</MTConnectError>")
    assert isinstance(doc, ErrorDocument) and doc.has("OUT_OF_RANGE")
    assert doc.header is not None and doc.header.first_sequence == 100


def test_real_device_model() -> None:
    doc = parse_probe((MATERIAL / "demo_Devices.xml").read_bytes(), "OKUMA")
    by_name = {i.name: i for i in doc.items.values() if i.name}
    assert by_name["pexecution"].type == "EXECUTION"
    assert by_name["ppartcount"].type == "PART_COUNT"
    n = Normalizer("okuma", doc.items)
    assert n.signal_of(by_name["pexecution"]) == "execution"
    assert n.signal_of(by_name["pmode"]) == "controller_mode"


def test_shdr_parser() -> None:
    p = ShdrParser()
    ev = p.feed("2024-01-01T00:00:00Z|exec|ACTIVE|pc|3")
    assert ev == [DataEvent("2024-01-01T00:00:00Z", "exec", "ACTIVE"),
                  DataEvent("2024-01-01T00:00:00Z", "pc", "3")]
    ev = p.feed("2024-01-01T00:00:01Z|system|FAULT|1001|HIGH||Spindle overload")
    assert ev == [ConditionEvent("2024-01-01T00:00:01Z", "system", "FAULT", "1001", "HIGH",
                                 "", "Spindle overload")]
    assert p.feed("* PONG 5000") == [Command("PONG 5000")]
    assert p.feed("2024-01-01T00:00:02Z|@ASSET@|T1|CuttingTool|--multiline--XY") == []
    assert p.feed("<CuttingTool>") == []
    assert p.feed("</CuttingTool>") == []
    (asset,) = p.feed("--multiline--XY")
    assert isinstance(asset, AssetEvent)
    assert (asset.asset_id, asset.body) == ("T1", "<CuttingTool>\n</CuttingTool>")
    # a key typed as condition by the device model consumes five fields wherever it stands
    q = ShdrParser(lambda key: key == "c")
    assert [type(e).__name__ for e in q.feed("t|c|NORMAL||||x|1")] == ["ConditionEvent",
                                                                        "DataEvent"]


def test_settings() -> None:
    s = MtconnectAgentSettings.model_validate({"connection": {"url": "http://h:5000/"}})
    assert (s.connection.host, s.connection.port, s.connection.url) == ("h", 5000,
                                                                       "http://h:5000")
    with pytest.raises(ValidationError):
        MtconnectAgentSettings.model_validate({"connection": {"url": "ftp://h"}})
    with pytest.raises(ValidationError, match="duplicate"):
        MtconnectAgentSettings.model_validate({"connection": {"url": "http://h"}, "points": [
            {"data_item": "a", "name": "x"}, {"data_item": "b", "name": "x"}]})
    sh = ShdrSettings.model_validate({"connection": {"host": "h"}})
    assert sh.connection.port == 7878 and sh.points == []
    with pytest.raises(ValidationError, match="needs"):
        ShdrSettings.model_validate({"connection": {"host": "h"}, "points": [{"key": "k"}]})


def test_a_point_renamed_to_a_well_known_name_wins_wherever_it_sits_in_the_model() -> None:
    """`points:` renames (adapters/mtconnect/README.md): a data item renamed to `execution` or
    `spindle_speed` takes that name, and the well-known item that would have had it keeps its
    own, even when the well-known one comes first in the device model. Before, it depended on
    document order: both became `execution`, two records of one name per change (acceptance
    audit of issue 13, same class as the OPC UA `alarm` point)."""
    model = items()
    model["plc_exec"] = DataItem("plc_exec", "MESSAGE")  # after `exec` in document order
    model["plc_speed"] = DataItem("plc_speed", "MESSAGE")  # after `S1`
    n = Normalizer("m1", model, {"plc_exec": "execution", "plc_speed": "spindle_speed"})
    signals = [n.signal_of(i) for i in n.items.values()]
    assert n.signal_of(n.items["plc_exec"]) == "execution"
    assert n.signal_of(n.items["exec"]) == "exec"
    assert n.signal_of(n.items["plc_speed"]) == "spindle_speed"
    assert n.signal_of(n.items["S1"]) == "s1"
    named = [s for s in signals if s is not None and s != "alarm"]
    assert len(named) == len(set(named)), signals
