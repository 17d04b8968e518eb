"""What of the gateway-wide status one destination may see: the one place that decides it.

Why: the egress policy promises that what a destination may not see is never sent to it
(edge/egress/sealer.py; docs/protocol.md, "Egress policies"). The retained `status` (its
`online` birth and `offline` will too) and the `health` answer are built gateway-wide: every
machine, every destination with its broker address and counters, every data-loss alarm. A
platform reading one destination's broker must not learn from them that the plant also
ships to another destination (perhaps a competitor), that destination's broker, or the
existence and faults of machines its `machines` filter hides. So both are narrowed here,
before they leave, by the same rule:

- per machine (`machines`, `devices`, `device_reasons`, `device_faults`, `losses.by_machine`,
  `losses.unreported_by_machine`, `unsignable.by_machine`, each worker's `machines`): only
  the machines `sees` allows, and the totals beside them (`losses.lost_records`,
  `losses.unreported_gaps`, the `unsignable` counts) are the sums of what is left;
- per destination (`destinations`, the `outbox_full_losing_data:<id>` alarms): only the
  destination the message goes to (none when it went through no configured destination);
- everything else (`state`, `gateway`, `site`, `ts`, `version`, `queries`,
  the workers' pids and restarts) is the gateway's own and stays.

The status publisher passes a destination's `machines` filter (`Destination.machines`); the
query handler passes the platform already narrowed to that filter (edge/query/policy.py), so
`health` obeys both. The local status page and `/metrics` are the plant engineer's own view
and are never narrowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

LOSS_ALARM = "outbox_full_losing_data"
"""The data-loss alarm; `outbox_full_losing_data:<destination id>` in `alarms`."""

PER_MACHINE = ("devices", "device_reasons", "device_faults")
"""Maps keyed by machine id."""


class DeviceFaults(Protocol):
    """Why devices are not up: the fleet (edge/devices/fleet.py), or a worker's report of
    its share. Here, not beside the fleet: egress sits below devices (docs/architecture.md)."""

    def reasons(self) -> dict[str, str]: ...
    def faults(self) -> dict[str, dict[str, Any]]: ...


def device_detail(devices: DeviceFaults) -> dict[str, Any]:
    """The retained status's and `health`'s account of devices that are not up:
    `device_reasons` (one line each, in the log's words) and `device_faults` (the same with
    the error class, since when, failures and reconnects); both left out when all are up."""
    detail: dict[str, Any] = {}
    reasons, faults = devices.reasons(), devices.faults()
    if reasons:
        detail["device_reasons"] = reasons
    if faults:
        detail["device_faults"] = faults
    return detail


def loss_alarm(destination: str) -> str:
    """The name of `destination`'s data-loss alarm in `alarms`."""
    return f"{LOSS_ALARM}:{destination}"


def seen_by(
    status: Mapping[str, Any], destination: str | None, sees: Callable[[str], bool]
) -> dict[str, Any]:
    """`status` (the retained status or `health`, built gateway-wide) as `destination` may
    see it: machines `sees` allows, and `destination`'s own entry, alarm and counters only.
    Keys it does not know are kept (they are the gateway's own); a copy, `status` untouched."""
    out = dict(status)
    machines = out.get("machines")
    if isinstance(machines, list):
        out["machines"] = [m for m in machines if isinstance(m, str) and sees(m)]
    for key in PER_MACHINE:
        per_machine = out.get(key)
        if isinstance(per_machine, dict):
            out[key] = {a: v for a, v in per_machine.items() if sees(a)}
    destinations = out.get("destinations")
    if isinstance(destinations, dict):
        out["destinations"] = {d: v for d, v in destinations.items() if d == destination}
    alarms = out.get("alarms")
    if isinstance(alarms, list):
        out["alarms"] = [a for a in alarms if _alarm_shown(a, destination)]
    losses = out.get("losses")
    if isinstance(losses, dict):
        out["losses"] = _losses_seen(losses, sees)
    refused = out.get("unsignable")
    if isinstance(refused, dict) and isinstance(refused.get("by_machine"), dict):
        own = {a: n for a, n in refused["by_machine"].items() if sees(a)}
        out["unsignable"] = {
            **refused,
            "replaced": sum(n.get("replaced", 0) for n in own.values()),
            "dropped": sum(n.get("dropped", 0) for n in own.values()),
            "by_machine": own,
        }
    workers = out.get("workers")
    if isinstance(workers, list):
        out["workers"] = [
            {**w, "machines": [m for m in w["machines"] if sees(m)]}
            if isinstance(w, dict) and isinstance(w.get("machines"), list) else w
            for w in workers
        ]
    return out


def _losses_seen(losses: Mapping[str, Any], sees: Callable[[str], bool]) -> dict[str, Any]:
    """`losses` with each per-machine map narrowed to what `sees` allows, and the total
    beside it the sum of what is left."""
    out = dict(losses)
    for per_machine, total in (("by_machine", "lost_records"),
                               ("unreported_by_machine", "unreported_gaps")):
        counts = out.get(per_machine)
        if isinstance(counts, dict):
            mine = {a: n for a, n in counts.items() if sees(a)}
            out[per_machine], out[total] = mine, sum(mine.values())
    return out


def _alarm_shown(alarm: Any, destination: str | None) -> bool:
    """A destination's data-loss alarm is shown at that destination only; others stay."""
    if not isinstance(alarm, str):
        return True
    name, _, scope = alarm.partition(":")
    return name != LOSS_ALARM or scope == destination
