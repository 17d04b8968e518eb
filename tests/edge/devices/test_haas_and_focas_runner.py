"""Haas and FOCAS machines through the gateway's own runner and twin, over real sockets.

What the unit tests cannot show: the runner drives these adapters the way it drives every
other (connect, poll, back off, reconnect on the same instance), and the samples fold into
the same `MachineState` words a Modbus machine produces. The simulator is stopped and
started again on the same port to watch the device go DOWN and come back UP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from e2e import until

from adapters.focas.adapter import FocasAdapter
from adapters.focas.settings import FocasSettings
from adapters.haas.adapter import HaasAdapter
from adapters.haas.settings import HaasSettings
from edge.devices.runner import Backoff, DeviceRunner, DeviceStatus
from edge.devices.twin import AssetTwin
from edge.observability import get_logger
from models.machine_state import ControllerMode, Execution
from models.sample import Sample
from simulators.focas_server import serve_focas
from simulators.haas_server import serve_haas
from simulators.machine import MachineModel, ScriptEvent


def machine(asset: str, execution: Execution) -> MachineModel:
    return MachineModel.scripted(asset, [ScriptEvent(
        at=0, execution=execution, controller_mode=ControllerMode.AUTOMATIC, program="O2000",
        part_count=12, bad_part_count=1, alarm_code=0)])


Serve = Callable[[MachineModel, int], Awaitable[Any]]


async def _serve_haas(model: MachineModel, port: int) -> Any:
    return await serve_haas(model, port=port)


async def _serve_focas(model: MachineModel, port: int) -> Any:
    return await serve_focas(model, port=port)


CASES = [
    pytest.param(HaasAdapter, HaasSettings, _serve_haas, Execution.FEED_HOLD,
                 [{"name": "bad_part_count", "macro": 3902, "data_type": "int"}], id="haas"),
    pytest.param(FocasAdapter, FocasSettings, _serve_focas, Execution.ACTIVE,
                 [{"name": "part_count", "source": "parameter", "number": 6711,
                   "data_type": "int"},
                  {"name": "bad_part_count", "source": "macro", "number": 500,
                   "data_type": "int"}], id="focas"),
]


@pytest.mark.parametrize(("adapter_cls", "settings_cls", "serve", "execution", "points"), CASES)
async def test_runner_twin_and_recovery(adapter_cls: Any, settings_cls: Any, serve: Serve,
                                        execution: Execution, points: list[dict[str, Any]],
                                        free_port: Callable[[], int]) -> None:
    port = free_port()
    model = machine("m1", execution)
    settings = settings_cls.model_validate(
        {"connection": {"host": "127.0.0.1", "port": port, "timeout": 0.5}, "points": points})
    twin = AssetTwin("m1")
    statuses: list[DeviceStatus] = []

    def on_samples(_asset: str, batch: Sequence[Sample]) -> None:
        twin.apply(batch)

    def on_status(_asset: str, status: DeviceStatus, _reason: str | None) -> None:
        statuses.append(status)

    sim = await serve(model, port)
    runner = DeviceRunner("m1", adapter_cls, settings=settings, poll_interval=0.05,
                          on_samples=on_samples, on_status=on_status, logger=get_logger(),
                          backoff=Backoff(initial=0.05, cap=0.2))
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: twin.state.part_count == 12, what="part_count 12 in the twin")
        expected = model.snapshot(model.start).as_state()
        got = twin.state
        assert got.execution is expected.execution
        assert got.controller_mode is expected.controller_mode
        assert got.bad_part_count == 1 and got.alarms == ()
        assert got.program == expected.program == "O2000"  # same name whatever the brand
        assert twin.last_values["model"].value  # identification for the nameplate

        await sim.aclose()  # the control goes away...
        await until(lambda: DeviceStatus.DOWN in statuses, what="the device DOWN")
        sim = await serve(model, port)  # ...and comes back on the same port
        await until(lambda: statuses[-1] is DeviceStatus.UP, what="the device UP again")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.aclose()
