"""`browse` against the demo's OPC UA simulator; `keys platform` output accepted by the
gateway's own loaders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from conftest import find_free_port
from e2e import ROOT, demo_plant_on_free_ports

from adapters.opcua.settings import OpcUaPoint
from edge.cli import main
from edge.commissioning.browse import (
    BrowseError,
    browse,
    point_lines,
    profile_advice,
    render,
    signal_name,
)
from edge.config.loader import LoadedPlant, load_plant, parse_plant
from edge.daemon.simulation import start_simulators
from edge.platform_kit.client import load_private_key
from edge.platform_kit.keys import make_platform_keys
from edge.query.handler import load_platform_keys
from edge.signing.jws import jwk_public


@pytest.fixture
async def opcua_machines(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The demo's OPC UA simulators by machine id: dmu-01 (OPC 40501), dmc-01 (SINUMERIK)."""
    loaded = load_plant(demo_plant_on_free_ports(tmp_path))
    only = [m for m in loaded.plant.machines if m.adapter == "opcua"]
    sub = LoadedPlant(loaded.plant.model_copy(update={"machines": only}), loaded.path,
                      loaded.settings)
    handles = await start_simulators(sub)
    try:
        yield {m.id: str(m.connection["endpoint"]) for m in only}
    finally:
        for h in handles:
            await h.aclose()


@pytest.fixture
def opcua_machine(opcua_machines: dict[str, str]) -> str:
    return opcua_machines["dmu-01"]


async def test_browse_shows_nsu_ids_types_and_the_profile(opcua_machine: str) -> None:
    tree = await browse(opcua_machine, None, depth=8, wait=10)
    text = render(tree)
    assert "nsu=urn:edge-gateway:simulator;s=dmu-01.SpindleSpeed" in text
    assert "ns=" not in text.replace("nsu=", "")  # never a bare namespace index
    assert "profile: machine_tool" in text and "Machines: dmu-01" in text
    lines = point_lines(tree)
    spindle = next(line for line in lines if "s=dmu-01.SpindleSpeed\"" in line)
    assert spindle.rstrip().endswith("# Double"), spindle
    # every printed line is valid YAML the adapter accepts, names unique
    points = [yaml.safe_load(line.split("   #")[0].strip()[2:]) for line in lines]
    names = [OpcUaPoint.model_validate(p).name for p in points]
    assert len(names) == len(set(names))


async def test_a_sinumerik_is_advised_profile_sinumerik(opcua_machines: dict[str, str]) -> None:
    """The demo's own dmc-01 (SINUMERIK) was advised `profile: machine_tool` with "Machines:
    none found": its server loads the Machinery/Machine Tools models with no machine in them,
    and browse knew no other profile."""
    advice = profile_advice(await browse(opcua_machines["dmc-01"], None, depth=1, wait=10))
    assert "set `profile: sinumerik`" in advice, advice
    assert "machine_tool" not in advice, advice


async def test_browse_from_a_path(opcua_machine: str) -> None:
    tree = await browse(
        opcua_machine, "nsu=urn:edge-gateway:simulator;s=dmu-01.Identification", 2, 10
    )
    assert tree.root.name == "Identification"
    assert {c.name for c in tree.root.children} >= {"Manufacturer", "SerialNumber"}


async def test_a_start_that_is_no_node_id_says_what_to_write(opcua_machine: str) -> None:
    """`--path garbage` printed asyncua's tuple `('Error parsing string garbage',
    ValueError(...))`."""
    with pytest.raises(BrowseError) as info:
        await browse(opcua_machine, "garbage", 1, 10)
    assert str(info.value) == (
        "'garbage' is not a node id: write i=85, nsu=URI;s=NAME (ns=2;s=NAME) or a /Browse/Path")


async def test_browse_of_nothing_is_a_clear_error() -> None:
    with pytest.raises(BrowseError, match="cannot connect"):
        await browse(f"opc.tcp://127.0.0.1:{find_free_port()}/", None, 2, 2)


def test_signal_names() -> None:
    assert signal_name("SpindleSpeed") == "spindle_speed"
    assert signal_name("OPCUAVersion") == "opcua_version"
    assert signal_name("Feed Override %") == "feed_override"


def test_platform_keys_block_is_accepted_by_the_gateway(tmp_path: Path) -> None:
    made = make_platform_keys(tmp_path / "keys", "acme")
    assert (made.private_key.stat().st_mode & 0o777) == 0o600
    demo = (ROOT / "config" / "demo-plant.yaml").read_text()
    loaded = parse_plant(demo + "\n" + made.yaml_block, str(ROOT / "config" / "x.yaml"))
    keys = load_platform_keys(loaded.plant.platforms)
    kid = jwk_public(load_private_key(made.private_key))["kid"]
    assert kid == made.kid and kid in keys
    with pytest.raises(FileExistsError):
        make_platform_keys(tmp_path / "keys", "acme")  # never overwrites a key in use


@pytest.mark.usefixtures("cli_logging_restored")
@pytest.mark.parametrize(
    "start",
    ["garbage", "nsu=urn:edge-gateway:simulator;s=nope", "/Nope", "nsu=urn:nowhere;s=x"],
)
async def test_a_start_the_server_does_not_have_is_a_usage_error(
    opcua_machine: str, start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 as the other commands' input errors (was 1, as for a server that is down)."""
    rc = await asyncio.to_thread(main, ["browse", opcua_machine, "--path", start, "--depth", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("browse: ") and "Traceback" not in err
