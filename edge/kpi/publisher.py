"""Publish OEE on the retained `oee` stream: every machine's current shift at least every
`publish_every` seconds, and each shift once more, closed, when it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge.config.loader import LoadedPlant
from edge.devices.fleet import FleetView
from edge.egress.stack import RecordSink
from edge.kpi.service import KpiService
from models.plant import machine_topic
from models.sample import utc_now

EnergyBlock = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""The energy figures of an `oee` record's window, for metered machines (edge/parts/)."""


RECORDS_PER_STEP = 8
"""`oee` records sealed per event-loop step."""


class OeePublisher:
    def __init__(
        self,
        kpi: KpiService,
        fleet: FleetView,
        sink: RecordSink,
        config: Callable[[], LoadedPlant],
        energy: EnergyBlock | None = None,
    ) -> None:
        self.kpi = kpi
        self.fleet = fleet
        self.sink = sink
        self.config = config
        self.energy = energy

    async def publish_due(self) -> None:
        """Seal what the tick made due; every `publish_every` that is one record per
        machine, so the loop lets device polls in between (500 seals in one step held them
        ~0.2 s, issue 17), as the tick itself does (`KpiService.tick_in_steps`)."""
        for n, (asset, record) in enumerate(await self.kpi.tick_in_steps()):
            if n % RECORDS_PER_STEP == RECORDS_PER_STEP - 1:
                await asyncio.sleep(0)
            try:
                machine = self.fleet.device(asset).machine
            except KeyError:  # not running (or stopped by a reload meanwhile)
                continue
            topic = machine_topic(self.config().plant, machine, "oee")
            block = None if self.energy is None else self.energy(asset, record)
            extra = {} if block is None else {"energy": block}
            self.sink.emit(topic, asset, "oee", [{**record, **extra}])

    async def run(self) -> None:
        while True:
            await self.publish_due()
            delay = (self.kpi.next_due() - utc_now()).total_seconds()
            await asyncio.sleep(min(5.0, max(0.05, delay)))
