"""Query answers narrowed by a destination's `signals` filter (edge/egress/redaction.py
`redact_result`): each method's result loses what the stream it reads loses, so asking gives
a platform nothing its streams withhold."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aas_core3 import jsonization
from e2e import plant_yaml
from test_redaction import HIDE, part

from edge.config.loader import parse_plant
from edge.egress.redaction import NAMEPLATE_SOURCE, redact, redact_result
from edge.query.backend import device_identification
from models.aas import (
    DEVICE_SIGNAL_QUALIFIER,
    ProgramFootprint,
    build_environment,
    environment_json,
    verify_environment,
)
from models.machine_state import Availability, MachineState
from models.plant import PatternFilter
from models.sample import Sample

T = datetime(2026, 3, 2, 10, tzinfo=UTC)
STATE = {"availability": "available", "execution": "active", "controller_mode": "automatic",
         "emergency_stop": False, "alarms": ["1001"], "program": "O1000", "part_count": 11,
         "bad_part_count": 0, "ts": "2026-03-02T10:00:00.000Z", "link": "up"}


def test_state_answers_lose_what_state_records_lose_and_keep_the_link() -> None:
    answer = {"machines": {"m1": dict(STATE), "m2": dict(STATE)}}
    kept = copy.deepcopy(answer)
    mine = redact_result("state", answer, HIDE)
    expected = {k: v for k, v in STATE.items() if k not in ("program", "alarms", "part_count")}
    assert mine == {"machines": {"m1": expected, "m2": expected}}
    assert answer == kept, "the unfiltered answer is not touched"
    [record] = redact([{k: v for k, v in STATE.items() if k != "link"}], "state", HIDE)
    assert {**record, "link": "up"} == expected, "the same rule as the state stream"


def test_parts_answers_lose_denied_keys_and_the_unfiltered_envelope() -> None:
    answer = {"asset": "m1", "next": None, "parts": [
        {"part_seq": 7, "envelope": {"protected": "p", "payload": "x", "signature": "s"},
         "record": part()}]}
    [page] = redact_result("parts", answer, HIDE)["parts"]
    assert page == {"part_seq": 7, "envelope": None, "record": redact([part()], "part", HIDE)[0]}
    assert "program" not in page["record"] and "alarms" not in page["record"]
    assert redact_result("parts", answer, PatternFilter()) is answer


def test_capacity_and_booking_answers_leave_out_programs() -> None:
    offer = {"machine": "m1", "free_hours": 3.0, "ts": "t",
             "energy_per_part": {"7d": {"O1000": {"kwh_per_part": 0.1}}, "30d": None}}
    capacity = redact_result("capacity", {"machines": {"m1": offer}}, HIDE)
    assert capacity == {"machines": {"m1": {"machine": "m1", "free_hours": 3.0, "ts": "t"}}}
    row = {"booking": "b1", "machine": "m1", "state": "accepted", "program": "O1000",
           "process": None, "new": True}
    no_program = {k: v for k, v in row.items() if k != "program"}
    assert redact_result("bookings", {"bookings": [row]}, HIDE) == {"bookings": [no_program]}
    assert redact_result("reserve", row, HIDE) == no_program
    assert redact_result("release", row, HIDE) == no_program
    assert redact_result("oee", {"asset": "m1", "program": "x"}, HIDE) == {
        "asset": "m1", "program": "x"}, "the oee stream is not filtered by signal"


def test_aas_answers_lose_denied_signals_and_state_elements(tmp_path: Path) -> None:
    text = plant_yaml(tmp_path, [1502], 1883).replace(
        "  - id: m1\n", "  - id: m1\n    programs: {O1000: {ideal_cycle_time: 30}}\n")
    plant = parse_plant(text, "plant.yaml").plant
    machine = plant.machines[0]
    state = MachineState(asset="m1", availability=Availability.AVAILABLE, program="O1000",
                         part_count=11, alarms=("1001",), since=T)
    signals = {"program": ("O1000", None, T), "spindle_load": (12.5, "%", T)}
    carbon = [ProgramFootprint("O1000", 0.2, 0.5, 12, 7, T)]
    env = environment_json(build_environment(plant, machine, state=state, signals=signals,
                                             carbon=carbon, carbon_method="grid mix"))
    assert "O1000" in json.dumps(env["submodels"])
    mine = redact_result("aas", {"machines": {"m1": env}}, HIDE)["machines"]["m1"]

    def operational(e: dict[str, Any]) -> dict[str, list[str]]:
        [sm] = [s for s in e["submodels"] if s["idShort"] == "OperationalData"]
        return {c["idShort"]: [x["idShort"] for x in c["value"]]
                for c in sm["submodelElements"]}

    full, narrowed = operational(env), operational(mine)
    assert {"program", "spindle_load"} <= {n.lower() for n in full["Signals"]}
    assert [n.lower() for n in narrowed["Signals"]] == ["spindle_load"]
    assert {"Program", "PartCount", "Alarms"} <= set(full["State"])
    assert not {"Program", "PartCount", "Alarms"} & set(narrowed["State"])
    assert {"Availability", "Since"} <= set(narrowed["State"])
    assert "O1000" not in json.dumps(mine["submodels"]), "no footprint or comment names it"
    [kpi] = [s for s in mine["submodels"] if s["idShort"].startswith("ProcessVariables")]
    [pru] = [e for e in kpi["submodelElements"] if e["idShort"] == "PlannedRuntimePerItem"]
    assert [e["idShort"] for e in pru["value"]] == ["key", "currentValue"], "the value stays"
    [footprint] = [s for s in mine["submodels"] if s["idShort"] == "CarbonFootprint"]
    assert "submodelElements" not in footprint
    kept = redact_result("aas", {"machines": {"m1": env}}, PatternFilter(deny=["spindle*"]))
    assert "O1000" in json.dumps(kept), "a filter that denies no program keeps them"
    only = redact_result("aas", {"machines": {"m1": env}},
                         PatternFilter(deny=["program", "spindle_load"]))["machines"]["m1"]
    assert "Signals" not in operational(only), "an emptied collection is left out, not empty"
    for narrowed_env in (mine, only):  # still a valid environment
        assert verify_environment(jsonization.environment_from_jsonable(narrowed_env)) == []


def test_aas_answers_lose_nameplate_elements_read_from_denied_signals(tmp_path: Path) -> None:
    """The device fills what the YAML's nameplate leaves out; an element it filled from a
    signal the destination denies is left out there. The YAML's own values stay."""
    text = plant_yaml(tmp_path, [1502], 1883).replace(
        "  - id: m1\n", "  - id: m1\n    nameplate: {manufacturer: ACME}\n")
    plant = parse_plant(text, "plant.yaml").plant
    last = {name: Sample("m1", name, value, None, T) for name, value in (
        ("serial_number", "SN-4711"), ("manufacturer", "Retrofit Inc"),
        ("identification_Model", "X-5"), ("identification_HardwareRevision", "HW-2"),
        ("spindle_load", 12.5))}
    env = environment_json(build_environment(
        plant, plant.machines[0], device_identification=device_identification(last)))

    def nameplate(e: dict[str, Any]) -> dict[str, Any]:
        [sm] = [s for s in e["submodels"] if s["idShort"] == "Nameplate"]
        return {x["idShort"]: x.get("value") for x in sm["submodelElements"]}

    full = nameplate(env)
    assert full["SerialNumber"] == "SN-4711" and full["HardwareVersion"] == "HW-2"
    assert full["ManufacturerProductType"] == "X-5"
    assert "ACME" in json.dumps(full["ManufacturerName"]), "the YAML wins"
    denied = PatternFilter(deny=["serial_number", "identification_*", "manufacturer"])
    mine = redact_result("aas", {"machines": {"m1": env}}, denied)["machines"]["m1"]
    narrowed = nameplate(mine)
    assert not {"SerialNumber", "HardwareVersion", "ManufacturerProductType",
                "ManufacturerProductDesignation"} & set(narrowed), narrowed
    assert "ACME" in json.dumps(narrowed["ManufacturerName"]), "the plant's declaration stays"
    for value in ("SN-4711", "X-5", "HW-2", "Retrofit"):
        assert value not in json.dumps(mine), value
    assert nameplate(redact_result("aas", {"machines": {"m1": env}},
                                   PatternFilter(deny=["spindle*"]))["machines"]["m1"]) == full
    assert verify_environment(jsonization.environment_from_jsonable(mine)) == []
    assert NAMEPLATE_SOURCE == DEVICE_SIGNAL_QUALIFIER
