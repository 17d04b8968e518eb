"""The machine_tool profile against the real OPC Foundation NodeSets, not our own simulator.

Our simulator builds the Machinery / Machine Tools types in code; this test proves the
adapter's discovery also works on the published models, where vendors put nodes in their
own namespaces (MachineryItemState of the example lives in the example's namespace) and
reach Identification through HasAddIn. It loads DI, Machinery and the Machinery examples
into an asyncua server and expects the ENGEL Viper 6 of the example NodeSet.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from pathlib import Path

import structlog
from asyncua import Server

from adapters.base import AdapterContext
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.settings import OpcUaSettings
from models.sample import Sample

# vendored with licence and provenance: tests/fixtures/opcua-nodesets/README.md
NODESETS = Path(__file__).resolve().parents[2] / "fixtures" / "opcua-nodesets"
FILES = ("Opc.Ua.Di.NodeSet2.xml.gz", "Opc.Ua.Machinery.NodeSet2.xml.gz",
         "Opc.Ua.Machinery.Examples.NodeSet2.xml.gz")


async def test_finds_engel_example_machine_and_maps_identification(
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    for f in FILES:  # auto_load_definitions=False: asyncua issue #1869 (material README)
        xml = gzip.decompress((NODESETS / f).read_bytes()).decode("utf-8")
        await server.import_xml(xmlstring=xml, auto_load_definitions=False)
    await server.load_data_type_definitions()
    await server.start()
    try:
        settings = OpcUaSettings.model_validate({"connection": {
            "endpoint": f"opc.tcp://127.0.0.1:{port}/", "profile": "machine_tool",
            "machine": "ExampleMachine01", "publishing_interval": 0.1}})
        a = OpcUaAdapter(AdapterContext("engel", 1.0, structlog.get_logger()), settings)
        await a.connect()
        latest: dict[str, Sample] = {}
        try:
            async with asyncio.timeout(10):
                async for batch in a.stream():
                    latest.update({s.signal: s for s in batch})
                    if "identification_serial_number" in latest:
                        break
        finally:
            await a.aclose()
    finally:
        await server.stop()
    assert a.machine_name == "ExampleMachine01"
    assert latest["identification_manufacturer"].value == "ENGEL AUSTRIA GMBH"
    assert latest["identification_model"].value == "Viper 6"
    assert a.identification["ProductInstanceUri"] == "http://www.engelglobal.com/Viper06/235223"
    assert "YearOfConstruction" in a.identification
    # found by type definition although it sits in the example's own namespace
    assert {"item_state", "operation_mode_sm"} <= set(a.discovered)
