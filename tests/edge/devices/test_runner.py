"""The device runner: backoff, log-once, and a stop that always ends the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import structlog
from e2e import until
from pydantic import BaseModel

from adapters.base import Adapter, PollingAdapter
from edge.devices.runner import Backoff, DeviceRunner, DeviceStatus
from models.errors import DeviceUnavailable
from models.sample import Quality, Sample, utc_now


class NoSettings(BaseModel):
    pass


class SwallowingAdapter(PollingAdapter):
    """Like a library that catches CancelledError inside a read (seen under pymodbus at
    shutdown): cancelling the task alone would never end the runner."""

    settings_model = NoSettings
    reads = 0
    parked = 0  # reads waiting for the device's answer
    answer: asyncio.Event | None = None  # None: the device answers at once

    async def connect(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def read_once(self) -> Sequence[Sample]:
        type(self).reads += 1
        gate = type(self).answer
        if gate is not None:  # a read the device has not answered yet
            type(self).parked += 1
            with contextlib.suppress(asyncio.CancelledError):  # the bug we must survive
                await gate.wait()
        return [Sample(self.context.asset, "x", 1, None, utc_now())]


class UnansweredRead(SwallowingAdapter):
    """Its own class attributes: the test parks its reads without touching the others'."""

    answer = None
    parked = 0


class FlakyAdapter(SwallowingAdapter):
    attempts = 0

    async def connect(self) -> None:
        type(self).attempts += 1
        if type(self).attempts <= 3:
            raise DeviceUnavailable("refused")


def runner(cls: type[PollingAdapter], statuses: list[Any], samples: list[Any]) -> DeviceRunner:
    return DeviceRunner(
        "m1",
        cls,
        settings=NoSettings(),
        poll_interval=0.01,
        on_samples=lambda a, b: samples.append(b),
        on_status=lambda a, s, r: statuses.append(s),
        logger=structlog.get_logger(),
        backoff=Backoff(initial=0.01, cap=0.02),
    )


async def test_stop_ends_a_runner_whose_adapter_swallows_cancellation() -> None:
    statuses: list[Any] = []
    samples: list[Any] = []
    r = runner(UnansweredRead, statuses, samples)
    task = asyncio.create_task(r.run())
    await until(lambda: bool(samples) and r.status is DeviceStatus.UP, 5, "polling")
    # the next read waits for an answer that never comes: the cancel lands inside it
    UnansweredRead.answer = asyncio.Event()
    await until(lambda: UnansweredRead.parked > 0, 5, "a read waiting for the device")
    r.stop()
    task.cancel()
    # "never ends" can only be told by a deadline: generous for a loaded box, and the wait
    # returns as soon as the runner ends
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "the runner kept polling after stop()"


async def test_transient_failures_back_off_and_recover(capsys: Any) -> None:
    statuses: list[Any] = []
    samples: list[Any] = []
    r = runner(FlakyAdapter, statuses, samples)
    task = asyncio.create_task(r.run())
    await until(lambda: bool(samples), 5, "samples after the failures")
    r.stop()
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    assert FlakyAdapter.attempts == 4
    assert statuses.count(DeviceStatus.DOWN) == 3 and statuses[-1] is DeviceStatus.UP
    out = capsys.readouterr().out
    assert out.count("device_unavailable") == 1, "a dead device is logged once, not per retry"
    assert out.count("device_recovered") == 1


