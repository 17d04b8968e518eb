"""`edge-gateway probe` against the demo plant's own simulators, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from e2e import ROOT, demo_plant_on_free_ports

from edge.cli import main
from edge.commissioning.probe import implausible, probe, render
from edge.config.loader import LoadedPlant, load_plant
from edge.daemon.simulation import start_simulators


@pytest.fixture(autouse=True)
def _logging_back_to_defaults() -> Iterator[None]:
    """main() points structlog at this test's captured stderr, closed after the test."""
    yield
    structlog.reset_defaults()


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[LoadedPlant]:
    loaded = load_plant(demo_plant_on_free_ports(tmp_path))
    handles = await start_simulators(loaded)
    try:
        yield loaded
    finally:
        for h in handles:
            await h.aclose()


# where the demo's device-model and fixed signals come from, by machine
SOURCES = {
    "vmc-01": {"execution": "data item exec", "part_count": "data item partcount"},
    "lathe-02": {"execution": "SHDR key execution", "asset_changed": "SHDR @ASSET@ lines"},
    "robodrill-01": {"execution": "cnc_statinfo.run", "program": "cnc_rdprgnum.data"},
    "vf2-01": {"execution": "Q500 status", "part_count": "macro #3901 (Q600)"},
}


async def test_every_demo_machine_probes_good(demo: LoadedPlant) -> None:
    for machine in demo.plant.machines:
        result = await probe(demo, machine.id, within=10.0)
        addresses = {r.point: r.address for r in result.rows}
        for point, source in SOURCES.get(machine.id, {}).items():
            assert addresses.get(point) == source, (machine.id, point, addresses)
        text = render(result)
        assert result.ok, text
        assert result.rows, text
        configured = {p.get("name") or p.get("key") for p in machine.points}
        configured.discard("system")  # the SHDR condition folds into `alarm`
        assert configured <= {r.point for r in result.rows}, text
        assert text.rstrip().endswith("good"), text
        # every value names its source, profile and device-model signals too (issue 14)
        unnamed = [r.point for r in result.rows if r.address == "(device model)"]
        assert not unnamed, text


async def test_modbus_rows_carry_registers_and_decoded_values(demo: LoadedPlant) -> None:
    result = await probe(demo, "mill-01")
    rows = {r.point: r for r in result.rows}
    assert rows["part_count"].address == "holding 10+2 uint32"
    high, low = (int(w, 16) for w in rows["part_count"].raw.split())
    assert rows["part_count"].value == (high << 16) | low
    assert rows["execution"].raw.startswith("0x")
    assert rows["spindle_speed_cdab"].address.endswith("CDAB")


# A machine held in one state, so what the wrong map reads is known: parts 5/0 (bytes no
# text point can hold) and an alarm (input register 0 = 1, which a CDAB float decodes as
# 1.4e-45).
HELD = {"script": [{"at": 0, "execution": "active", "controller_mode": "automatic",
                    "alarm_code": 1001, "alarm_text": "held", "program": "O1000",
                    "part_count": 5, "bad_part_count": 0}]}


def _with_points(loaded: LoadedPlant, tmp: Path, points: list[dict[str, object]]) -> Path:
    plant = yaml.safe_load(loaded.path.read_text())
    machine = next(m for m in plant["machines"] if m["id"] == "mill-01")
    machine["points"] = points
    machine["simulator"] = HELD
    plant["machines"] = [machine]
    path = tmp / "wrong.yaml"
    path.write_text(yaml.safe_dump(plant))
    return path


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Callable[[list[dict[str, object]]], Path]]:
    """mill-01 served held in one state with the demo's register layout; yields a function
    that writes a plant reading it with other points."""
    base = load_plant(demo_plant_on_free_ports(tmp_path))
    demo_points = [dict(p) for p in base.plant.machine("mill-01").points]
    handles = await start_simulators(load_plant(_with_points(base, tmp_path, demo_points)))
    try:
        yield lambda points: _with_points(base, tmp_path, points)
    finally:
        for h in handles:
            await h.aclose()


