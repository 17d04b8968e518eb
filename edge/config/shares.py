"""One plant YAML, several gateway hosts: each serves a named share of the machines.

Why this design: a plant outgrowing one host keeps one file (one review, one schema, one
source of truth for topics and shifts); `gateways:` lists the hosts' gateway ids and every
machine names the one that serves it (`machines[].gateway`). A machine names exactly one
gateway, so no machine can be served twice, and `validate` checks that every machine is
assigned, every named gateway is listed and no share is empty. A host picks its share with
`run --gateway-id ID` or $EDGE_GATEWAY_ID (default: `gateway.id`); it then runs with that
id (its own MQTT client ids, status topic and signing key, whose default directory lives
under a per-share state directory) and only that share's machines, which its status payload
and `describe` list.
"""

from __future__ import annotations

import os

from models.errors import ConfigProblem, PlantConfigError
from models.plant import Plant

ENV_VAR = "EDGE_GATEWAY_ID"

Loc = tuple[int | str, ...]


def share_problems(plant: Plant) -> list[tuple[Loc, str]]:
    """What is wrong with the split, each with the YAML path it is about (empty: fine)."""
    problems: list[tuple[Loc, str]] = []
    ids = plant.gateways
    if not ids:
        for i, m in enumerate(plant.machines):
            if m.gateway is not None:
                problems.append((("machines", i, "gateway"),
                                 f"names gateway {m.gateway!r} but the plant has no "
                                 "'gateways' list to split it over"))
        return problems
    for j, gid in enumerate(ids):
        if gid in ids[:j]:
            problems.append((("gateways", j), f"gateway {gid!r} is listed twice"))
    if plant.gateway.id not in ids:
        problems.append((("gateway", "id"), f"{plant.gateway.id!r} is not one of gateways "
                         f"({', '.join(ids)}): it is the share served by default"))
    for i, m in enumerate(plant.machines):
        if m.gateway is None:
            problems.append((("machines", i), f"machine {m.id!r} names no gateway: with "
                             f"'gateways' set, each machine needs `gateway: <one of "
                             f"{', '.join(ids)}>`, or no host would serve it"))
        elif m.gateway not in ids:
            problems.append((("machines", i, "gateway"), f"{m.gateway!r} is not one of "
                             f"gateways ({', '.join(ids)})"))
    for j, gid in enumerate(ids):
        if gid not in ids[:j] and not any(m.gateway == gid for m in plant.machines):
            problems.append((("gateways", j), f"gateway {gid!r} serves no machine"))
    served_by = {m.id: m.gateway for m in plant.machines}
    for i, m in enumerate(plant.machines):
        # a meter feeds its machine's part records and OEE windows, kept by the machine's
        # gateway only: on another host its readings would reach nothing
        metered = served_by.get(m.meter_for) if m.meter_for is not None else None
        if metered is not None and m.gateway is not None and m.gateway != metered:
            problems.append((("machines", i, "gateway"), f"meter {m.id!r} is served by "
                             f"{m.gateway!r} but the machine it meters, {m.meter_for!r}, by "
                             f"{metered!r}: its readings go into that machine's part records "
                             "and OEE windows, so give both the same gateway"))
    return problems


def shares(plant: Plant) -> dict[str, list[str]]:
    """`{gateway id: [machine ids]}` in the YAML's order; one share when not split."""
    if not plant.gateways:
        return {plant.gateway.id: [m.id for m in plant.machines]}
    return {g: [m.id for m in plant.machines if m.gateway == g] for g in plant.gateways}


def chosen_share(plant: Plant, requested: str | None, file: str) -> str | None:
    """The share this host serves: `requested` (--gateway-id), else $EDGE_GATEWAY_ID, else
    `gateway.id`; None when the plant is not split. PlantConfigError for an unknown id."""
    wanted = requested or os.environ.get(ENV_VAR) or None
    if not plant.gateways:
        if wanted is not None and wanted != plant.gateway.id:
            raise PlantConfigError([ConfigProblem(
                file, None, None, "gateways",
                f"gateway id {wanted!r} was asked for (--gateway-id or ${ENV_VAR}) but this "
                "plant is not split over several gateways")])
        return None
    wanted = wanted or plant.gateway.id
    if wanted not in plant.gateways:
        raise PlantConfigError([ConfigProblem(
            file, None, None, "gateways",
            f"gateway id {wanted!r} is not one of gateways ({', '.join(plant.gateways)})")])
    return wanted


def narrow(plant: Plant, share: str) -> Plant:
    """The plant as the host serving `share` sees it: that gateway id, that share's machines."""
    gateway = plant.gateway.model_copy(update={"id": share})
    machines = [m for m in plant.machines if m.gateway == share]
    return plant.model_copy(update={"gateway": gateway, "machines": machines})


__all__ = ["ENV_VAR", "chosen_share", "narrow", "share_problems", "shares"]