class ExplodingConstructor(SwallowingAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("plugin cannot start")


class ExplodingDescribe(SwallowingAdapter):
    def describe(self) -> dict[str, Any]:
        raise ValueError("describe is broken")


@pytest.mark.parametrize(
    ("cls", "error"),
    [(ExplodingConstructor, "plugin cannot start"), (ExplodingDescribe, "describe is broken")],
)
async def test_an_adapter_that_cannot_be_built_is_failed_and_logged_once(
    cls: type[PollingAdapter], error: str, capsys: Any
) -> None:
    statuses: list[Any] = []
    samples: list[Any] = []
    r = runner(cls, statuses, samples)
    async with asyncio.timeout(5):
        await r.run()  # ends by itself: nothing to retry
    assert r.status is DeviceStatus.FAILED
    assert statuses == [DeviceStatus.FAILED]
    assert not samples
    fault = r.fault()  # what status and `health` say of it (`device_faults`)
    assert fault is not None and fault.status is DeviceStatus.FAILED and error in fault.reason
    assert fault.as_json()["failures"] == 1 and fault.reconnects == 0
    assert fault.error == {ExplodingConstructor: "RuntimeError",
                           ExplodingDescribe: "ValueError"}[cls]
    out = capsys.readouterr().out
    assert out.count("device_adapter_failed_to_start") == 1
    assert error in out and "m1" in out


class QuietSubscriptionAdapter(Adapter):
    """An OPC UA server none of whose nodes resolve: one all-bad batch, then silence."""

    settings_model = NoSettings

    async def connect(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        yield [Sample(self.context.asset, "x", None, None, utc_now(), quality=Quality.BAD)]
        await asyncio.Event().wait()  # nothing more, ever


async def test_a_quiet_all_bad_subscription_degrades_by_time() -> None:
    """No batch follows, so only the runner's health watcher can say it: it ticks while the
    points are all bad (and only then; issue 17), so the device turns degraded after
    `degraded_after` poll intervals."""
    statuses: list[Any] = []
    r = DeviceRunner(
        "m1", QuietSubscriptionAdapter, settings=NoSettings(), poll_interval=0.02,
        on_samples=lambda a, b: None, on_status=lambda a, s, reason: statuses.append(s),
        logger=structlog.get_logger(), degraded_after=3,
    )
    task = asyncio.create_task(r.run())
    try:
        await until(lambda: r.status is DeviceStatus.DEGRADED, 5, "degraded by time")
        assert statuses == [DeviceStatus.UP, DeviceStatus.DEGRADED]
        assert r.reason == "no good value from any point for 3 polls (x)"
    finally:
        r.stop()
        task.cancel()
        await asyncio.wait({task}, timeout=2)


class GatedConnect(SwallowingAdapter):
    """Connects wait for the test; counts how many are in progress at once."""

    gate: asyncio.Event
    connecting = 0
    most = 0

    async def connect(self) -> None:
        cls = type(self)
        cls.connecting += 1
        cls.most = max(cls.most, cls.connecting)
        try:
            await cls.gate.wait()
        finally:
            cls.connecting -= 1


class CountedSlots(asyncio.Semaphore):
    """The fleet's connect slots, counting the runners that have asked for one."""

    asked = 0

    async def acquire(self) -> bool:
        self.asked += 1
        return await super().acquire()


async def test_shared_connect_slots_bound_the_connects_in_progress() -> None:
    GatedConnect.gate = asyncio.Event()
    slots = CountedSlots(2)
    up: list[str] = []
    runners = [
        DeviceRunner(f"m{i}", GatedConnect, settings=NoSettings(), poll_interval=0.01,
                     on_samples=lambda a, b: up.append(a), on_status=lambda a, s, r: None,
                     logger=structlog.get_logger(), connect_slots=slots)
        for i in range(5)
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    # every runner has asked for a slot: the three without one are queued, not connecting
    await until(lambda: slots.asked == 5, 10, "all five runners to ask for a connect slot")
    assert GatedConnect.connecting == 2 and GatedConnect.most == 2
    GatedConnect.gate.set()
    await until(lambda: {r.status for r in runners} == {DeviceStatus.UP}, 5, "all up")
    assert GatedConnect.most == 2 and set(up) == {f"m{i}" for i in range(5)}
    for r, t in zip(runners, tasks, strict=True):
        r.stop()
        t.cancel()
    await asyncio.wait(tasks, timeout=2)
