"""`edge-gateway browse`: an OPC UA server's address space, ready to copy into a plant YAML.

Why: the adapter accepts only namespace-URI node ids (`nsu=...;s=...`), because bare
namespace indexes change when a server reloads its models, but every generic OPC UA browser
shows `ns=2;s=...`. This prints the tree with `nsu=` ids and data types, one YAML point
line per variable, and says which `profile:` maps the machine state without points: OPC 40501
(Machine Tools) -> `machine_tool`, OPC 40001 (Machinery) alone -> `machinery`, a SINUMERIK's
NC variables -> `sinumerik`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import (
    BadNodeIdUnknown,
    BadNoMatch,
    UaError,
    UaStringParsingError,
)

from adapters.opcua.adapter import node_id_of
from adapters.opcua.machine_tool import MACHINE_TOOL_URI, MACHINERY_URI, MACHINES_FOLDER, node_id
from adapters.opcua.settings import browse_segments
from adapters.opcua.sinumerik import SINUMERIK_URI
from models.plant import url_port_problem

OBJECTS = "i=85"
SERVER_OBJECT = node_id(ObjectIds.Server, 0)  # diagnostics of the server itself: thousands of nodes
# a bit mask on the wire; asyncua types the parameter as the (non-flag) enum
_CLASSES = cast(ua.NodeClass, ua.NodeClass.Object | ua.NodeClass.Variable)
MAX_NODES = 5000
"""Stop browsing past this many nodes: a whole vendor model would scroll for minutes."""


class BrowseError(Exception):
    """The server cannot be reached or browsed; the message says why."""


class BrowseInputError(BrowseError):
    """What the user typed is wrong (the endpoint's form, a start node that is no node id or
    is not on the server): a usage error, exit 2 like the other commands', not the server's
    fault."""


@dataclass
class BrowseNode:
    name: str
    node_id: str
    node_class: str
    data_type: str | None = None
    children: list[BrowseNode] = field(default_factory=list)


@dataclass
class BrowseTree:
    endpoint: str
    root: BrowseNode
    namespaces: list[str]
    machines: list[str]
    truncated: bool = False

    @property
    def machinery(self) -> bool:
        return MACHINERY_URI in self.namespaces

    @property
    def machine_tool(self) -> bool:
        return MACHINE_TOOL_URI in self.namespaces

    @property
    def sinumerik(self) -> bool:
        return SINUMERIK_URI in self.namespaces


def expanded_id(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """`nsu=<uri>;s=...` for any namespace but 0, whose ids stay `i=85`-style."""
    text = node_id.to_string()
    if node_id.NamespaceIndex == 0:
        return text
    _, _, rest = text.partition(";")
    return f"nsu={namespaces[node_id.NamespaceIndex]};{rest}"


def _parse(text: str, namespaces: list[str]) -> ua.NodeId:
    try:
        return node_id_of(text, {uri: i for i, uri in enumerate(namespaces)})
    except LookupError as exc:
        raise BrowseInputError(str(exc)) from None
    except (UaStringParsingError, ValueError):  # asyncua says it as a tuple repr
        raise BrowseInputError(
            f"{text!r} is not a node id: write i=85, nsu=URI;s=NAME (ns=2;s=NAME) or a "
            f"/Browse/Path"
        ) from None


class _Browser:
    def __init__(self, client: Client, namespaces: list[str], depth: int) -> None:
        self.client = client
        self.namespaces = namespaces
        self.depth = depth
        self.count = 0
        self.truncated = False
        self._type_names: dict[ua.NodeId, str] = {}

    async def type_name(self, type_id: ua.NodeId) -> str:
        if type_id not in self._type_names:
            if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int):
                name = ObjectIdNames.get(type_id.Identifier, type_id.to_string())
            else:
                name = (await self.client.get_node(type_id).read_browse_name()).Name
            self._type_names[type_id] = name
        return self._type_names[type_id]

    async def walk(self, node: Node, name: str, node_class: ua.NodeClass, level: int) -> BrowseNode:
        item = BrowseNode(name, expanded_id(node.nodeid, self.namespaces), node_class.name)
        if node_class == ua.NodeClass.Variable:
            try:
                item.data_type = await self.type_name(await node.read_data_type())
            except UaError:
                item.data_type = "?"
        if level >= self.depth:
            return item
        refs = await node.get_references(
            refs=ObjectIds.HierarchicalReferences,
            direction=ua.BrowseDirection.Forward,
            nodeclassmask=_CLASSES,
        )
        for ref in sorted(refs, key=lambda r: r.BrowseName.Name or ""):
            if ref.NodeId == SERVER_OBJECT:
                continue
            if self.count >= MAX_NODES:
                self.truncated = True
                break
            self.count += 1
            child = self.client.get_node(ref.NodeId)
            item.children.append(
                await self.walk(child, ref.BrowseName.Name or "?", ref.NodeClass, level + 1)
            )
        return item


async def _machines(client: Client, namespaces: list[str]) -> list[str]:
    """Machine names under Machinery's Objects/Machines folder (the adapter's `machine:`)."""
    if MACHINERY_URI not in namespaces:
        return []
    folder = client.get_node(node_id(MACHINES_FOLDER, namespaces.index(MACHINERY_URI)))
    try:
        refs = await folder.get_references(
            refs=ObjectIds.Organizes, direction=ua.BrowseDirection.Forward
        )
    except UaError:
        return []
    return sorted(r.BrowseName.Name for r in refs if r.BrowseName.Name)


async def browse(endpoint: str, path: str | None, depth: int, wait: float) -> BrowseTree:
    if not endpoint.startswith("opc.tcp://"):
        raise BrowseInputError(f"{endpoint!r}: expected opc.tcp://HOST:PORT[/path]")
    if (problem := url_port_problem(endpoint)) is not None:
        raise BrowseInputError(f"{endpoint!r}: {problem}")
    client = Client(endpoint, timeout=wait)
    client.session_timeout = 60_000  # ms; a browse takes seconds, not the default hour
    try:
        async with asyncio.timeout(wait * 2):
            await client.connect()
    except TimeoutError as exc:  # accepted the TCP connection and said nothing: no text
        raise BrowseError(
            f"cannot connect to {endpoint}: no OPC UA answer within {wait:g} s "
            "(another service on that port, or the server is frozen)"
        ) from exc
    except (OSError, UaError) as exc:
        why = str(exc) or type(exc).__name__
        raise BrowseError(f"cannot connect to {endpoint}: {why}") from exc
    try:
        namespaces = list(await client.get_namespace_array())
        start = path or OBJECTS
        if start.startswith("/"):
            qualified = []
            for uri, name in browse_segments(start):
                if uri is not None and uri not in namespaces:
                    raise BrowseInputError(f"namespace {uri} is not on the server")
                qualified.append(ua.QualifiedName(name, namespaces.index(uri) if uri else 0))
            root_node = await client.get_node(OBJECTS).get_child(qualified)
        else:
            root_node = client.get_node(_parse(start, namespaces))
        browser = _Browser(client, namespaces, depth)
        root = await browser.walk(
            root_node,
            (await root_node.read_browse_name()).Name,
            await root_node.read_node_class(),
            0,
        )
        return BrowseTree(
            endpoint, root, namespaces, await _machines(client, namespaces), browser.truncated
        )
    except (BadNodeIdUnknown, BadNoMatch) as exc:  # the start the user gave is not there
        raise BrowseInputError(f"{start}: {exc}") from exc
    except (UaError, ValueError) as exc:
        raise BrowseError(f"{start}: {exc}") from exc
    finally:
        await client.disconnect()


def signal_name(browse_name: str) -> str:
    """`SpindleSpeed` -> `spindle_speed`, the adapter's `[a-z0-9_]+` signal names."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", browse_name)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:64] or "value"


