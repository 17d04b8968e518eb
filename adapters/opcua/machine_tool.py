"""`profile: machinery` and `profile: machine_tool`: find an OPC 40001-1 Machinery machine
(and, for machine_tool, its OPC 40501-1 Machine Tools building blocks) and map it to the
normalized state.

`machinery` looks only for what OPC 40001-1 gives every machine, whatever it makes:
identification (MachineIdentificationType), MachineryItemState and MachineryOperationMode,
so a plastics, robot or packaging cell is mapped as far as Machinery goes. `machine_tool`
adds the 40501 roles (monitoring, channel, spindle, program, job, statistics, notification).

Discovery is by type definition, never by browse-name namespace: the Machinery example
NodeSet puts MachineryItemState in the example's own namespace, and vendors subtype the
standard types (an ENGEL identification is a MachineIdentificationType, a machine tool's a
MachineToolIdentificationType). So the adapter asks the server for every subtype of each
standard type (HasSubtype, recursively), walks the machine's hierarchical references
(HasComponent, HasAddIn, Organizes...) breadth-first, and gives each object the role of the
first standard type its type definition derives from. Properties inside a role object are
then matched by browse *name* only (their namespace differs between DI, Machinery and
vendor models).

Mapping to the normalized state (OPC 40501-1 Annex C, as the gateway applies it; the
combination is needed because MachineryItemState alone cannot tell an interrupted program
from a finished one):

| MachineryItemState | ActiveProgram State | -> execution |
|---|---|---|
| NotAvailable | any | (none); availability `unavailable` |
| OutOfService | any | `stopped` |
| Executing | Running (or absent) | `active` |
| Executing | Interrupted | `interrupted` (`feed_hold` when Channel FeedOverride is 0) |
| Executing / NotExecuting | Aborted | `program_stopped` |
| NotExecuting | Ended | `program_completed` |
| NotExecuting | Interrupted | `interrupted` |
| NotExecuting | Initializing / absent | `ready` |

Controller mode: Channel ChannelMode (Automatic -> automatic, MdaMdi -> mdi, JogManual /
JogIncrement / TeachingHandle -> manual), refined by MachineTool OperationMode
AutoWithManualIntervention -> semi_automatic; without a channel, OperationMode (Manual,
Setup, Service -> manual, Automatic -> automatic), else MachineryOperationMode
(Processing -> automatic, Setup / Maintenance -> manual).
Part counts: the production job's PartsCompleted (part_count) and PartsCompleted -
PartsGood (bad_part_count); without a job, Statistics PartsProducedInLifetime.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds

from models.machine_state import (
    SIG_AVAILABILITY,
    SIG_BAD_PART_COUNT,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    SIG_PROGRAM,
    Availability,
    ControllerMode,
    Execution,
)
from models.sample import Value

from .profile_signals import IDENTIFICATION
from .profile_signals import MACHINE_TOOL_PASS_THROUGH as PASS_THROUGH

MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"
IA_URI = "http://opcfoundation.org/UA/IA/"
MACHINES_FOLDER = 1001  # Machinery: Objects/Machines

# role -> (namespace uri, numeric id of the standard base type)
ROLE_TYPES: dict[str, tuple[str, int]] = {
    "identification": (MACHINERY_URI, 1012),  # MachineIdentificationType
    "item_state": (MACHINERY_URI, 1002),  # MachineryItemState_StateMachineType
    "operation_mode_sm": (MACHINERY_URI, 1008),  # MachineryOperationModeStateMachineType
    "components": (MACHINERY_URI, 1006),  # MachineComponentsType: not descended into
    "machine_tool": (MACHINE_TOOL_URI, 26),  # MachineOperationMonitoringType
    "channel": (MACHINE_TOOL_URI, 16),  # ChannelMonitoringType
    "spindle": (MACHINE_TOOL_URI, 22),  # SpindleMonitoringType
    "active_program": (MACHINE_TOOL_URI, 32),  # ProductionActiveProgramType
    "program_state": (MACHINE_TOOL_URI, 15),  # ProductionProgramStateMachineType
    "job": (MACHINE_TOOL_URI, 29),  # ProductionJobType
    "statistics": (MACHINE_TOOL_URI, 20),  # ProductionStatisticsType
    "stacklight": (IA_URI, 1002),  # BasicStacklightType
    "notification": (MACHINE_TOOL_URI, 7),  # NotificationType
    "tool_list": (MACHINE_TOOL_URI, 44),  # ToolListType: not descended into
}
_NO_DESCENT = frozenset({"components", "tool_list"})
MACHINERY_ROLES: dict[str, tuple[str, int]] = {
    role: spec for role, spec in ROLE_TYPES.items() if spec[0] == MACHINERY_URI
}
"""What `profile: machinery` looks for: the OPC 40001-1 building blocks only."""

# (role, variable browse name) -> input key of `derive()`; first match in BFS order wins
INPUTS: dict[tuple[str, str], str] = {
    ("item_state", "CurrentState"): "item_state",
    ("operation_mode_sm", "CurrentState"): "operation_mode_sm",
    ("machine_tool", "OperationMode"): "operation_mode",
    ("channel", "ChannelState"): "channel_state",
    ("channel", "ChannelMode"): "channel_mode",
    ("channel", "FeedOverride"): "feed_override",
    ("spindle", "IsRotating"): "spindle_rotating",
    ("spindle", "Override"): "spindle_override",
    ("active_program", "Name"): "program",
    ("program_state", "CurrentState"): "program_state",
    ("job", "PartsCompleted"): "parts_completed",
    ("job", "PartsGood"): "parts_good",
    ("job", "Identifier"): "job",
    ("statistics", "PartsProducedInLifetime"): "parts_lifetime",
    ("machine_tool", "PartsProducedInLifetime"): "parts_lifetime",
}
# a bit mask on the wire; asyncua types the parameter as the (non-flag) NodeClass enum
_OBJECTS_AND_VARIABLES = cast(ua.NodeClass, ua.NodeClass.Object | ua.NodeClass.Variable)
_MAX_NODES = 2000
_MAX_DEPTH = 5


@dataclass
class MachineToolNodes:
    """What discovery found for one machine."""

    machine: ua.NodeId
    name: str
    roles: dict[str, ua.NodeId] = field(default_factory=dict)
    inputs: dict[str, ua.NodeId] = field(default_factory=dict)
    identification: dict[str, ua.NodeId] = field(default_factory=dict)


def node_id(ident: int | str, ns: int) -> ua.NodeId:
    """asyncua's NodeId is typed with its own Int32/Int16 classes; plain ints are what it takes."""
    return ua.NodeId(ident, ns)  # type: ignore[arg-type]


