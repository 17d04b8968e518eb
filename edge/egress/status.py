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
from edge.devices.fleet import device_detail
from edge.egress.stack import EgressStack, Supervising, status_payload
from models.plant import gateway_topic


def _lost(st: dict[str, Any]) -> int:
    """Everything a destination lost: envelopes dropped or rejected, records never stored."""
    return int(st["dropped"] + st["rejected"] + st["lost_records"])


class DeviceStatuses(Protocol):
    def statuses(self) -> dict[str, str]: ...
    def reasons(self) -> dict[str, str]: ...
    def faults(self) -> dict[str, dict[str, Any]]: ...


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
        self.alarmed: set[str] = set()
        # alarms no status has carried over their own destination's link yet
        self.unseen: set[str] = set()

    def payload(self) -> bytes:
        detail: dict[str, Any] = {
            "destinations": self.stack.destination_stats(),
            "alarms": [f"outbox_full_losing_data:{d}" for d in sorted(self.alarmed)],
            "devices": self.devices.statuses(),
            "losses": self.stack.losses.snapshot(),
            "unsignable": self.stack.unsignable.snapshot(),
        }
        detail.update(device_detail(self.devices))
        return status_payload(self.config(), "online", detail)

    def _check_losses(self, losses: dict[str, int]) -> bool:
        """Raise or clear the alarm per destination; True when the status must go out now.

        An alarm raised while its destination was unreachable (the usual case: the outbox
        fills during an outage) stays up until a status carrying it has gone out on that
        destination's link: the backlog drains within a second of the reconnect, and the
        alarm used to clear before the first status, so the platform never saw it."""
        urgent = False
        for dest, st in self.stack.destination_stats().items():
            lost = _lost(st)
            # up while loss goes on: new drops, or storing still failing (edge/egress/loss.py)
            losing = lost > losses.get(dest, lost) or self.stack.losses.failing(dest)
            if losing and dest not in self.alarmed:
                self.alarmed.add(dest)  # the alarm: one error line, and `alarms` in the status
                self.unseen.add(dest)
                self.log.error("outbox_full_losing_data", destination=dest, **st)
                urgent = True
            elif not losing and dest in self.alarmed and dest not in self.unseen:
                self.alarmed.discard(dest)
                self.log.info("outbox_no_longer_losing_data", destination=dest, **st)
                urgent = True  # platforms see the alarm clear at once
            losses[dest] = lost
        return urgent

    async def run(self) -> None:
        """Keep the retained status (with exact drop counters) current; it is re-published
        after every reconnect, since a broker restart may lose retained messages."""
        status_topic = gateway_topic(self.config().plant, "status")
        published: dict[str, int] = {}
        last_status = 0.0
        loop = asyncio.get_running_loop()
        losses = {d: _lost(st) for d, st in self.stack.destination_stats().items()}
        seen_devices: dict[str, str] = {}
        refusing: set[str] = set()
        while True:
            if self._check_losses(losses):
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
                payload = self.payload()
                for name, tr in self.stack.signed_transports().items():
                    if tr.connected:
                        self.supervisor.spawn(tr.publish(status_topic, payload, qos=1, retain=True))
                        self.unseen.discard(name)
            await asyncio.sleep(1.0)
