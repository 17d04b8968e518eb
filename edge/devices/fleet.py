"""The device fleet: one runner task and one asset twin per enabled machine.

Samples flow runner -> twin -> KPI (state changes) and -> the record sink (telemetry and
state envelopes). A reload restarts only machines whose YAML (or adapter settings) changed;
the sink is the egress slot, so an egress restart does not touch the devices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from adapters.base import Adapter, PollingAdapter
from edge.config import registry
from edge.config.loader import LoadedPlant
from edge.devices.phases import poll_phases
from edge.devices.runner import DeviceRunner, DeviceStatus
from edge.devices.twin import AssetTwin
from edge.egress.stack import RecordSink
from models.envelope import telemetry_records
from models.machine_state import MachineState
from models.plant import Machine, machine_topic
from models.sample import Sample, format_ts, utc_now

CONNECTS_AT_ONCE = 32
"""Device connects in progress at a time (DeviceRunner's `connect_slots`)."""


@dataclass
class Device:
    machine: Machine
    runner: DeviceRunner
    task: asyncio.Task[None]
    twin: AssetTwin


class StateObserver(Protocol):
    """Who learns of state changes on the gateway's clock (the KPI service)."""

    def on_state(self, asset: str, state: MachineState, at: datetime) -> None: ...
    def on_unavailable(self, asset: str, at: datetime) -> None: ...


class BatchObserver(Protocol):
    """Who sees every batch with the state it produced, and link losses (part records)."""

    def on_batch(
        self, asset: str, batch: Sequence[Sample], state: MachineState | None
    ) -> None: ...
    def on_unavailable(self, asset: str, at: datetime) -> None: ...


class FleetView(Protocol):
    """What queries, capacity and the console read of the fleet."""

    def assets(self) -> list[str]: ...
    def device(self, asset: str) -> Device: ...  # KeyError for an unknown machine
    def statuses(self) -> dict[str, str]: ...
    def reasons(self) -> dict[str, str]: ...
    def faults(self) -> dict[str, dict[str, Any]]: ...


class DeviceFleet:
    def __init__(
        self,
        config: Callable[[], LoadedPlant],
        sink: RecordSink,
        kpi: StateObserver,
        log: FilteringBoundLogger,
        observers: Sequence[BatchObserver] = (),
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`clock`: the gateway's clock that state changes and link losses are timed by
        (injectable: docs/vectors/generate.py feeds a scripted day through a fleet)."""
        self.clock = clock
        self.config = config
        self.sink = sink
        self.kpi = kpi
        self.log = log
        self.observers = observers
        self.devices: dict[str, Device] = {}
        self.twins: dict[str, AssetTwin] = {}
        self.connect_slots = asyncio.Semaphore(CONNECTS_AT_ONCE)

    # ---- FleetView --------------------------------------------------------------------
    def assets(self) -> list[str]:
        return list(self.devices)

    def device(self, asset: str) -> Device:
        return self.devices[asset]

    def statuses(self) -> dict[str, str]:
        return {a: d.runner.status.value for a, d in self.devices.items()}

    def reasons(self) -> dict[str, str]:
        """Why each device that is not up is not (down, degraded, failed), in its words."""
        return {a: d.runner.reason for a, d in self.devices.items() if d.runner.reason}

    def faults(self) -> dict[str, dict[str, Any]]:
        """Per device that is not up: why, the error class, since when, failures and
        reconnects (`DeviceFault`), as status and `health` carry it."""
        out = {}
        for asset, d in self.devices.items():
            fault = d.runner.fault()
            if fault is not None:
                out[asset] = fault.as_json()
        return out

    # ---- runner callbacks -------------------------------------------------------------
    def on_samples(self, asset: str, batch: Sequence[Sample]) -> None:
        device = self.devices.get(asset)
        if device is None:  # a late batch from a device being stopped or removed
            return
        twin = device.twin
        new_state, rejected = twin.apply(batch)
        if new_state is not None:
            # the gateway's clock, not the device's: OEE windows are on one time line, and
            # device clocks jump (SHDR recordings, controllers without NTP)
            self.kpi.on_state(asset, new_state, self.clock())
        for observer in self.observers:
            observer.on_batch(asset, batch, new_state)
        for signal_name, value in rejected:
            self.log.warning(
                "state_value_not_in_vocabulary", asset=asset, signal=signal_name, value=value
            )
        self.sink.add(
            machine_topic(self.config().plant, device.machine, "telemetry"),
            asset,
            telemetry_records(batch),
            complete=issubclass(device.runner.adapter_cls, PollingAdapter),
        )
        if new_state is not None:
            self._emit_state(device)

    def on_status(self, asset: str, status: DeviceStatus, reason: str | None) -> None:
        device = self.devices.get(asset)
        if device is None or status is DeviceStatus.UP:
            return
        # a device that never answered is announced too: silence is not a state
        at = self.clock()
        changed = device.twin.set_available(False, at) is not None
        if changed:
            self.kpi.on_unavailable(asset, at)
            for observer in self.observers:
                observer.on_unavailable(asset, at)
        if changed or not device.twin.announced:
            self._emit_state(device)

    def _emit_state(self, device: Device) -> None:
        twin = device.twin
        twin.announced = True
        record = twin.state.as_record()
        record["ts"] = format_ts(twin.state.since or self.clock())
        topic = machine_topic(self.config().plant, device.machine, "state")
        self.sink.emit(topic, device.machine.id, "state", [record])

    # ---- lifecycle --------------------------------------------------------------------
    def start(
        self,
        machine: Machine,
        load: Callable[[str], type[Adapter]] = registry.load,
        poll_phase: float | None = None,
    ) -> None:
        """Start `machine`'s runner; `load` finds its adapter type (`registry.loader()`
        for many machines at once); `poll_phase` is where in its interval it reads (None:
        a random phase of its own)."""
        loaded = self.config()
        runner = DeviceRunner(
            machine.id,
            load(machine.adapter),
            settings=loaded.settings[machine.id],
            poll_interval=machine.poll_interval,
            on_samples=self.on_samples,
            on_status=self.on_status,
            logger=self.log,
            state_dir=loaded.state_dir,
            degraded_after=machine.degraded_after,
            keep_raw=loaded.plant.gateway.web.enabled,  # the status page shows raw values
            connect_slots=self.connect_slots,
            poll_phase=poll_phase,
        )
        twin = self.twins.setdefault(machine.id, AssetTwin(machine.id))
        task = asyncio.create_task(runner.run(), name=f"device-{machine.id}")
        self.devices[machine.id] = Device(machine, runner, task, twin)

    async def stop(self, asset: str) -> None:
        device = self.devices.pop(asset)
        device.runner.stop()
        device.task.cancel()
        done, _ = await asyncio.wait({device.task}, timeout=5.0)
        if not done:
            self.log.warning("device_task_did_not_stop", asset=asset)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(a) for a in list(self.devices)))

    def changed(self, old: LoadedPlant, new: LoadedPlant) -> list[str]:
        """Running machines a reload from `old` to `new` must stop (changed or removed)."""
        wanted = {m.id: m for m in new.enabled_machines()}
        return [
            asset
            for asset, d in self.devices.items()
            if asset not in wanted
            or d.machine != wanted[asset]
            or old.settings.get(asset) != new.settings.get(asset)
        ]

    def start_missing(self) -> list[str]:
        """Start the machines not running. Phases are dealt over all the machines this
        process serves, so a machine restarted by a reload gets the slot `gateway.poll_slots`
        gives it now; the others keep theirs until they restart."""
        started = []
        load = registry.loader()
        loaded = self.config()
        machines = loaded.enabled_machines()
        phases = poll_phases(machines, loaded.plant.gateway.poll_slots)
        for machine in machines:
            if machine.id not in self.devices:
                self.start(machine, load, phases[machine.id])
                started.append(machine.id)
        return started