async def _subtypes(client: Client, base: ua.NodeId) -> set[ua.NodeId]:
    """`base` and every type deriving from it, as this server defines them."""
    out = {base}
    todo = [base]
    while todo:
        node = client.get_node(todo.pop())
        for ref in await node.get_references(
            refs=ObjectIds.HasSubtype, direction=ua.BrowseDirection.Forward
        ):
            if ref.NodeId not in out:
                out.add(ref.NodeId)
                todo.append(ref.NodeId)
    return out


async def list_machines(client: Client, ns: Mapping[str, int]) -> list[tuple[str, ua.NodeId]]:
    """(browse name, node id) of every object organized below Machinery's Machines folder."""
    folder = client.get_node(node_id(MACHINES_FOLDER, ns[MACHINERY_URI]))
    refs = await folder.get_references(
        refs=ObjectIds.HierarchicalReferences,
        direction=ua.BrowseDirection.Forward,
        nodeclassmask=ua.NodeClass.Object,
    )
    return [(r.BrowseName.Name, r.NodeId) for r in refs]


async def discover(
    client: Client, ns: Mapping[str, int], machine: str | None,
    roles: Mapping[str, tuple[str, int]] = ROLE_TYPES,
) -> MachineToolNodes:
    """Find the machine and the building blocks of `roles`; LookupError says why not."""
    if MACHINERY_URI not in ns:
        raise LookupError(f"the server has no Machinery namespace ({MACHINERY_URI})")
    machines = await list_machines(client, ns)
    if not machines:
        raise LookupError("Machines folder is empty")
    chosen = [m for m in machines if machine is None or m[0] == machine]
    if not chosen:
        raise LookupError(
            f"no machine {machine!r} below Machines; found {', '.join(m[0] for m in machines)}"
        )
    name, root = chosen[0]
    type_role: dict[ua.NodeId, str] = {}
    for role_name, (uri, ident) in roles.items():
        if uri in ns:
            for t in await _subtypes(client, node_id(ident, ns[uri])):
                type_role.setdefault(t, role_name)
    found = MachineToolNodes(root, name)
    seen = {root}
    queue: deque[tuple[ua.NodeId, str | None, int]] = deque([(root, None, 0)])
    while queue and len(seen) < _MAX_NODES:
        nodeid, role, depth = queue.popleft()
        refs = await client.get_node(nodeid).get_references(
            refs=ObjectIds.HierarchicalReferences,
            direction=ua.BrowseDirection.Forward,
            nodeclassmask=_OBJECTS_AND_VARIABLES,
        )
        for ref in refs:
            child = ref.NodeId
            if child in seen:
                continue
            seen.add(child)
            bname = ref.BrowseName.Name
            if ref.NodeClass == ua.NodeClass.Object:
                child_role = type_role.get(ref.TypeDefinition)
                if role == "notification" and bname == "Messages":
                    # OPC 40501-1: the event notifier of the machine's alarms and messages
                    found.roles.setdefault("messages", child)
                if child_role is not None:
                    found.roles.setdefault(child_role, child)
                if child_role in _NO_DESCENT or depth + 1 >= _MAX_DEPTH:
                    continue
                queue.append((child, child_role or role, depth + 1))
                continue
            if role is None:
                continue
            key = INPUTS.get((role, bname))
            if key is not None and key not in found.inputs:
                found.inputs[key] = child
            if (
                role == "identification"
                and found.roles.get("identification") == nodeid
                and bname in IDENTIFICATION
            ):
                found.identification.setdefault(bname, child)
            if depth + 1 < _MAX_DEPTH:
                queue.append((child, role, depth + 1))
    return found


