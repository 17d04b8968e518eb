"""`profile: sinumerik` against the OPC UA simulator's SINUMERIK face, and its mapping rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from adapters.base import AdapterContext
from adapters.opcua import sinumerik
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.settings import OpcUaSettings
from edge.config.loader import load_plant
from models.errors import ConfigurationError
from models.machine_state import ControllerMode, Execution
from models.sample import Quality, Sample
from simulators.machine import MachineModel, ScriptEvent
from simulators.opcua_server import serve_opcua, sinumerik_program_path, start_for_gateway

DEMO = Path(__file__).resolve().parents[3] / "config" / "demo-plant.yaml"


def scripted() -> MachineModel:
    """Active on PART7 with 12 parts and an alarm raised before anyone subscribes."""
    return MachineModel.scripted("nc1", [
        ScriptEvent(at=0, execution=Execution.ACTIVE, controller_mode=ControllerMode.AUTOMATIC,
                    program="PART7", part_count=12, alarm_code=1016,
                    alarm_text="coolant low"),
    ], start=datetime.now(UTC) - timedelta(seconds=5))


def adapter(port: int, **conn: object) -> OpcUaAdapter:
    settings = OpcUaSettings.model_validate({"connection": {
        "endpoint": f"opc.tcp://127.0.0.1:{port}/", "profile": "sinumerik",
        "publishing_interval": 0.1, "timeout": 2.0, **conn}})
    return OpcUaAdapter(AdapterContext("nc1", 0.2, structlog.get_logger()), settings)


async def collect(a: OpcUaAdapter, want: Callable[[dict[str, Sample]], bool]) -> dict[str, Sample]:
    latest: dict[str, Sample] = {}
    async with asyncio.timeout(10):
        async for batch in a.stream():
            latest.update({s.signal: s for s in batch})
            if want(latest):
                return latest
    raise AssertionError(f"stream ended; got {latest}")


async def test_sinumerik_profile_maps_the_nc_variables(free_port: Callable[[], int]) -> None:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/"
    sim = await serve_opcua([(scripted(), url)], sinumerik=[url])
    try:
        a = adapter(port)
        assert a.signal_sources()["part_count"] == "(resolving)"
        await a.connect()
        try:
            got = await collect(a, lambda d: {"execution", "controller_mode", "program",
                                              "part_count", "spindle_speed", "alarm"} <= d.keys()
                                and d["alarm"].quality is Quality.GOOD)
        finally:
            await a.aclose()
    finally:
        await sim.aclose()
    assert got["execution"].value == "active"
    assert got["controller_mode"].value == "automatic"
    assert got["program"].value == "PART7.MPF"
    assert got["program_path"].value == "/_N_MPF_DIR/_N_PART7_MPF"
    assert got["part_count"].value == 12
    assert got["spindle_speed"].unit == "1/min"
    assert got["feed_override"].value == 100.0
    assert got["required_parts"].value == 0
    assert (got["alarm"].value, got["alarm_text"].value) == ("1016", "coolant low")
    assert set(a.discovered) == set(sinumerik.VARIABLES.values())
    assert a.describe()["alarms"] == "server"
    src = a.signal_sources()  # what the status page and `probe` show beside each value
    nc = "nsu=SinumerikVarProvider;s="
    assert src["execution"] == f"{nc}/Channel/State/progStatus + {nc}/Channel/State/feedRateIpoOvr"
    assert src["program"] == f"{nc}/Channel/ProgramInfo/selectedWorkPProg"
    assert src["part_count"] == f"{nc}/Channel/State/actParts"
    assert src["alarm"] == "events of i=2253 (server)"


async def test_documented_node_ids_work_as_plain_points(free_port: Callable[[], int]) -> None:
    """The simulator's NodeIds are the variable paths, as the Siemens manual describes."""
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/"
    sim = await serve_opcua([(scripted(), url)], sinumerik=[url])
    try:
        settings = OpcUaSettings.model_validate({
            "connection": {"endpoint": url, "publishing_interval": 0.1},
            "points": [{"name": "prog_status",
                        "node": "nsu=SinumerikVarProvider;s=/Channel/State/progStatus"},
                       {"name": "op_mode", "node": "/{SinumerikVarProvider}Sinumerik"
                        "/{SinumerikVarProvider}Bag/{SinumerikVarProvider}State"
                        "/{SinumerikVarProvider}opMode"}]})
        a = OpcUaAdapter(AdapterContext("nc1", 0.2, structlog.get_logger()), settings)
        await a.connect()
        try:
            got = await collect(a, lambda d: {"prog_status", "op_mode"} <= d.keys())
        finally:
            await a.aclose()
    finally:
        await sim.aclose()
    assert (got["prog_status"].value, got["op_mode"].value) == (3, 2)


