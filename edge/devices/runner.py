"""One task per device: connect, stream, and back off when the device goes away.

Modelled on Home Assistant's coordinators: a device that dies is logged once when it goes
and once when it returns, however many retries lie between, and its failure never touches
another device's task. An unexpected exception from an adapter (a bug) is logged with its
traceback once and treated like a transient failure, so a faulty plugin degrades to one
unavailable machine instead of a dead gateway. An adapter that cannot even be built (its
constructor or `describe()` raises) is reported FAILED, in the log once and in status and
`health`, instead of ending its task silently.

A device that answers but whose every point is bad is `degraded` (health.py): same as down
for availability and OEE, with the failing points named once in the log.

`fault()` gives status and `health` what an operator asks first about a device that is not
up: why (the reason and the exception's class), since when (the moment it stopped being up,
not its latest retry) and how often it has failed and recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adapters.base import Adapter, AdapterContext, PollingAdapter
from edge.devices.poll_stats import PollDurations
from models.errors import ConfigurationError, TransientError
from models.logger import Logger
from models.sample import Sample, format_ts, utc_now

from .health import PointHealth, Verdict
from .recovery import pause


class DeviceStatus(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"  # connected, but no good value from any point for N polls
    DOWN = "down"
    FAILED = "failed"  # configuration error: stopped until the YAML changes


NOT_UP = frozenset({DeviceStatus.DEGRADED, DeviceStatus.DOWN, DeviceStatus.FAILED})


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """Why one device is not up (degraded, down or failed)."""

    status: DeviceStatus
    reason: str
    error: str | None
    """The class of the exception behind it (`DeviceUnavailable`, `ProtocolError`,
    `ConfigurationError`, or an adapter bug's own); None for a degraded device, which
    answers but whose points are all bad."""
    cause: str | None
    """The class of the library error it was raised from (`ConnectionRefusedError`,
    `TimeoutError`...), when there is one."""
    since: datetime
    """When the device stopped being up; retries do not move it."""
    failures: int
    """Failed connection attempts (or ended streams) since then."""
    reconnects: int
    """Times the device came back after being down, since the gateway started."""

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason, "error": self.error,
                "cause": self.cause, "since": format_ts(self.since), "failures": self.failures,
                "reconnects": self.reconnects}


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's variant)."""

    initial: float = 1.0
    cap: float = 60.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


SampleSink = Callable[[str, Sequence[Sample]], None]
StatusSink = Callable[[str, DeviceStatus, str | None], None]


class DeviceRunner:
    def __init__(
        self,
        asset: str,
        adapter_cls: type[Adapter],
        *,
        settings: BaseModel,
        poll_interval: float,
        on_samples: SampleSink,
        on_status: StatusSink,
        logger: Logger,
        backoff: Backoff | None = None,
        state_dir: Path | None = None,
        degraded_after: int = 3,
        keep_raw: bool = False,
        connect_slots: asyncio.Semaphore | None = None,
        poll_phase: float | None = None,
    ) -> None:
        """`connect_slots`, shared by a fleet's runners, bounds the connects in progress:
        500 machines connecting at once timed out by the hundred on the gateway's own loop
        (a third of them then waited out a backoff, issue 17). `poll_phase` is the
        adapter's (`AdapterContext.poll_phase`, edge/devices/phases.py)."""
        self.poll_phase = poll_phase
        self.asset = asset
        self.connect_slots = connect_slots
        self.keep_raw = keep_raw
        self._raw_values: Callable[[], dict[str, str]] | None = None
        self._signal_sources: Callable[[], dict[str, str]] | None = None
        self.adapter_cls = adapter_cls
        self.settings = settings
        self.poll_interval = poll_interval
        self.on_samples = on_samples
        self.on_status = on_status
        self.log = logger.bind(asset=asset)
        self.backoff = backoff or Backoff()
        self.state_dir = state_dir
        self.status = DeviceStatus.CONNECTING
        self.reason: str | None = None  # why the device is not up, for status and health
        # class names of the exception behind `reason` and of its cause (names, not the
        # exception: that would keep its traceback's frames alive while the device is down)
        self._error: tuple[str | None, str | None] = (None, None)
        self._not_up_since: datetime | None = None
        self._failures = 0  # failed attempts since `_not_up_since`
        self.health = PointHealth(degraded_after, poll_interval)
        self._health_pending = asyncio.Event()  # set while `health.pending`
        self.describe: dict[str, Any] = {}
        self.stopping = False
        self.reconnects = 0
        """Times the device came back after being down (metrics)."""
        self.points: dict[str, str] = {}
        """`Adapter.point_addresses()` of the running adapter (the status page)."""
        self.polls: PollDurations | None = (
            PollDurations() if issubclass(adapter_cls, PollingAdapter) else None
        )

    def raw_values(self) -> dict[str, str]:
        """The running adapter's undecoded values (when kept), for the status page."""
        return self._raw_values() if self._raw_values is not None else {}

    def signal_sources(self) -> dict[str, str]:
        """Where the running adapter's own signals come from (`Adapter.signal_sources()`),
        asked each time: OPC UA knows its nodes only once discovery ran."""
        return self._signal_sources() if self._signal_sources is not None else {}

    def stop(self) -> None:
        """Ask the loop to end. A flag as well as a cancel: a library under an adapter may
        swallow a CancelledError (seen at shutdown with 200 Modbus devices), and the loop
        must end anyway instead of polling a device nobody listens to any more."""
        self.stopping = True

    def fault(self) -> DeviceFault | None:
        """Why the device is not up; None while it is up or still connecting."""
        if self.status not in NOT_UP or self._not_up_since is None:
            return None
        return DeviceFault(self.status, self.reason or self.status.value, *self._error,
                           self._not_up_since, self._failures, self.reconnects)

    def _set(self, status: DeviceStatus, reason: str | None = None,
             error: BaseException | None = None) -> None:
        if status in NOT_UP:
            if self._not_up_since is None:
                self._not_up_since = utc_now()
            self._failures += status is not DeviceStatus.DEGRADED
            cause = None if error is None else (error.__cause__ or error.__context__)
            self._error = (None if error is None else type(error).__name__,
                           None if cause is None else type(cause).__name__)
        else:
            self._not_up_since, self._failures, self._error = None, 0, (None, None)
        self.status = status
        self.reason = reason
        self.on_status(self.asset, status, reason)

    def _judge(self, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        if verdict.degraded:
            reason = verdict.reason(self.health.polls)
            self.log.warning("device_degraded", failing=list(verdict.failing),
                             polls=self.health.polls)
            self._set(DeviceStatus.DEGRADED, reason)
        else:
            self.log.info("device_points_recovered")
            self._set(DeviceStatus.UP)

    async def _watch_health(self) -> None:
        """Ticks every poll interval while a tick could matter (`health.pending`): a
        subscription that went quiet sends no batch. Otherwise it waits, instead of waking
        every interval for every device (issue 17)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.health.pending:
                self._health_pending.clear()
                await self._health_pending.wait()
            await asyncio.sleep(self.poll_interval)
            if self.status in (DeviceStatus.UP, DeviceStatus.DEGRADED):
                self._judge(self.health.tick(loop.time()))

    async def run(self) -> None:
        ctx = AdapterContext(
            asset=self.asset,
            poll_interval=self.poll_interval,
            logger=self.log,
            state_dir=self.state_dir,
            keep_raw=self.keep_raw,
            poll_phase=self.poll_phase,
        )
        try:
            adapter = self.adapter_cls(ctx, self.settings)
            self.describe = adapter.describe()
            self.points = adapter.point_addresses()
            self._raw_values = adapter.raw_values
            self._signal_sources = adapter.signal_sources
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any plugin error: this machine only
            # a constructor or describe() that cannot work will not work on retry either:
            # FAILED until the YAML (or the plugin) changes, said once, naming the machine
            kind = "misconfigured" if isinstance(exc, ConfigurationError) else "adapter bug"
            reason = f"{kind}: {type(exc).__name__}: {exc}"
            self.log.error(
                "device_adapter_failed_to_start", adapter=self.adapter_cls.__name__, error=reason
            )
            self._set(DeviceStatus.FAILED, reason, exc)
            return
        watcher = asyncio.create_task(self._watch_health(), name=f"health-{self.asset}")
        try:
            await self._loop(adapter)
        finally:
            watcher.cancel()

    async def _loop(self, adapter: Adapter) -> None:
        loop = asyncio.get_running_loop()
        went_down = False
        while not self.stopping:
            try:
                async with self.connect_slots or contextlib.nullcontext():
                    await adapter.connect()
                self.health.reset()
                async for batch in adapter.stream():
                    if self.stopping:
                        break
                    if self.polls is not None and isinstance(adapter, PollingAdapter):
                        seconds = adapter.last_read_seconds
                        if seconds is not None:
                            self.polls.observe(seconds)
                    if self.status not in (DeviceStatus.UP, DeviceStatus.DEGRADED):
                        if went_down:
                            self.reconnects += 1
                            self.log.info("device_recovered")
                        else:
                            self.log.info("device_connected", **adapter.describe())
                        went_down = False
                        self.backoff.reset()
                        self._set(DeviceStatus.UP)
                        self.describe = adapter.describe()  # not per batch: it may be costly
                    self.on_samples(self.asset, batch)
                    self._judge(self.health.observe(batch, loop.time()))
                    if self.health.pending:
                        self._health_pending.set()
                if self.stopping:
                    break
                raise TransientError("adapter stream ended")
            except ConfigurationError as exc:
                self.log.error("device_misconfigured", error=str(exc))
                self._set(DeviceStatus.FAILED, str(exc), exc)
                return
            except TransientError as exc:
                reason = str(exc) or type(exc).__name__
                if not went_down:
                    self.log.warning("device_unavailable", error=reason)
                else:  # the warning was given; retries only at debug
                    self.log.debug("device_still_unavailable", error=reason)
                went_down = True
                self._set(DeviceStatus.DOWN, reason, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"adapter bug: {type(exc).__name__}: {exc}"
                if not went_down:
                    self.log.exception("device_adapter_error")
                went_down = True
                self._set(DeviceStatus.DOWN, reason, exc)
            finally:
                try:
                    await asyncio.shield(adapter.aclose())
                except Exception:  # closing a broken connection may fail; nothing to do
                    self.log.debug("device_close_failed")
            if not self.stopping and await pause(adapter, self.backoff.next_delay()):
                self.log.debug("device_reachable_again_retrying_now")
