"""One task per device: connect, stream, and back off when the device goes away.

Modelled on Home Assistant's coordinators: a device that dies is logged once when it goes
and once when it returns, however many retries lie between, and its failure never touches
another device's task. An unexpected exception from an adapter (a bug) is logged with its
traceback once and treated like a transient failure, so a faulty plugin degrades to one
unavailable machine instead of a dead gateway. An adapter that cannot even be built (its
constructor or `describe()` raises) is reported FAILED, in the log once and in status and
`health`, instead of ending its task silently.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adapters.base import Adapter, AdapterContext
from models.errors import ConfigurationError, TransientError
from models.sample import Sample


class DeviceStatus(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    FAILED = "failed"  # configuration error: stopped until the YAML changes


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
        logger: Any,
        backoff: Backoff | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.asset = asset
        self.adapter_cls = adapter_cls
        self.settings = settings
        self.poll_interval = poll_interval
        self.on_samples = on_samples
        self.on_status = on_status
        self.log = logger.bind(asset=asset)
        self.backoff = backoff or Backoff()
        self.state_dir = state_dir
        self.status = DeviceStatus.CONNECTING
        self.describe: dict[str, Any] = {}
        self.stopping = False

    def stop(self) -> None:
        """Ask the loop to end. A flag as well as a cancel: a library under an adapter may
        swallow a CancelledError (seen at shutdown with 200 Modbus devices), and the loop
        must end anyway instead of polling a device nobody listens to any more."""
        self.stopping = True

    def _set(self, status: DeviceStatus, reason: str | None = None) -> None:
        self.status = status
        self.on_status(self.asset, status, reason)

    async def run(self) -> None:
        ctx = AdapterContext(
            asset=self.asset,
            poll_interval=self.poll_interval,
            logger=self.log,
            state_dir=self.state_dir,
        )
        try:
            adapter = self.adapter_cls(ctx, self.settings)
            self.describe = adapter.describe()
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
            self._set(DeviceStatus.FAILED, reason)
            return
        went_down = False
        while not self.stopping:
            try:
                await adapter.connect()
                async for batch in adapter.stream():
                    if self.stopping:
                        break
                    if self.status is not DeviceStatus.UP:
                        if went_down:
                            self.log.info("device_recovered")
                        else:
                            self.log.info("device_connected", **adapter.describe())
                        went_down = False
                        self.backoff.reset()
                        self._set(DeviceStatus.UP)
                        self.describe = adapter.describe()  # not per batch: it may be costly
                    self.on_samples(self.asset, batch)
                if self.stopping:
                    break
                raise TransientError("adapter stream ended")
            except ConfigurationError as exc:
                self.log.error("device_misconfigured", error=str(exc))
                self._set(DeviceStatus.FAILED, str(exc))
                return
            except TransientError as exc:
                reason = str(exc) or type(exc).__name__
                if not went_down:
                    self.log.warning("device_unavailable", error=reason)
                went_down = True
                self._set(DeviceStatus.DOWN, reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"adapter bug: {type(exc).__name__}: {exc}"
                if not went_down:
                    self.log.exception("device_adapter_error")
                went_down = True
                self._set(DeviceStatus.DOWN, reason)
            finally:
                try:
                    await asyncio.shield(adapter.aclose())
                except Exception:  # closing a broken connection may fail; nothing to do
                    self.log.debug("device_close_failed")
            if not self.stopping:
                await asyncio.sleep(self.backoff.next_delay())
