"""The machinery and machine_tool profiles against the OPC Foundation's own NodeSets.

Our simulator builds the Machinery / Machine Tools types in code; these tests prove the
adapter's discovery also works on the published models, where vendors put nodes in their
own namespaces (MachineryItemState of the example lives in the example's namespace) and
reach Identification through HasAddIn. DI, Machinery and the Machinery examples (vendored
in nodesets/, see its README for provenance and licence) are loaded into an asyncua server,
which then holds the ENGEL Viper 6 of the example NodeSet as ExampleMachine01.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import structlog
from asyncua import Server, ua

from adapters.base import AdapterContext
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.settings import OpcUaSettings
from edge.commissioning.browse import browse, profile_advice
from models.sample import Sample

NODESETS = Path(__file__).resolve().parent / "nodesets"
FILES = ("Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.Machinery.NodeSet2.xml",
         "Opc.Ua.Machinery.Examples.NodeSet2.xml")
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
EXAMPLE = "http://opcfoundation.org/UA/Machinery_Example/"


@pytest.fixture
async def example_server(free_port: Callable[[], int]) -> AsyncIterator[tuple[Server, int]]:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    for f in FILES:  # auto_load_definitions=False: asyncua issue #1869 (nodesets/README.md)
        await server.import_xml(str(NODESETS / f), auto_load_definitions=False)
    await server.load_data_type_definitions()
    await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


def adapter(port: int, profile: str) -> OpcUaAdapter:
    settings = OpcUaSettings.model_validate({"connection": {
        "endpoint": f"opc.tcp://127.0.0.1:{port}/", "profile": profile,
        "machine": "ExampleMachine01", "publishing_interval": 0.1}})
    return OpcUaAdapter(AdapterContext("engel", 1.0, structlog.get_logger()), settings)


async def collect(a: OpcUaAdapter, latest: dict[str, Sample],
                  want: Callable[[dict[str, Sample]], bool]) -> None:
    async with asyncio.timeout(10):
        async for batch in a.stream():
            latest.update({s.signal: s for s in batch})
            if want(latest):
                return


async def item_state(server: Server) -> ua.NodeId:
    """ExampleMachine01's MachineryItemState/CurrentState (the example leaves it empty)."""
    ns_m = await server.get_namespace_index(MACHINERY)
    ns_e = await server.get_namespace_index(EXAMPLE)
    node = await server.nodes.objects.get_child([
        f"{ns_m}:Machines", f"{ns_e}:ExampleMachine01", f"{ns_m}:MachineryBuildingBlocks",
        f"{ns_e}:MachineryItemState", "0:CurrentState"])
    nodeid: ua.NodeId = node.nodeid
    return nodeid


async def test_machinery_profile_yields_identification_and_state(
    example_server: tuple[Server, int],
) -> None:
    server, port = example_server
    state = await item_state(server)
    await server.write_attribute_value(
        state, ua.DataValue(ua.Variant(ua.LocalizedText("Executing", "en"))))
    a = adapter(port, "machinery")
    await a.connect()
    latest: dict[str, Sample] = {}
    try:
        await collect(a, latest, lambda d: {"identification_serial_number", "execution"}
                      <= d.keys())
        # the machine stops: MachineryItemState follows, and so does the normalized state
        await server.write_attribute_value(
            state, ua.DataValue(ua.Variant(ua.LocalizedText("NotExecuting", "en"))))
        await collect(a, latest, lambda d: d["execution"].value == "ready")
    finally:
        await a.aclose()
    assert a.machine_name == "ExampleMachine01"
    assert latest["identification_manufacturer"].value == "ENGEL AUSTRIA GMBH"
    assert latest["identification_model"].value == "Viper 6"
    assert a.identification["ProductInstanceUri"] == "http://www.engelglobal.com/Viper06/235223"
    assert len(a.identification) >= 10
    assert latest["availability"].value == "available"
    # Machinery building blocks only: found by type definition in the example's namespace
    assert set(a.discovered) <= {"item_state", "operation_mode_sm"}
    assert "item_state" in a.discovered
    assert a.describe()["profile"] == "machinery"


async def test_machine_tool_profile_includes_machinery(
    example_server: tuple[Server, int],
) -> None:
    _server, port = example_server
    a = adapter(port, "machine_tool")
    await a.connect()
    latest: dict[str, Sample] = {}
    try:
        await collect(a, latest, lambda d: "identification_serial_number" in d)
    finally:
        await a.aclose()
    assert a.machine_name == "ExampleMachine01"
    assert latest["identification_model"].value == "Viper 6"
    assert {"item_state", "operation_mode_sm"} <= set(a.discovered)


async def test_browse_advises_profile_machinery(example_server: tuple[Server, int]) -> None:
    """A Machinery machine without Machine Tools was advised `profile: none` (browse
    predated the machinery profile)."""
    _, port = example_server
    advice = profile_advice(await browse(f"opc.tcp://127.0.0.1:{port}/", None, 1, 10))
    assert "set `profile: machinery`" in advice, advice
    assert "Machines: ExampleMachine01" in advice, advice
