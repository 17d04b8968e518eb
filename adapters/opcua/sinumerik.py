"""`profile: sinumerik`: the SINUMERIK 840D sl / ONE OPC UA server mapped to the normalized state.

The server of "SINUMERIK Access MyMachine / OPC UA" maps the NC's variables into the
namespace `SinumerikVarProvider`, below an object `Sinumerik`, with string NodeIds that
*are* the NC variable paths of the List Manual "NC variables and interface signals"
(`/Channel/State/progStatus` is `nsu=SinumerikVarProvider;s=/Channel/State/progStatus`), the
first unit (channel 1, mode group 1, spindle 1) when no `[u<n>,...]` index is written.
Sources, and what could not be checked, are listed in adapters/opcua/README.md.

Each variable is resolved by its documented NodeId first; a server that spells a module
differently (`ProgramInfo` vs `Programinfo` have both been seen in published client
configurations) is then browsed from `Sinumerik` comparing names case-insensitively. A
variable found neither way is left out (logged once); the others still work.

Mapping, as applied here:

- /Channel/State/progStatus (1 interrupted, 2 stopped, 3 in progress, 4 waiting, 5 aborted)
  -> `execution`: `interrupted` (`feed_hold` when the feed override is 0),
  `program_stopped`, `active`, `wait`, `ready`;
- /Bag/State/opMode (0 JOG, 1 MDA, 2 AUTOMATIC) -> `controller_mode`: `manual`, `mdi`,
  `automatic`;
- /Channel/ProgramInfo/selectedWorkPProg (`/_N_MPF_DIR/_N_PART1_MPF`) -> `program`
  (`PART1.MPF`) and `program_path` (the path as given);
- /Channel/State/actParts, reqParts ($AC_ACTUAL_PARTS, $AC_REQUIRED_PARTS) -> `part_count`,
  `required_parts`;
- /Channel/Spindle/actSpeed, driveLoad, speedOvr -> `spindle_speed` (1/min), `spindle_load`
  (%), `spindle_override` (%); /Channel/State/feedRateIpoOvr -> `feed_override` (%).

progStatus 5 ("aborted") is what a channel shows after RESET, including after M30 at the
end of every program; it is the idle state of the control, so it maps to `ready`, not to an
unplanned stop. Alarms come as OPC UA Alarms & Conditions events from the Server object
(alarms.py), like every profile's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from models.machine_state import (
    SIG_AVAILABILITY,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    SIG_PROGRAM,
    Availability,
    ControllerMode,
    Execution,
)
from models.sample import Value

from .machine_tool import as_int
from .profile_signals import SINUMERIK_PASS_THROUGH as PASS_THROUGH
from .profile_signals import SINUMERIK_PROGRAM_PATH

_T = TypeVar("_T")
SINUMERIK_URI = "SinumerikVarProvider"
ROOT_NAME = "Sinumerik"

# NC variable path -> input key of `derive()`
VARIABLES: dict[str, str] = {
    "/Channel/State/progStatus": "prog_status",
    "/Bag/State/opMode": "op_mode",
    "/Channel/ProgramInfo/selectedWorkPProg": "program",
    "/Channel/State/actParts": "act_parts",
    "/Channel/State/reqParts": "req_parts",
    "/Channel/Spindle/actSpeed": "spindle_speed",
    "/Channel/Spindle/driveLoad": "spindle_load",
    "/Channel/Spindle/speedOvr": "spindle_override",
    "/Channel/State/feedRateIpoOvr": "feed_override",
}
_PROG_STATUS = {
    1: Execution.INTERRUPTED,
    2: Execution.PROGRAM_STOPPED,
    3: Execution.ACTIVE,
    4: Execution.WAIT,
    5: Execution.READY,
}
_OP_MODE = {0: ControllerMode.MANUAL, 1: ControllerMode.MDI, 2: ControllerMode.AUTOMATIC}


@dataclass
class SinumerikNodes:
    """What resolution found: input key -> node, and the paths it could not find."""

    inputs: dict[str, ua.NodeId] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


async def _browse(client: Client, root: ua.NodeId, path: str) -> ua.NodeId | None:
    """Follow `path`'s segments from `root` by browse name, ignoring case."""
    node = root
    for segment in path.strip("/").split("/"):
        refs = await client.get_node(node).get_references(
            refs=ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
        )
        match = next((r.NodeId for r in refs if r.BrowseName.Name.lower() == segment.lower()),
                     None)
        if match is None:
            return None
        node = match
    return node


