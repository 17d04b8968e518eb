"""SIGHUP: apply a changed plant YAML without harm.

1. Read, parse and validate off the event loop (the loader refuses huge files, deep nesting
   and alias bombs), then check every referenced file (edge/daemon/preflight.py).
2. Prepare what the change needs (a new egress side, or the platform keys) completely,
   still touching nothing that runs. Any failure: one error line, the running
   configuration stays.
3. Commit, restarting only what changed: machines whose YAML or settings changed; the
   egress side when destinations or the gateway's identity, directories or batching
   changed (devices keep running: their records are held and go to the new side);
   platforms and `gateway.query` go to the query handler at once; `gateway.oee`,
   `gateway.capacity`, shifts and cycle times go to the KPI service, restarting nothing.
   `gateway.poll_slots` restarts nothing either: machines the reload starts (changed or
   added) get their phase under the new setting, the others keep theirs.
   The exception is a changed worker count: machines change processes, so the gateway
   stops as on SIGTERM and execs itself again (edge/cli.py), which moves their state
   first (edge/daemon/repartition.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edge.config.loader import LoadedPlant
from edge.config.workers import as_worker, workers_for
from edge.daemon.preflight import load_for_reload
from edge.egress.stack import EgressPlan, prepare_egress
from edge.query.handler import PlatformKeys, load_platform_keys
from models.errors import ConfigurationError, PlantConfigError
from models.plant import Destination

if TYPE_CHECKING:
    from edge.daemon.gateway import Gateway

# gateway fields only the KPI service, capacity, part records, the query handler, logging,
# the devices' poll phases, the status page (read at start; a reload keeps the running page)
# or the worker count (its own path, `_workers_changed`) read: a change to them restarted
# the egress side for nothing
_NOT_EGRESS = {"oee", "capacity", "query", "log_format", "carbon", "poll_slots", "web", "workers"}


def egress_inputs(loaded: LoadedPlant, destinations: list[Destination]) -> dict[str, Any]:
    """What the egress side is built from; a reload restarts egress only when this differs
    (`destinations` as the run uses them: `--broker` replaces the YAML's)."""
    return {
        "gateway": loaded.plant.gateway.model_dump(exclude=_NOT_EGRESS),
        "destinations": [d.model_dump() for d in destinations],
        "state_dir": str(loaded.state_dir),
        "keys_dir": str(loaded.keys_dir),
    }


class Reloader:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.committing = False

    async def apply(self) -> None:
        gw = self.gw
        old = gw.loaded
        gw.log.info("reload_started", file=str(old.path))
        try:
            new = await load_for_reload(old.path, old.share)
            if old.worker is not None:  # a worker process keeps its slice of the machines
                new = as_worker(new, old.worker)
        except PlantConfigError as exc:
            gw.log.error(
                "reload_rejected_keeping_running_config", problems=exc.lines()
            )
            return
        except Exception:  # a bug in a check must not end the daemon nor pass silently
            gw.log.exception("reload_failed_keeping_running_config")
            return
        if old.worker is None and self._workers_changed(new):
            return
        egress_changed = egress_inputs(old, gw.destinations(old)) != egress_inputs(
            new, gw.destinations(new)
        )
        plan: EgressPlan | None = None
        try:
            keys = await asyncio.to_thread(load_platform_keys, new.plant.platforms)
            if egress_changed:
                plan = await asyncio.to_thread(
                    prepare_egress, new, gw.destinations(new), gw.log
                )
        except ConfigurationError as exc:
            gw.log.error("reload_preparation_failed_keeping_running_config", error=str(exc))
            return
        self.committing = True
        try:
            await self._commit(old, new, plan, keys)
        finally:
            self.committing = False

    def _workers_changed(self, new: LoadedPlant) -> bool:
        """One process asked to become several (`gateway.workers`): stop, and the command
        starts again as a pool (edge/cli.py), the machines' state moved first. True when
        the gateway is now stopping (or the count is refused: logged, nothing changes)."""
        gw = self.gw
        try:
            count = workers_for(new, gw.options.workers)
        except ConfigurationError as exc:
            gw.log.error("reload_preparation_failed_keeping_running_config", error=str(exc))
            return True
        if count == 1:
            return False
        gw.log.warning("workers_changed_restarting", running=1, workers=count)
        gw.restart_with_workers(count)
        return True

    async def _commit(
        self,
        old: LoadedPlant,
        new: LoadedPlant,
        plan: EgressPlan | None,
        keys: PlatformKeys,
    ) -> None:
        gw = self.gw
        stopped = gw.fleet.changed(old, new)
        gw.loaded = new
        for asset in stopped:
            await gw.fleet.stop(asset)
        old_keys = gw.queries.keys
        gw.queries.reconfigure(new.plant, keys)  # effective with the next request
        held, dropped = 0, gw.slot.dropped
        failed: Exception | None = None
        if plan is not None:
            running = gw.slot.current.plan if gw.slot.current is not None else None
            await gw.stop_egress(old)
            if running is not None:  # Sparkplug: the next session is this process's next
                plan.continue_sessions(running)
            try:
                held = await gw.start_egress(plan)
            except Exception as exc:  # prepared, yet the outbox did not open (disk): go back
                failed = exc
                gw.log.exception("reload_egress_start_failed_restoring_previous")
                gw.loaded = new = old
                gw.queries.reconfigure(old.plant, old_keys)
                restored = prepare_egress(old, gw.destinations(old), gw.log)
                restored.continue_sessions(plan)
                held = await gw.start_egress(restored)
        elif gw.slot.current is not None:
            gw.slot.current.reload_signing_key()
        gw.kpi.reconfigure(new.plant)
        gw.parts.reconfigure()
        started = gw.fleet.start_missing()
        if failed is not None:  # the running configuration again: counted as refused
            gw.log.error("reload_failed_restored_running_config", error=str(failed),
                         devices_restarted=started)
            return
        gw.log.info(
            "reloaded",
            machines=len(gw.fleet.assets()),
            egress_restarted=plan is not None,
            records_held_during_swap=held,
            records_dropped_during_swap=gw.slot.dropped - dropped,
            devices_stopped=stopped,
            devices_started=started,
            platforms=sorted({p.id for p in new.plant.platforms}),
        )