def _variables(node: BrowseNode, parent: str = "") -> list[tuple[str, BrowseNode]]:
    out: list[tuple[str, BrowseNode]] = []
    for child in node.children:
        if child.node_class == "Variable":
            out.append((parent, child))
        out += _variables(child, child.name)
    return out


def point_lines(tree: BrowseTree) -> list[str]:
    """One YAML flow mapping per variable. Names are unique: a name used twice is prefixed
    by its parent's, and numbered if that still collides (`id`, `current_state_id_2`)."""
    found = _variables(tree.root)
    plain = [signal_name(v.name) for _, v in found]
    lines = []
    used: set[str] = set()
    for (parent, var), own in zip(found, plain, strict=True):
        name = signal_name(f"{parent}_{var.name}") if plain.count(own) > 1 else own
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name[:60]}_{n}"
        used.add(candidate)
        lines.append(f'  - {{name: {candidate}, node: "{var.node_id}"}}   # {var.data_type}')
    return lines


def _tree_lines(node: BrowseNode, indent: int = 0) -> list[str]:
    kind = node.node_class if node.data_type is None else f"{node.node_class} {node.data_type}"
    lines = [f"{'  ' * indent}{node.name}  [{kind}]  {node.node_id}"]
    for child in node.children:
        lines += _tree_lines(child, indent + 1)
    return lines


def profile_advice(tree: BrowseTree) -> str:
    """Which `profile:` maps this server's machine state without points.

    The Machinery profiles need a machine under Objects/Machines as well as the namespace:
    servers load the Machinery and Machine Tools models without a machine in them (the
    SINUMERIK simulator does), and advising `machine_tool` there names a profile that finds
    nothing. A SINUMERIK is known by its NC variables' namespace (adapters/opcua/sinumerik.py).
    """
    machines = ", ".join(tree.machines)
    advice = []
    if tree.machines and tree.machine_tool:
        advice.append(
            "OPC 40501 (Machine Tools) on OPC 40001 (Machinery): set `profile: machine_tool` "
            "in the connection; execution, mode, program, parts and alarms are mapped without "
            f"points. Machines: {machines} (set `machine:` when there are several)."
        )
    elif tree.machines and tree.machinery:
        advice.append(
            "OPC 40001 (Machinery) without OPC 40501 (Machine Tools): set `profile: machinery` "
            "in the connection; identification, availability, execution and mode are mapped "
            "without points, add points for part counts and the rest. "
            f"Machines: {machines} (set `machine:` when there are several)."
        )
    if tree.sinumerik:
        advice.append(
            "SINUMERIK NC variables (namespace SinumerikVarProvider): set `profile: sinumerik` "
            "in the connection; program status, mode, program, part count, spindle and "
            "overrides are mapped without points."
        )
    if advice:
        return " ".join(advice)
    if tree.machinery:
        return (
            "OPC 40001 (Machinery) model loaded but no machine under Objects/Machines: "
            "`profile: none`; map the machine state (execution, controller_mode, "
            "part_count...) with points."
        )
    return "No OPC 40001/40501 model: `profile: none`; map the machine state with points."


def render(tree: BrowseTree) -> str:
    lines = [f"{tree.endpoint}", *_tree_lines(tree.root)]
    if tree.truncated:
        lines.append(f"... stopped after {MAX_NODES} nodes: use --path to start deeper")
    lines += ["", f"# {profile_advice(tree)}", "points:", *point_lines(tree), ""]
    return "\n".join(lines)