async def test_a_server_without_the_namespace_is_a_configuration_error(
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    sim = await serve_opcua([(scripted(), f"opc.tcp://127.0.0.1:{port}/")])
    try:
        a = adapter(port)
        with pytest.raises(ConfigurationError, match="SinumerikVarProvider"):
            await a.connect()
        await a.aclose()
    finally:
        await sim.aclose()


@pytest.mark.parametrize(("inputs", "execution", "mode"), [
    ({"prog_status": 3, "op_mode": 2}, "active", "automatic"),
    ({"prog_status": 1, "feed_override": 0.0, "op_mode": 1}, "feed_hold", "mdi"),
    ({"prog_status": 1, "feed_override": 80.0, "op_mode": 0}, "interrupted", "manual"),
    ({"prog_status": 2}, "program_stopped", None),
    ({"prog_status": 4}, "wait", None),
    ({"prog_status": 5}, "ready", None),
    ({"prog_status": 9}, None, None),
])
def test_execution_and_mode(inputs: dict[str, object], execution: str | None,
                            mode: str | None) -> None:
    out = sinumerik.derive(inputs)
    assert out.get("execution", (None,))[0] == execution
    assert out.get("controller_mode", (None,))[0] == mode


@pytest.mark.parametrize(("path", "name"), [
    ("/_N_MPF_DIR/_N_PART1_MPF", "PART1.MPF"),
    ("/_N_WKS_DIR/_N_SHAFT_WPD/_N_MAIN_MPF", "MAIN.MPF"),
    ("//NC/WKS.DIR/SHAFT.WPD/MAIN.MPF", "MAIN.MPF"),
    ("MAIN", "MAIN"),
])
def test_program_names_as_operate_shows_them(path: str, name: str) -> None:
    assert sinumerik.program_name(path) == name


async def test_demo_plant_sinumerik_machine_needs_no_points(free_port: Callable[[], int]) -> None:
    """config/demo-plant.yaml's `profile: sinumerik` machine, served as `simulate` serves it."""
    loaded = load_plant(DEMO)
    (machine,) = [m for m in loaded.plant.machines
                  if m.adapter == "opcua" and m.connection.get("profile") == "sinumerik"]
    assert not machine.points
    settings = loaded.settings[machine.id]
    url = f"opc.tcp://127.0.0.1:{free_port()}/"
    settings = settings.model_copy(
        update={"connection": settings.connection.model_copy(update={"endpoint": url})})
    model = MachineModel.from_options(machine.id, {"seed": 8, "time_scale": 60})
    sim = await start_for_gateway([(machine.id, settings, model)])
    try:
        a = OpcUaAdapter(AdapterContext(machine.id, 0.5, structlog.get_logger()), settings)
        await a.connect()
        try:
            got = await collect(a, lambda d: {"execution", "controller_mode", "program",
                                              "part_count"} <= d.keys())
        finally:
            await a.aclose()
    finally:
        await sim.aclose()
    assert got["execution"].value in {e.value for e in Execution}
    assert got["controller_mode"].value in {m.value for m in ControllerMode}
    assert got["program"].value.endswith(".MPF")
    assert isinstance(got["part_count"].value, int)


def test_the_demo_sinumerik_programs_are_read_back_as_their_keys() -> None:
    """The demo's SINUMERIK rates each part by its program's ideal cycle time only if the name
    the adapter reads is a `programs:` key (it read `O2000.MPF` against a key `O2000` and
    rated every O2000 part at the machine's 30 s instead of 40 s)."""
    plant = load_plant(str(Path(__file__).parents[3] / "config" / "demo-plant.yaml")).plant
    profiled = [m for m in plant.machines
                if m.adapter == "opcua" and m.connection.get("profile") == "sinumerik"]
    assert profiled
    for machine in profiled:
        assert machine.programs
        for key in machine.programs:
            assert sinumerik.program_name(sinumerik_program_path(key)) == key
