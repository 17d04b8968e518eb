"""`edge-gateway watch` against the demo plant: every machine's stream verified and decoded."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import Mosquitto
from e2e import DEMO_MACHINES, GatewayProcess, demo_plant_on_free_ports

from edge.cli import main
from edge.commissioning.watch import StreamBoard
from edge.platform_kit.capture import verify_live


@pytest.fixture
def gateway(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[str]:
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    plant = demo_plant_on_free_ports(tmp_path, url, {"oee": {"publish_every": 1}})
    gw = GatewayProcess(plant).start()
    try:
        yield url
    finally:
        gw.kill()
        structlog.reset_defaults()


async def _board_until(
    url: str, done: Callable[[StreamBoard], bool], within: float
) -> StreamBoard:
    board = StreamBoard()
    complete = asyncio.Event()

    def on_verified(topic: str, body: dict[str, Any]) -> None:
        board.add(topic, body)
        if done(board):
            complete.set()

    err = io.StringIO()
    task = asyncio.create_task(verify_live(url, "edge/#", None, err, on_verified=on_verified))
    try:
        async with asyncio.timeout(within):
            await complete.wait()
    except TimeoutError:
        missing = {
            asset: [k for k, ok in (("execution", v.state.get("execution")), ("oee", v.oee),
                                    ("values", v.values)) if not ok]
            for asset, v in board.machines.items()
        }
        raise AssertionError(f"incomplete after {within} s: {missing}") from None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not err.getvalue(), err.getvalue()
    return board


@pytest.mark.slow
async def test_watch_decodes_every_demo_machine(
    gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def complete(board: StreamBoard) -> bool:
        # energy meters (DEMO_METERS) have values but no execution state or OEE of their own
        return board.machines.keys() >= set(DEMO_MACHINES) and all(
            board.machines[a].state.get("execution") and board.machines[a].oee
            and board.machines[a].values
            for a in DEMO_MACHINES
        )

    board = await _board_until(gateway, complete, 60)
    text = board.frame("")
    for asset in DEMO_MACHINES:
        row = next(line for line in text.splitlines() if line.startswith(asset + " "))
        assert board.machines[asset].state["execution"] in row
        assert "%" in row  # OEE of the running shift (the demo calendar covers every day)

    # the command itself, for a few seconds, one machine in detail
    rc = await asyncio.to_thread(
        main, ["watch", "--broker", gateway, "--machine", "mill-01", "--seconds", "3"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "mill-01" in out and "lathe-01" not in out
    assert "spindle_speed" in out and "part_count" in out

    # a mistyped id: said so (it read "nothing verified yet", exit 0)
    rc = await asyncio.to_thread(
        main, ["watch", "--broker", gateway, "--machine", "mill-1", "--seconds", "3"]
    )
    captured = capsys.readouterr()
    assert rc == 2, captured.out
    assert "mill-1: no such machine seen on the gateway's topics (seen: " in captured.err
    assert "mill-01" in captured.err
