"""The retained `status` message and the data-loss alarm.

Lives with one egress stack (it publishes on that stack's transports) and reads the fleet
through `DeviceStatuses`, so it knows nothing of how devices run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from edge.config.loader import LoadedPlant
from edge.egress.stack import EgressStack, Supervising, status_payload
from edge.egress.status_scope import device_detail, loss_alarm
from models.plant import gateway_topic


def _lost(st: dict[str, Any]) -> int:
    """Everything a destination lost: envelopes dropped or rejected, records never stored."""
    return int(st["dropped"] + st["rejected"] + st["lost_records"])


class DeviceStatuses(Protocol):
    def statuses(self) -> dict[str, str]: ...
    def reasons(self) -> dict[str, str]: ...
    def faults(self) -> dict[str, dict[str, Any]]: ...


class LossAlarms:
    """The data-loss alarm per destination, `outbox_full_losing_data:<id>` in the status's
    `alarms`: one process's status (`StatusReporter`) and the worker pool's parent
    (edge/daemon/workers.py) raise and clear it the same way from the destinations' counters.

    An alarm raised while its destination was unreachable (the usual case: the outbox
    fills during an outage) stays up until a status carrying it has gone out on that
    destination's link (`carried`): the backlog drains within a second of the reconnect,
    and the alarm used to clear before the first status, so the platform never saw it."""

    def __init__(
        self, log: FilteringBoundLogger, failing: Callable[[str], bool] = lambda _dest: False
    ) -> None:
        self.log = log
        self.failing = failing  # storing still fails for this destination (edge/egress/loss.py)
        self.alarmed: set[str] = set()
        self.unseen: set[str] = set()  # alarms no status has carried over their own link yet
        self._lost: dict[str, int] = {}

    def seed(self, stats: dict[str, dict[str, Any]]) -> None:
        """Losses before this point raise no alarm (a destination first seen starts here too)."""
        self._lost = {d: _lost(st) for d, st in stats.items()}

    def check(self, stats: dict[str, dict[str, Any]]) -> bool:
        """Raise or clear the alarm per destination; True when the status must go out now."""
        urgent = False
        for dest, st in stats.items():
            lost = _lost(st)
            # up while loss goes on: new drops, or storing still failing
            losing = lost > self._lost.get(dest, lost) or self.failing(dest)
            if losing and dest not in self.alarmed:
                self.alarmed.add(dest)  # the alarm: one error line, and `alarms` in the status
                self.unseen.add(dest)
                self.log.error("outbox_full_losing_data", destination=dest, **st)
                urgent = True
            elif not losing and dest in self.alarmed and dest not in self.unseen:
                self.alarmed.discard(dest)
                self.log.info("outbox_no_longer_losing_data", destination=dest, **st)
                urgent = True  # platforms see the alarm clear at once
            self._lost[dest] = lost
        return urgent

    def names(self) -> list[str]:
        return [loss_alarm(d) for d in sorted(self.alarmed)]

    def carried(self, dest: str) -> None:
        """A status with the current alarms went out on `dest`'s link."""
        self.unseen.discard(dest)


class StatusReporter:
    def __init__(
        self,
        stack: EgressStack,
        devices: DeviceStatuses,
        config: Callable[[], LoadedPlant],
        supervisor: Supervising,
        log: FilteringBoundLogger,
        *,
        every: float = 30.0,
    ) -> None:
        self.stack = stack
        self.devices = devices
        self.config = config
        self.supervisor = supervisor
        self.log = log
        self.every = every
        self.alarms = LossAlarms(log, stack.losses.failing)

    def detail(self) -> dict[str, Any]:
        """The detailed status gateway-wide, before it is narrowed per destination."""
        detail: dict[str, Any] = {
            "destinations": self.stack.destination_stats(),
            "alarms": self.alarms.names(),
            "devices": self.devices.statuses(),
            "losses": self.stack.losses.snapshot(),
            "unsignable": self.stack.unsignable.snapshot(),
        }
        detail.update(device_detail(self.devices))
        return detail

    async def run(self) -> None:
        """Keep the retained status (with exact drop counters) current; it is re-published
        after every reconnect, since a broker restart may lose retained messages."""
        status_topic = gateway_topic(self.config().plant, "status")
        published: dict[str, int] = {}
        last_status = 0.0
        loop = asyncio.get_running_loop()
        self.alarms.seed(self.stack.destination_stats())
        seen_devices: dict[str, str] = {}
        refusing: set[str] = set()
        while True:
            if self.alarms.check(self.stack.destination_stats()):
                last_status = 0.0
            devices = self.devices.statuses()
            if devices != seen_devices:  # a device went down, degraded or back: say so now
                seen_devices, last_status = devices, 0.0
            # a machine whose values the signer starts refusing: said at once, but once (its
            # counts then ride on the periodic status, not one publish per refused poll)
            machines = set(self.stack.unsignable.by_machine())
            if not machines <= refusing:
                refusing, last_status = machines, 0.0
            for name, tr in self.stack.signed_transports().items():
                if tr.connected and published.get(name) != tr.stats["reconnects"]:
                    published[name] = tr.stats["reconnects"]
                    last_status = 0.0  # a new link gets the detailed status at once
            if loop.time() - last_status >= self.every:
                last_status = loop.time()
                detail, loaded = self.detail(), self.config()
                signed = self.stack.signed_transports()
                for dest in self.stack.plan.destinations:  # each sees its own part only
                    link = signed.get(dest.id)
                    if link is not None and link.connected:
                        payload = status_payload(loaded, "online", detail, dest)
                        self.supervisor.spawn(
                            link.publish(status_topic, payload, qos=1, retain=True))
                        self.alarms.carried(dest.id)
            await asyncio.sleep(1.0)
