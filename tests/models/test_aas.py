"""AAS V3 environments: valid per aas-core3.0 for every demo machine, template ids, rules."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aas_core3 import jsonization
from aas_core3 import types as aas
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.loader import load_plant
from edge.kpi import oee as oee_module
from edge.kpi.oee import OeeEngine, OeeResult
from models import aas as twin
from models.aas import (
    KpiFigures,
    SignalValue,
    aas_ids,
    build_environment,
    build_plant_environment,
    calendar_ics,
    environment_json,
    resolve_nameplate,
    verify_environment,
)
from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import Machine, Plant, ShiftCalendar
from models.shift_calendar import planned_intervals, subtract_intervals

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo-plant.yaml"
T0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # a Monday, 06:00 in Berlin
ISO = "http://www.w3id.org/hsu-aut/ISO22400-2#"


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(DEMO).plant


def machine_ids() -> list[str]:
    return [m.id for m in load_plant(DEMO).plant.machines]


def a_state(asset: str) -> MachineState:
    return MachineState(
        asset=asset,
        availability=Availability.AVAILABLE,
        execution=Execution.ACTIVE,
        controller_mode=ControllerMode.AUTOMATIC,
        alarms=("E1042", "bad\x00byte"),
        program="O1000",
        part_count=4_000_000_000,
        bad_part_count=3,
        since=T0,
    )


def a_result(plant: Plant, machine: Machine) -> OeeResult:
    """A real window of the OEE engine: 1 h running, 1 h feed hold, 1 h MDI setup, waiting."""
    ct = machine.cycle_times  # wall seconds, as the KPI service passes them
    eng = OeeEngine(machine.id, plant.shifts, ct.machine, dict(ct.programs))
    h = timedelta(hours=1)
    eng.on_state(T0, Execution.ACTIVE, True, "O1000", False, ControllerMode.AUTOMATIC)
    eng.on_counts(T0, 1000, 10)
    eng.on_state(T0 + h, Execution.FEED_HOLD, True, "O1000")
    eng.on_counts(T0 + h, 1100, 12)
    eng.on_state(T0 + 2 * h, Execution.READY, True, None, False, ControllerMode.MDI)
    eng.on_state(T0 + 3 * h, Execution.READY, True, None, True)
    eng.on_state(T0 + 3.5 * h, Execution.READY, True, None)
    return eng.window(T0, T0 + 4 * h, now=T0 + 4 * h)


SIGNALS: dict[str, SignalValue] = {
    "spindle_speed": (1200.5, "1/min", T0),
    "door closed": (True, None, None),
    "1st-temp": (21, "Cel", T0.replace(tzinfo=None)),
    "1st_temp": (22, "Cel", None),
    "nan_value": (float("nan"), None, None),
    "huge": (2**70, None, None),
    "program": ("O1000", "", T0),
    "missing": (None, "mm", T0),
    "control": ("\x01", None, None),
}


def walk(env: aas.Environment) -> Iterator[aas.Class]:
    yield env
    yield from env.descend()


def by_id_short(elements: list[Any] | None) -> dict[str, Any]:
    return {e.id_short: e for e in elements or [] if e.id_short}


def submodel(env: aas.Environment, id_short: str) -> aas.Submodel:
    return next(sm for sm in env.submodels or [] if sm.id_short == id_short)


def semantic(element: aas.HasSemantics) -> str:
    assert element.semantic_id is not None
    return element.semantic_id.keys[0].value


# -- validity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("machine_id", machine_ids())
@pytest.mark.parametrize("live", [False, True], ids=["yaml-only", "live"])
def test_every_demo_machine_verifies(plant: Plant, machine_id: str, live: bool) -> None:
    m = plant.machine(machine_id)
    kwargs: dict[str, Any] = {}
    if live:
        kwargs = {
            "state": a_state(m.id),
            "signals": SIGNALS,
            "oee": a_result(plant, m),
            "device_identification": {"FirmwareVersion": "V1.2", "Model": "x"},
        }
    env = build_environment(plant, m, **kwargs)
    assert verify_environment(env) == []
    json.dumps(environment_json(env))  # plain JSON


def test_plant_environment_verifies_and_shares_the_calendar(plant: Plant) -> None:
    states = {m.id: a_state(m.id) for m in plant.machines}
    results = {m.id: a_result(plant, m) for m in plant.machines}
    env = build_plant_environment(plant, states=states, signals={"mill-01": SIGNALS}, oee=results)
    assert verify_environment(env) == []
    shells = env.asset_administration_shells or []
    assert len(shells) == len(plant.machines)
    ids = [sm.id for sm in env.submodels or []] + [s.id for s in shells]
    assert len(ids) == len(set(ids)) == 4 * len(plant.machines) + 1  # shell + 3 each, 1 calendar
    calendars = [sm for sm in env.submodels or [] if sm.id_short == "ProductionCalendar"]
    assert [c.id for c in calendars] == ["urn:edge-gateway:plant-a:sm:production-calendar"]
    for shell in shells:
        refs = {r.keys[0].value for r in shell.submodels or []}
        assert calendars[0].id in refs and len(refs) == 4


def test_json_round_trip_is_equal(plant: Plant) -> None:
    m = plant.machines[0]
    env = build_environment(plant, m, state=a_state(m.id), signals=SIGNALS, oee=a_result(plant, m))
    data = environment_json(env)
    back = jsonization.environment_from_jsonable(json.loads(json.dumps(data)))
    assert environment_json(back) == data
    assert verify_environment(back) == []


def test_invalid_environment_is_reported() -> None:
    env = aas.Environment(submodels=[aas.Submodel("urn:x", id_short="1 bad")])
    errors = verify_environment(env)
    assert errors and "id_short" in errors[0].lower().replace("idshort", "id_short")


def test_no_empty_values_anywhere(plant: Plant) -> None:
    m = plant.machines[0]
    sparse = MachineState(asset=m.id)  # unavailable, nothing else known
    sparse_oee = a_result(plant, m)
    env = build_environment(plant, m, state=sparse, signals=SIGNALS, oee=sparse_oee)
    for node in walk(env):
        if isinstance(node, aas.Property):
            assert node.value, node.id_short
        if isinstance(node, aas.MultiLanguageProperty):
            assert node.value and all(s.text for s in node.value)
        if isinstance(node, aas.SubmodelElementCollection | aas.SubmodelElementList):
            assert node.value
    state = by_id_short(
        by_id_short(submodel(env, "OperationalData").submodel_elements)["State"].value
    )
    assert set(state) == {"Availability", "EmergencyStop"}
    assert state["Availability"].value == "unavailable"


def test_ratios_that_are_none_are_left_out(plant: Plant) -> None:
    m = plant.machines[1]
    idle = OeeEngine(m.id, plant.shifts, None, {})  # no PRU, nothing happened
    idle.on_state(T0, Execution.READY, True, None)
    result = idle.window(T0, T0 + timedelta(hours=1), now=T0 + timedelta(hours=1))
    assert result.effectiveness is None and result.quality is None
    env = build_environment(plant, m.model_copy(update={"ideal_cycle_time": None}), oee=result)
    assert verify_environment(env) == []
    kpis = by_id_short(
        by_id_short(submodel(env, "OperationalData").submodel_elements)["Kpis"].value
    )
    assert set(kpis) == {
        "CalculativeStartDate",
        "CalculativeEndDate",
        "Availability",
        "OverallEquipmentEffectiveness",
    }
    assert kpis["OverallEquipmentEffectiveness"].value == "0.0"
    pv = by_id_short(
        submodel(env, "ProcessVariablesForManufacturingKPICalculation").submodel_elements
    )
    assert "PlannedRuntimePerItem" not in pv and "ProducedQuantity" in pv


# -- ids and semantic ids ---------------------------------------------------------------------


def test_ids_are_stable_urns(plant: Plant) -> None:
    m = plant.machine("mill-01")
    ids = aas_ids(plant, m)
    assert ids.shell == "urn:edge-gateway:plant-a:mill-01:aas"
    assert ids.nameplate == "urn:edge-gateway:plant-a:mill-01:sm:nameplate"
    assert ids.kpi == "urn:edge-gateway:plant-a:mill-01:sm:kpi"
    assert ids.operational == "urn:edge-gateway:plant-a:mill-01:sm:operational"
    assert ids.global_asset_id == "urn:edge-gateway:plant-a:mill-01"
    env = build_environment(plant, m)
    for node in walk(env):
        if isinstance(node, aas.Identifiable):
            assert re.fullmatch(r"urn:edge-gateway:[a-z0-9_:-]+", node.id), node.id
    shell = (env.asset_administration_shells or [])[0]
    assert shell.id_short == "mill_01"
    assert shell.asset_information.asset_kind == aas.AssetKind.INSTANCE
    assert build_environment(plant, m) is not env
    assert environment_json(build_environment(plant, m)) == environment_json(env)  # stable


def test_global_asset_id_from_yaml(plant: Plant) -> None:
    gid = "https://dmgmori.example/asset/SIM-1001"
    m = plant.machines[0]
    m = m.model_copy(update={"nameplate": m.nameplate.model_copy(update={"global_asset_id": gid})})
    env = build_environment(plant, m)
    assert (env.asset_administration_shells or [])[0].asset_information.global_asset_id == gid
    assert resolve_nameplate(plant, m)["URIOfTheProduct"] == gid


def test_nameplate_template_ids(plant: Plant) -> None:
    env = build_environment(plant, plant.machine("mill-01"))
    sm = submodel(env, "Nameplate")
    assert semantic(sm) == "https://admin-shell.io/idta/nameplate/3/0/Nameplate"
    assert sm.kind == aas.ModellingKind.INSTANCE
    els = by_id_short(sm.submodel_elements)
    assert {k: semantic(v) for k, v in els.items()} == {
        "URIOfTheProduct": "0112/2///61987#ABN590#002",
        "ManufacturerName": "0112/2///61987#ABA565#009",
        "ManufacturerProductDesignation": "0112/2///61987#ABA567#009",
        "ManufacturerProductType": "0112/2///61987#ABA300#008",
        "SerialNumber": "0112/2///61987#ABA951#009",
        "YearOfConstruction": "0112/2///61987#ABP000#002",
    }
    name = els["ManufacturerName"]
    assert isinstance(name, aas.MultiLanguageProperty) and name.value is not None
    assert [(s.language, s.text) for s in name.value] == [("en", "DMG MORI")]
    assert els["SerialNumber"].value == "SIM-1001"
    assert els["YearOfConstruction"].value == "2021"
    supplemental = els["ManufacturerName"].supplemental_semantic_ids
    assert supplemental is not None and supplemental[0].keys[0].value == "0173-1#02-AAO677#004"


def test_kpi_template_ids_and_values(plant: Plant) -> None:
    m = plant.machine("mill-01")
    result = a_result(plant, m)
    env = build_environment(plant, m, state=a_state(m.id), oee=result)
    sm = submodel(env, "ProcessVariablesForManufacturingKPICalculation")
    assert semantic(sm) == (
        "https://admin-shell.io/idta/SubmodelTemplate/"
        "ProcessVariablesForManufacturingKPICalculation/1/0"
    )
    pv = by_id_short(sm.submodel_elements)
    concept = {k: semantic(v).removeprefix(ISO) for k, v in pv.items()}
    assert concept == {
        "PlannedBusyTime": "PlannedBusyTime",
        "ActualProductionTime": "ActualProductionTime",
        "ActualUnitSetupTime": "ActualSetupTime",
        "ActualUnitProcessingTime": "ActualUnitProcessingTime",
        "ActualUnitDelayTime": "ActualUnitDelayTime",
        "ActualUnitBusyTime": "ActualUnitBusyTime",
        "ActualUnitDownTime": "ActualUnitDownTime",
        "ProducedQuantity": "ProducedQuantity",
        "GoodQuantity": "GoodQuantity",
        "ScrapQuantity": "ScrapQuantity",
        "PlannedRuntimePerItem": "PlannedRuntimePerUnit",
    }

    def current(name: str) -> aas.Property:
        parts = by_id_short(pv[name].value)
        assert semantic(parts["key"]).endswith("/key/1/0")
        assert semantic(parts["comment"]).endswith("/comment/1/0")
        prop = parts["currentValue"]
        assert semantic(prop).endswith("/currentValue/1/0")
        assert isinstance(prop, aas.Property)
        return prop

    def seconds(name: str) -> float:
        prop = current(name)
        assert prop.value_type == aas.DataTypeDefXSD.DURATION
        match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", prop.value or "")
        assert match, prop.value
        return float(match[1])

    # 05:00-09:00 UTC = 06:00-10:00 Berlin; the 09:00-09:15 break is planned downtime.
    assert seconds("PlannedBusyTime") == result.pbt == 4 * 3600 - 900
    assert seconds("ActualProductionTime") == result.apt == 3600
    assert seconds("ActualUnitSetupTime") == 3600
    assert seconds("ActualUnitDelayTime") == 3600 + 1800 - 900  # feed hold + alarm - break
    assert seconds("ActualUnitBusyTime") + seconds("ActualUnitDownTime") == result.pbt
    assert seconds("ActualUnitProcessingTime") == 7200
    assert seconds("PlannedRuntimePerItem") == 30 / 20  # program O1000, simulated 20x fast
    assert current("ProducedQuantity").value == "100"
    assert current("ProducedQuantity").value_type == aas.DataTypeDefXSD.DECIMAL
    assert current("GoodQuantity").value == "98"
    assert current("ScrapQuantity").value == "2"
    key = by_id_short(pv["ActualUnitDownTime"].value)["key"]
    assert key.value == "ADOT"

    kpis = by_id_short(
        by_id_short(submodel(env, "OperationalData").submodel_elements)["Kpis"].value
    )
    assert {k: semantic(v) for k, v in kpis.items()} == {k: ISO + k for k in kpis}
    assert float(kpis["Availability"].value) == result.availability
    assert float(kpis["OverallEquipmentEffectiveness"].value) == result.oee
    assert kpis["CalculativeStartDate"].value == "2026-11-23T05:00:00Z"


def test_pru_of_the_running_program(plant: Plant) -> None:
    m = plant.machine("mill-01")  # machine 30 s, O2000 45 s, simulated at time_scale 20
    state = a_state(m.id).with_changes(program="O2000")
    real = m.model_copy(update={"simulate": False})  # the same YAML on a real machine

    def pru(machine: Machine) -> tuple[str | None, str]:
        pv = by_id_short(
            submodel(
                build_environment(plant, machine, state=state),
                "ProcessVariablesForManufacturingKPICalculation",
            ).submodel_elements
        )
        parts = by_id_short(pv["PlannedRuntimePerItem"].value)
        comment = parts["comment"]
        assert isinstance(comment, aas.MultiLanguageProperty) and comment.value
        return parts["currentValue"].value, comment.value[0].text

    assert pru(real) == ("PT45S", "Ideal cycle time of program O2000 from the plant "
                                  "configuration")
    # like APT beside it, PRU is in wall seconds: the simulator makes a part 20x faster
    value, comment = pru(m)
    assert value == "PT2.25S" and "time_scale 20" in comment


def test_downtime_reasons_match_the_engine() -> None:
    assert oee_module.SETUP == twin.SETUP_REASON
    assert (oee_module.ALARM, oee_module.FEED_HOLD) == twin.DELAY_REASONS
    assert set(twin.DELAY_REASONS) | {twin.SETUP_REASON} <= set(oee_module.DOWNTIME_REASONS)


def test_oee_result_is_kpi_figures(plant: Plant) -> None:
    figures: KpiFigures = a_result(plant, plant.machines[0])  # checked by mypy, structurally
    assert figures.pbt > 0


# -- operational data -------------------------------------------------------------------------


def test_state_and_signals(plant: Plant) -> None:
    m = plant.machines[0]
    env = build_environment(plant, m, state=a_state(m.id), signals=SIGNALS)
    op = submodel(env, "OperationalData")
    assert semantic(op) == "urn:edge-gateway:semantics:OperationalData:1:0"
    parts = by_id_short(op.submodel_elements)
    state = by_id_short(parts["State"].value)
    assert state["Execution"].value == "active"
    assert state["ControllerMode"].value == "automatic"
    assert state["EmergencyStop"].value == "false"
    assert state["PartCount"].value == "4000000000"
    assert state["Since"].value == "2026-11-23T05:00:00Z"
    assert [a.value for a in state["Alarms"].value] == ["E1042"]  # control byte dropped
    assert semantic(state["Execution"]).endswith("OperationalData:1:0#Execution")

    signals = by_id_short(parts["Signals"].value)
    assert set(signals) == {
        "spindle_speed",
        "door_closed",
        "S_1st_temp",
        "S_1st_temp_2",
        "nan_value",
        "huge",
        "program",
    }
    speed = by_id_short(signals["spindle_speed"].value)
    assert speed["value"].value == "1200.5"
    assert speed["value"].value_type == aas.DataTypeDefXSD.DOUBLE
    assert speed["unit"].value == "1/min"
    assert speed["timestamp"].value == "2026-11-23T05:00:00Z"
    assert signals["door_closed"].display_name[0].text == "door closed"
    assert by_id_short(signals["door_closed"].value)["value"].value == "true"
    assert by_id_short(signals["nan_value"].value)["value"].value == "NaN"
    assert by_id_short(signals["huge"].value)["value"].value_type == aas.DataTypeDefXSD.INTEGER
    assert set(by_id_short(signals["program"].value)) == {"value", "timestamp"}  # "" unit


# -- identification -----------------------------------------------------------------------------


def test_device_fills_gaps_and_yaml_wins(plant: Plant) -> None:
    m = plant.machine("mill-02")  # YAML: Haas, VF-2, SIM-3001, no year
    device = {
        "serialNumber": "1234567",  # MTConnect spelling; YAML has one -> YAML wins
        "manufacturer": "Haas Automation",  # YAML wins
        "year_of_construction": "2019",  # gap -> device
        "SoftwareRevision": "100.21.000.1037",  # OPC UA DI alias
        "FIRMWARE-VERSION": "M21.05",
        "DateOfManufacture": "not a date",  # invalid -> dropped
        "ProductInstanceUri": "https://haas.example/m 1",  # not an anyURI -> fallback
        "spindle_hours": "1200",  # unknown key: ignored
    }
    values = resolve_nameplate(plant, m, device)
    assert values["SerialNumber"] == "SIM-3001"
    assert values["ManufacturerName"] == "Haas"
    assert values["YearOfConstruction"] == "2019"
    assert values["SoftwareVersion"] == "100.21.000.1037"
    assert values["FirmwareVersion"] == "M21.05"
    assert "DateOfManufacture" not in values
    assert values["URIOfTheProduct"] == "urn:edge-gateway:plant-a:mill-02"
    env = build_environment(plant, m, device_identification=device)
    assert verify_environment(env) == []
    els = by_id_short(submodel(env, "Nameplate").submodel_elements)
    assert semantic(els["SoftwareVersion"]) == "0112/2///61987#ABA601#008"


def test_device_identification_for_an_empty_nameplate(plant: Plant) -> None:
    m = plant.machines[0].model_copy(
        update={
            "nameplate": plant.machines[0].nameplate.model_copy(
                update={
                    "manufacturer": None,
                    "model": None,
                    "serial_number": None,
                    "year_of_construction": None,
                }
            )
        }
    )
    assert resolve_nameplate(plant, m) == {"URIOfTheProduct": "urn:edge-gateway:plant-a:mill-01"}
    values = resolve_nameplate(
        plant, m, {"Model": "DMU 50", "SerialNumber": " 77 ", "DateOfManufacture": "2020-05-04"}
    )
    assert values["ManufacturerProductDesignation"] == values["ManufacturerProductType"] == "DMU 50"
    assert values["SerialNumber"] == "77"
    assert values["DateOfManufacture"] == "2020-05-04"
    assert set(twin.NAMEPLATE_KEYS) >= set(values)


# -- production calendar -----------------------------------------------------------------------


def _unfold(ics: str) -> list[str]:
    assert ics.endswith("\r\n") and "\n" not in ics.replace("\r\n", "")
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    return ics.replace("\r\n ", "").split("\r\n")


def _expand(ics: str, first: date, last: date) -> dict[str, list[tuple[datetime, datetime]]]:
    """A minimal weekly RRULE expander for what calendar_ics writes, independent of it."""
    days = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
    out: dict[str, list[tuple[datetime, datetime]]] = {"X_PRODUCTION_DAY": [], "X_BREAK": []}
    text = "\r\n".join(_unfold(ics))
    for block in re.findall(r"BEGIN:VEVENT\r\n(.*?)END:VEVENT", text, re.S):
        props = dict(line.split(":", 1) for line in block.split("\r\n") if line)
        category = props.get("CATEGORIES")
        if category not in out:
            continue
        start_key = next(k for k in props if k.startswith("DTSTART;TZID="))
        end_key = next(k for k in props if k.startswith("DTEND;TZID="))
        tz = ZoneInfo(start_key.split("=", 1)[1])
        s = datetime.strptime(props[start_key], "%Y%m%dT%H%M%S")
        e = datetime.strptime(props[end_key], "%Y%m%dT%H%M%S")
        byday = props["RRULE"].removeprefix("FREQ=WEEKLY;BYDAY=").split(",")
        excluded = {
            datetime.strptime(x, "%Y%m%dT%H%M%S")
            for k, v in props.items()
            if k.startswith("EXDATE")
            for x in v.split(",")
        }
        d = first - timedelta(days=1)
        while d <= last:
            occ = datetime.combine(d, s.time())
            if days[d.weekday()] in byday and occ >= s and occ not in excluded:
                out[category].append(
                    (
                        occ.replace(tzinfo=tz).astimezone(UTC),
                        (occ + (e - s)).replace(tzinfo=tz).astimezone(UTC),
                    )
                )
            d += timedelta(days=1)
    return out


OFFICE_HOURS = ShiftCalendar.model_validate(
    {
        "timezone": "Europe/Berlin",
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00",
             "days": ["mon", "tue", "wed", "thu", "fri"],
             "breaks": [{"start": "09:00", "end": "09:15"}, {"start": "12:00", "end": "12:30"}]},
            {"name": "late", "start": "14:00", "end": "22:00",
             "days": ["mon", "tue", "wed", "thu", "fri"],
             "breaks": [{"start": "18:00", "end": "18:30"}]},
        ],
        "holidays": ["2026-12-25", "2026-12-26", "2027-01-01"],
    }
)
"""Two weekday shifts and holidays (the demo plant runs round the clock without holidays)."""


@pytest.mark.parametrize(
    "calendar",
    [
        "demo",
        OFFICE_HOURS.model_dump(mode="json"),
        {
            "timezone": "America/New_York",
            "holidays": ["2026-03-09"],
            "shifts": [
                {
                    "name": "night",
                    "start": "22:00",
                    "end": "06:00",
                    "days": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
                    "breaks": [
                        {"start": "02:00", "end": "02:30"},
                        {"start": "23:00", "end": "23:15"},
                    ],
                }
            ],
        },
        {"timezone": "Asia/Shanghai", "holidays": ["2026-03-06"]},  # 24/7, no DST
    ],
    ids=["demo", "office-hours", "overnight-dst", "always"],
)
def test_calendar_ics_gives_the_planned_time(plant: Plant, calendar: Any) -> None:
    cal = plant.shifts if calendar == "demo" else ShiftCalendar.model_validate(calendar)
    first, last = (
        (date(2026, 12, 21), date(2027, 1, 3))
        if calendar == "demo" or "2026-12-25" in calendar.get("holidays", [])
        else (date(2026, 3, 2), date(2026, 3, 12))
    )
    lo = datetime.combine(first, datetime.min.time(), UTC)
    hi = datetime.combine(last, datetime.min.time(), UTC)
    events = _expand(calendar_ics("site", cal), first, last)
    planned = [
        (max(a, lo), min(b, hi))
        for a, b in subtract_intervals(events["X_PRODUCTION_DAY"], events["X_BREAK"])
        if b > lo and a < hi
    ]
    assert planned == planned_intervals(cal, lo, hi)


def test_calendar_ics_shape() -> None:
    ics = calendar_ics("plant-a", OFFICE_HOURS)
    lines = _unfold(ics)
    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"] and lines[-2:] == ["END:VCALENDAR", ""]
    assert "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU" in lines  # Berlin DST rules
    assert "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU" in lines
    assert "EXDATE;TZID=Europe/Berlin:20261225T060000,20270101T060000" in lines
    assert lines.count("BEGIN:VEVENT") == 2 + 3 + 3  # shifts, breaks, holidays
    assert len({line for line in lines if line.startswith("UID:")}) == 8
    assert calendar_ics("plant-a", OFFICE_HOURS) == ics  # deterministic


def test_production_calendar_submodel(plant: Plant) -> None:
    env = build_environment(plant, plant.machines[0])
    sm = submodel(env, "ProductionCalendar")
    assert semantic(sm) == "https://admin-shell.io/idta/SubmodelTemplate/ProductionCalendar/1/0"
    els = by_id_short(sm.submodel_elements)
    blob = els["calendar"]
    assert isinstance(blob, aas.Blob) and blob.content_type == "text/calendar"
    assert semantic(blob) == "https://admin-shell.io/idta/ProductionCalendar/calendar/1/0"
    assert blob.value == calendar_ics("plant-a", plant.shifts).encode()
    data = environment_json(env)
    cal_json = next(s for s in data["submodels"] if s["idShort"] == "ProductionCalendar")
    assert base64.b64decode(cal_json["submodelElements"][0]["value"]).startswith(b"BEGIN:VCAL")
    names = [
        by_id_short(v.value)["variableName"].value
        for v in els["specificationExtensionVariables"].value
    ]
    assert names == ["X_PRODUCTION_DAY", "X_BREAK"]


DEMO_PLANT = load_plant(DEMO).plant
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
)


@settings(max_examples=60, deadline=None)
@given(
    signals=st.dictionaries(
        st.text(), st.tuples(values, st.none() | st.text(), st.none() | st.datetimes())
    ),
    device=st.dictionaries(st.sampled_from([*twin.NAMEPLATE_KEYS, "model", "x"]), st.text()),
    alarms=st.lists(st.text(), max_size=3),
    program=st.none() | st.text(),
)
def test_anything_a_device_says_keeps_the_environment_valid(
    signals: dict[str, SignalValue],
    device: dict[str, str],
    alarms: list[str],
    program: str | None,
) -> None:
    plant = DEMO_PLANT
    m = plant.machines[0]
    state = MachineState(asset=m.id, alarms=tuple(alarms), program=program)
    env = build_environment(plant, m, state=state, signals=signals, device_identification=device)
    assert verify_environment(env) == []