def text(value: Any) -> str | None:
    """LocalizedText, QualifiedName or plain value as text."""
    if value is None:
        return None
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    return str(value)


def as_int(value: Any) -> int | None:
    """An integer input, or None for booleans, absent or non-numeric values."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_CHANNEL_MODE = {
    0: ControllerMode.AUTOMATIC,
    1: ControllerMode.MDI,
    2: ControllerMode.MANUAL,
    3: ControllerMode.MANUAL,
    4: ControllerMode.MANUAL,
}
_OPERATION_MODE = {
    0: ControllerMode.MANUAL,
    1: ControllerMode.AUTOMATIC,
    2: ControllerMode.MANUAL,
    3: ControllerMode.SEMI_AUTOMATIC,
    4: ControllerMode.MANUAL,
}
_OPERATION_MODE_SM = {
    "Processing": ControllerMode.AUTOMATIC,
    "Setup": ControllerMode.MANUAL,
    "Maintenance": ControllerMode.MANUAL,
}


def execution(inputs: Mapping[str, Any]) -> tuple[Availability | None, Execution | None]:
    """The Annex C table of the module docstring."""
    item = text(inputs.get("item_state"))
    prog = text(inputs.get("program_state"))
    if item == "NotAvailable":
        return Availability.UNAVAILABLE, None
    avail = Availability.AVAILABLE if item else None
    if item == "OutOfService":
        return avail, Execution.STOPPED
    if prog == "Aborted":
        return avail, Execution.PROGRAM_STOPPED
    if prog == "Interrupted":
        feed = inputs.get("feed_override")
        held = isinstance(feed, int | float) and not isinstance(feed, bool) and feed == 0
        return avail, Execution.FEED_HOLD if held else Execution.INTERRUPTED
    if item == "Executing":
        return avail, Execution.ACTIVE
    if item == "NotExecuting":
        return avail, Execution.PROGRAM_COMPLETED if prog == "Ended" else Execution.READY
    if prog == "Running":
        return avail, Execution.ACTIVE
    return avail, None


def controller_mode(inputs: Mapping[str, Any]) -> ControllerMode | None:
    op = as_int(inputs.get("operation_mode"))
    ch = as_int(inputs.get("channel_mode"))
    if op == 3:
        return ControllerMode.SEMI_AUTOMATIC
    if ch is not None and ch in _CHANNEL_MODE:
        return _CHANNEL_MODE[ch]
    if op is not None and op in _OPERATION_MODE:
        return _OPERATION_MODE[op]
    sm = text(inputs.get("operation_mode_sm"))
    return _OPERATION_MODE_SM.get(sm or "")


def derive(inputs: Mapping[str, Any]) -> dict[str, tuple[Value, str | None]]:
    """Normalized signals (name -> (value, unit)) from the raw inputs seen so far."""
    out: dict[str, tuple[Value, str | None]] = {}
    avail, ex = execution(inputs)
    if avail is not None:
        out[SIG_AVAILABILITY] = (avail.value, None)
    if ex is not None:
        out[SIG_EXECUTION] = (ex.value, None)
    mode = controller_mode(inputs)
    if mode is not None:
        out[SIG_MODE] = (mode.value, None)
    if "program" in inputs:
        out[SIG_PROGRAM] = (text(inputs["program"]), None)
    done = as_int(inputs.get("parts_completed"))
    good = as_int(inputs.get("parts_good"))
    if done is not None:
        out[SIG_PART_COUNT] = (done, None)
        if good is not None:
            out[SIG_BAD_PART_COUNT] = (max(0, done - good), None)
    elif (life := as_int(inputs.get("parts_lifetime"))) is not None:
        out[SIG_PART_COUNT] = (life, None)
    for key, (signal, unit) in PASS_THROUGH.items():
        if key in inputs:
            v = inputs[key]
            out[signal] = (v if isinstance(v, bool | int | float) else text(v), unit)
    return out