async def test_a_register_map_from_another_controller_exits_1_naming_points(
    held: Callable[[list[dict[str, object]]], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: adapters/modbus/sample.yaml copied onto a simulated machine reads
    without a single Modbus error, yet the float and the text are nonsense."""
    sample = yaml.safe_load((ROOT / "adapters" / "modbus" / "sample.yaml").read_text())
    path = held(sample["points"])
    rc = await _run_cli(["probe", "-c", str(path), "mill-01"])
    out = capsys.readouterr().out
    assert rc == 1, out
    verdict = out.rstrip().splitlines()[-1]
    assert "spindle_speed" in verdict and "program" in verdict, out
    assert "execution" not in verdict, out


async def test_refused_and_unmapped_points_are_named(
    held: Callable[[list[dict[str, object]]], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = held(
        [
            {"name": "part_count", "register": "holding", "address": 10, "data_type": "uint32"},
            {"name": "beyond_map", "register": "holding", "address": 5000},
            {"name": "execution", "register": "holding", "address": 11,
             "map": {7: "active"}},  # wrong address: the part counter's low word, 5
        ],
    )
    rc = await _run_cli(["probe", "-c", str(path), "mill-01"])
    out = capsys.readouterr().out
    assert rc == 1, out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "illegal data address" in lines["beyond_map"], out
    assert "uncertain" in lines["execution"], out
    assert "good" in lines["part_count"] and lines["part_count"].rstrip().endswith("good"), out
    assert out.rstrip().endswith("beyond_map, execution") or "2 of 3" in out, out


async def test_an_unreachable_machine_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = demo_plant_on_free_ports(tmp_path)  # no simulators started
    rc = await _run_cli(["probe", "-c", str(path), "mill-01", "--timeout", "3"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "cannot read" in out


async def test_an_unknown_machine_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = demo_plant_on_free_ports(tmp_path)
    assert await _run_cli(["probe", "-c", str(path), "nope"]) == 2
    assert "machines: mill-01" in capsys.readouterr().err


def test_implausible_values() -> None:
    assert implausible(1.401298464324817e-45)
    assert implausible("\x00\x00")
    assert not implausible(0.0)
    assert not implausible(3030.5)
    assert not implausible("O1000")


async def _run_cli(argv: list[str]) -> int:
    """main() runs its own event loop: keep it off this test's loop (the simulators live
    here) by running it in a worker thread."""
    import asyncio

    return await asyncio.to_thread(main, argv)


async def test_profile_signals_name_the_nodes_they_come_from(demo: LoadedPlant) -> None:
    """dmc-01 has no point list: every value comes from `profile: sinumerik`. Each row names
    the NC variable node(s) it is derived from, so a wrong mapping can be seen (issue 14)."""
    result = await probe(demo, "dmc-01")
    text = render(result)
    rows = {r.point: r for r in result.rows}
    nc = "nsu=SinumerikVarProvider;s="
    assert rows["execution"].address == (
        f"{nc}/Channel/State/progStatus + {nc}/Channel/State/feedRateIpoOvr"
    ), text
    assert rows["program"].address == f"{nc}/Channel/ProgramInfo/selectedWorkPProg", text
    assert rows["part_count"].address == f"{nc}/Channel/State/actParts", text
    assert "(device model)" not in text, text
    assert f"{nc}/Channel/State/actParts" in text  # in the table the engineer reads


async def test_opc_ua_points_the_server_does_not_have_say_why(tmp_path: Path) -> None:
    """A node id the server does not know, or a namespace it does not have, was shown as
    "the adapter marked it bad": the reason was only in a log line the probe does not show."""
    base = load_plant(demo_plant_on_free_ports(tmp_path))
    plant = yaml.safe_load(base.path.read_text())
    machine = next(m for m in plant["machines"] if m["id"] == "dmu-01")
    machine["points"] = [
        {"name": "typo", "node": "nsu=urn:edge-gateway:simulator;s=dmu-01.Spindle.Speed"},
        {"name": "elsewhere", "node": "nsu=urn:vendor:press;s=Counters.Parts"},
        {"name": "speed", "node": "nsu=urn:edge-gateway:simulator;s=dmu-01.Spindle.ActualSpeed"},
    ]
    plant["machines"] = [machine]
    path = tmp_path / "opcua.yaml"
    path.write_text(yaml.safe_dump(plant))
    loaded = load_plant(path)
    handles = await start_simulators(loaded)
    try:
        result = await probe(loaded, "dmu-01")
    finally:
        for h in handles:
            await h.aclose()
    rows = {r.point: r for r in result.rows}
    text = render(result)
    assert rows["typo"].error == "refused by the server: BadNodeIdUnknown", text
    assert rows["elsewhere"].error == (
        "unresolved: namespace urn:vendor:press is not on the server"
    ), text
    assert rows["speed"].good, text
    assert result.bad_points == ["typo", "elsewhere"], text


async def test_a_refused_modicon_number_gets_the_address_to_write(
    held: Callable[[list[dict[str, object]]], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A register map's 40011 written unquoted is a valid address the device refuses; the
    probe says which address it stands for."""
    path = held([
        {"name": "part_count", "register": "holding", "address": 40011, "data_type": "uint32"},
    ])
    rc = await _run_cli(["probe", "-c", str(path), "mill-01"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert ("exception 2 (illegal data address): 40011 is Modicon numbering (1-based, table "
            "digit first): write `register: holding, address: 10` (0-based)") in out, out