async def _root(client: Client, ns: int) -> ua.NodeId | None:
    objects = client.get_node(ua.NodeId(ObjectIds.ObjectsFolder, 0))  # type: ignore[arg-type]
    for ref in await objects.get_references(
        refs=ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
    ):
        if ref.BrowseName.Name == ROOT_NAME and ref.NodeId.NamespaceIndex == ns:
            found: ua.NodeId = ref.NodeId
            return found
    return None


async def resolve(client: Client, ns: Mapping[str, int]) -> SinumerikNodes:
    """Find every variable of the mapping; LookupError when this is no SINUMERIK server."""
    if SINUMERIK_URI not in ns:
        raise LookupError(
            f"the server has no {SINUMERIK_URI} namespace: not a SINUMERIK OPC UA server "
            "(or the NC variables are not licensed/enabled)"
        )
    index = ns[SINUMERIK_URI]
    documented = {path: ua.NodeId(path, index) for path in VARIABLES}  # type: ignore[arg-type]
    nodes = [client.get_node(n) for n in documented.values()]
    results = await client.read_attributes(nodes, AttributeIds.NodeClass)
    found = SinumerikNodes()
    root: ua.NodeId | None = None
    for (path, nodeid), result in zip(documented.items(), results, strict=True):
        if result.StatusCode is None or result.StatusCode.is_good():
            found.inputs[VARIABLES[path]] = nodeid
            continue
        if root is None:
            root = await _root(client, index)
        browsed = await _browse(client, root, path) if root is not None else None
        if browsed is None:
            found.missing.append(path)
        else:
            found.inputs[VARIABLES[path]] = browsed
    if not found.inputs:
        raise LookupError(
            f"none of the NC variables ({', '.join(VARIABLES)}) is on the server, neither by "
            f"NodeId nor below Objects/{ROOT_NAME}"
        )
    return found


def _lookup(table: Mapping[int, _T], raw: Any) -> _T | None:
    code = as_int(raw)
    return None if code is None else table.get(code)


def program_name(path: str) -> str:
    """`/_N_WKS_DIR/_N_SHAFT_WPD/_N_MAIN_MPF` -> `MAIN.MPF` (the name SINUMERIK Operate shows)."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last.startswith("_N_"):
        last = last[3:]
    stem, sep, ext = last.rpartition("_")
    return f"{stem}.{ext}" if sep and stem and ext.isalpha() and len(ext) == 3 else last


def derive(inputs: Mapping[str, Any]) -> dict[str, tuple[Value, str | None]]:
    """Normalized signals (name -> (value, unit)) from the raw NC values seen so far."""
    out: dict[str, tuple[Value, str | None]] = {SIG_AVAILABILITY: (Availability.AVAILABLE.value,
                                                                   None)}
    status = _lookup(_PROG_STATUS, inputs.get("prog_status"))
    if status is Execution.INTERRUPTED:
        feed = inputs.get("feed_override")
        if isinstance(feed, int | float) and not isinstance(feed, bool) and feed == 0:
            status = Execution.FEED_HOLD
    if status is not None:
        out[SIG_EXECUTION] = (status.value, None)
    mode = _lookup(_OP_MODE, inputs.get("op_mode"))
    if mode is not None:
        out[SIG_MODE] = (mode.value, None)
    program = inputs.get("program")
    if isinstance(program, str) and program:
        out[SIG_PROGRAM] = (program_name(program), None)
        out[SINUMERIK_PROGRAM_PATH] = (program, None)
    parts = as_int(inputs.get("act_parts"))
    if parts is not None and parts >= 0:
        out[SIG_PART_COUNT] = (parts, None)
    for key, (signal, unit) in PASS_THROUGH.items():
        v = inputs.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[signal] = (v, unit)
    return out
