"""The vendored Sparkplug module is what protoc makes of the vendored .proto (`make proto`)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sparkplug_host import decode, value_of

from edge.egress.formats.sparkplug_node import SparkplugNode, readings
from edge.egress.formats.sparkplug_proto import sparkplug_b_pb2 as pb

PROTO_DIR = Path(__file__).resolve().parents[3] / "edge/egress/formats/sparkplug_proto"


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", str(PROTO_DIR / "sparkplug_b.proto")],
        check=True,
    )
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (PROTO_DIR / name).read_bytes(), (
            f"{name} is stale: run `make proto`")
    assert (PROTO_DIR / "LICENSE-EPL-2.0").read_text().startswith("Eclipse Public License - v 2.0")


def test_the_proto_is_tahus_file_verbatim() -> None:
    """The .proto is Eclipse Tahu's, byte for byte (NOTICE.md names the commit and sha256):
    an edit, even one protoc would compile to the same bytes on the wire, must be a
    deliberate re-vendoring that updates the notice."""
    notice = (PROTO_DIR / "NOTICE.md").read_text()
    recorded = re.search(r"sha256 \| `([0-9a-f]{64})`", notice)
    assert recorded is not None, "NOTICE.md lost its sha256 row"
    text = (PROTO_DIR / "sparkplug_b.proto").read_bytes()
    assert hashlib.sha256(text).hexdigest() == recorded.group(1)
    assert b"SPDX-License-Identifier: EPL-2.0" in text  # the upstream licence header is kept
    assert re.search(r"commit \| `[0-9a-f]{40}`", notice)


def test_replayed_data_is_flagged_historical_and_repeats_every_metric() -> None:
    node = SparkplugNode("g", "n", clock_ms=lambda: 1)
    node.will()
    node.birth()
    rec = {"signal": "s", "value": 1.0, "unit": None, "ts": "2026-11-22T10:00:00.000Z",
           "quality": "good"}
    body = {"asset": "m", "stream": "telemetry", "records": [rec]}
    assert [m.kind for m in node.feed(body)] == ["DBIRTH"]
    assert node.feed(body) == []  # unchanged: no DDATA
    (replay,) = node.feed(body, historical=True)
    metric = pb.Payload.FromString(replay.payload).metrics[0]
    assert replay.kind == "DDATA" and metric.is_historical and metric.double_value == 1.0
    # JCS writes 1250.0 as 1250: a whole reading must not change the datatype
    assert [m.kind for m in node.feed({**body, "records": [{**rec, "value": 1250}]})] == ["DDATA"]
    # a value of another type is a new metric datatype: the device is born again
    assert [m.kind for m in node.feed({**body, "records": [{**rec, "value": "x"}]})] == ["DBIRTH"]


def test_state_oee_and_capacity_become_device_metrics() -> None:
    oee = {"window": {"name": "early", "start": "2026-11-22T05:00:00.000Z", "closed": False},
           "availability": 0.9, "effectiveness": None, "quality": 1.0, "oee": 0.8,
           "counts": {"pq": 10, "gq": 9}, "ts": "2026-11-22T10:00:00.000Z"}
    names = set(readings("oee", oee))
    assert {"OEE/Availability", "OEE/OEE", "OEE/Window/Name", "OEE/GoodCount"} <= names
    state = {"availability": "available", "execution": "active", "alarms": ["E1"],
             "emergency_stop": False, "ts": "2026-11-22T10:00:00.000Z"}
    assert readings("state", state)["State/Alarms"][0] == "E1"
    capacity = readings("capacity", {"free_hours": 8.0, "free_slots": []})
    assert capacity["Capacity/FreeHours"][0] == 8.0


PART = {"part_seq": 7, "parts": 1, "program": "O1000", "start": "2026-11-22T09:58:12.500Z",
        "end": "2026-11-22T09:58:44.100Z", "cycle_time": 31.6, "ideal_cycle_time": 30.0,
        "verdict": "good", "partial": False, "energy_kwh": 0.0782, "co2e_kg": 0.0297,
        "states": {"active": 31.6}, "booking": None, "ts": "2026-11-22T09:58:44.100Z"}


def metrics_of(payload: bytes, names: dict[int, str] | None = None) -> dict[str, Any]:
    """name -> value of a DBIRTH (names given) or DDATA (names by alias), read by the test
    host's own decoder (tests/sparkplug_host.py), not by the module under test."""
    out = {}
    for m in decode(payload).metrics:
        name = m.name or (names or {})[m.alias]
        if names is not None and m.name:
            names[m.alias] = m.name
        out[name] = value_of(m)
    return out


def test_part_records_become_device_metrics() -> None:
    """Issue 15: the `part` stream in every destination format. A part is one DBIRTH or
    DDATA of its machine; `Part/Record` (the record as JSON text) changes with every part,
    so a host that keeps only what changed still receives each part whole."""
    node = SparkplugNode("g", "n", clock_ms=lambda: 1)
    node.will()
    node.birth()
    (birth,) = node.feed({"asset": "m", "stream": "part", "records": [PART]})
    names: dict[int, str] = {}
    born = metrics_of(birth.payload, names)
    assert birth.kind == "DBIRTH"
    assert born["Part/Seq"] == 7 and born["Part/Verdict"] == "good"
    assert born["Part/CycleTime"] == 31.6 and born["Part/IdealCycleTime"] == 30.0
    assert born["Part/EnergyKWh"] == 0.0782 and born["Part/CO2eKg"] == 0.0297
    assert born["Part/Start"] == 1795341492500 and born["Part/End"] == 1795341524100
    assert born["Part/Program"] == "O1000" and born["Part/Partial"] is False
    assert json.loads(born["Part/Record"]) == PART
    second = {**PART, "part_seq": 8, "cycle_time": 30.2, "energy_kwh": None, "co2e_kg": None}
    (data,) = node.feed({"asset": "m", "stream": "part", "records": [second]})
    sent = metrics_of(data.payload, names)
    assert data.kind == "DDATA" and "Part/Verdict" not in sent  # unchanged: by exception
    assert sent["Part/Seq"] == 8 and sent["Part/EnergyKWh"] is None
    assert json.loads(sent["Part/Record"]) == second
    # a destination whose signals filter denies `program` gets records without it: no metric
    hidden = {k: v for k, v in PART.items() if k != "program"}
    assert "Part/Program" not in readings("part", hidden)


def test_bookings_records_publish_nothing_on_sparkplug() -> None:
    """docs/sparkplug.md: bookings have no metrics there (platforms read them signed)."""
    node = SparkplugNode("g", "n", clock_ms=lambda: 1)
    node.will()
    node.birth()
    booking = {"id": "b-1", "machine": "m", "state": "accepted", "ts": "2026-11-22T10:00:00.000Z"}
    assert readings("bookings", booking) == {}
    assert node.feed({"asset": "m", "stream": "bookings", "records": [booking]}) == []
