"""The import rules of the code base, checked on every module's syntax tree.

The rules (docs/architecture.md, "Layers and import rules", describes the same):

1. `models/` is pure data: it imports nothing from `edge`, `adapters` or `simulators`, and
   no module that does I/O (`IO_MODULES` below: sockets, TLS, files and processes, SQLite,
   asyncio, logging, HTTP/MQTT/Modbus/OPC UA/S7 clients...).
2. `adapters/` never imports `edge` or `simulators`: an adapter is usable (and testable)
   without the daemon, and the daemon reaches adapters only through their entry points.
3. `simulators/` never imports `edge`: they stand in for machines, which know nothing of the
   gateway (they may reuse `models` and the adapters' protocol codecs).
4. `edge/platform_kit/verifier.py` imports only the standard library, `cryptography` and
   `rfc8785`, so a platform can copy the one file to verify envelopes.
5. Inside `edge/`, only `edge/daemon/` and `edge/cli.py` import `edge.daemon` or `edge.cli`:
   the assembly sits on top, nothing below depends on it.
6. `edge/platform_kit/` (the platform-side tools) imports nothing from `edge.daemon`,
   `edge.devices`, `edge.kpi`, `edge.egress`, `edge.storage` or `edge.query`: it shares the
   wire format (`edge.signing`, including the request `typ`; `edge.transport`) and `models`,
   none of the gateway's stages.
7. Inside `edge/`, only `edge/daemon/` imports `simulators` (`--with-simulators`); no stage
   of the data flow depends on a simulator.
8. `edge/` imports nothing of `adapters/` but `adapters.base`: concrete adapters are reached
   only through the entry-point registry. The one exception is `edge/commissioning/`, whose
   `browse` command speaks OPC UA on purpose and reuses the OPC UA adapter's node-id and
   browse-path code instead of a second copy.
9. Inside `edge/`, each package imports only the packages `EDGE_DEPENDS_ON` lists (the
   graph drawn in docs/architecture.md, which has no cycle): egress sits below devices, so
   egress never imports devices, and so on. A package the graph does not place is a
   violation too, until it is drawn there. Imports of `edge.daemon`/`edge.cli` (rule 5)
   and the platform kit's forbidden ones (rule 6) are left to those rules.

Every import counts, including those inside functions and under `TYPE_CHECKING`; relative
imports are resolved. The checker is tested on synthetic modules that break each rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "adapters", "simulators", "edge")

IO_MODULES = frozenset(
    {
        "asyncio", "socket", "socketserver", "ssl", "select", "selectors", "subprocess",
        "multiprocessing", "threading", "sqlite3", "os", "io", "shutil", "tempfile",
        "pathlib", "glob", "logging", "http", "urllib", "ftplib", "smtplib", "signal",
        "structlog", "requests", "httpx", "aiohttp", "paho", "amqtt", "pymodbus", "asyncua",
        "snap7", "serial", "serial_asyncio", "yaml",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "edge.query.handler"
    path: str  # relative to the repository, e.g. "edge/query/handler.py"
    imports: frozenset[str]  # dotted names of every import (absolute)


def imports_of(source: str, name: str, is_package: bool) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            # `from edge import daemon` imports edge.daemon
            found.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(found)


def module(path: str, source: str) -> Module:
    parts = path.removesuffix(".py").split("/")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    name = ".".join(parts)
    return Module(name, path, imports_of(source, name, is_package))


def repository() -> list[Module]:
    out = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            out.append(module(rel, f.read_text(encoding="utf-8")))
    return out


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


Rule = Callable[[Module], Iterable[str]]


def models_are_pure(m: Module) -> Iterable[str]:
    if within(m.name, "models"):
        for i in m.imports:
            if within(i, "edge", "adapters", "simulators"):
                yield f"imports {i} (models import no other layer)"
            elif top(i) in IO_MODULES:
                yield f"imports {i} (models do no I/O)"


def adapters_stand_alone(m: Module) -> Iterable[str]:
    if within(m.name, "adapters"):
        yield from (f"imports {i}" for i in m.imports if within(i, "edge", "simulators"))


def simulators_know_no_gateway(m: Module) -> Iterable[str]:
    if within(m.name, "simulators"):
        yield from (f"imports {i}" for i in m.imports if within(i, "edge"))


VERIFIER_MAY_IMPORT = frozenset({"cryptography", "rfc8785", "__future__"})


def verifier_is_portable(m: Module) -> Iterable[str]:
    if m.name == "edge.platform_kit.verifier":
        for i in m.imports:
            if top(i) not in sys.stdlib_module_names and top(i) not in VERIFIER_MAY_IMPORT:
                yield f"imports {i} (stdlib, cryptography and rfc8785 only)"


def assembly_on_top(m: Module) -> Iterable[str]:
    if within(m.name, "edge") and not within(m.name, "edge.daemon", "edge.cli"):
        yield from (f"imports {i}" for i in m.imports if within(i, "edge.daemon", "edge.cli"))


PLATFORM_KIT_MAY_NOT = ("edge.daemon", "edge.devices", "edge.kpi", "edge.egress",
                        "edge.storage", "edge.query")  # fmt: skip


def platform_kit_shares_only_the_wire(m: Module) -> Iterable[str]:
    if within(m.name, "edge.platform_kit"):
        yield from (f"imports {i}" for i in m.imports if within(i, *PLATFORM_KIT_MAY_NOT))


def simulators_only_for_the_daemon(m: Module) -> Iterable[str]:
    if within(m.name, "edge") and not within(m.name, "edge.daemon"):
        yield from (f"imports {i}" for i in m.imports if within(i, "simulators"))


EDGE_DEPENDS_ON: dict[str, frozenset[str]] = {
    name: frozenset(deps.split())
    for name, deps in {
        "query": "bookings capacity parts kpi devices egress storage signing config",
        "web": "bookings metrics status config text_table",
        "commissioning": "devices kpi platform_kit config text_table",
        "metrics": "status",
        "observability": "status",
        "status": "kpi devices egress transport config",
        "bookings": "capacity egress storage config platform_kit",
        "capacity": "kpi devices egress config",
        "parts": "kpi egress storage config",
        "kpi": "devices egress storage config",
        "devices": "egress config",
        "egress": "transport signing storage config",
        "platform_kit": "signing transport",
        "transport": "config",
        "signing": "",
        "storage": "",
        "config": "",
        "text_table": "",
    }.items()
}
"""What each package of `edge/` may import of the others (docs/architecture.md, "Layers and
import rules"); `edge.daemon` and `edge.cli` sit on top and may import any of them."""
ASSEMBLY = ("daemon", "cli")


def packages_follow_the_graph(m: Module) -> Iterable[str]:
    parts = m.name.split(".")
    if parts[0] != "edge" or len(parts) < 2 or parts[1] in ASSEMBLY:
        return
    pkg = parts[1]
    if pkg not in EDGE_DEPENDS_ON:
        yield f"edge.{pkg} is not placed in the package graph (docs/architecture.md)"
        return
    allowed = EDGE_DEPENDS_ON[pkg]
    for i in m.imports:
        target = i.split(".")
        if target[0] != "edge" or len(target) < 2 or target[1] == pkg:
            continue
        if target[1] in ASSEMBLY or target[1] not in EDGE_DEPENDS_ON:
            continue  # rule 5; or a name of edge/__init__.py (`package_version`)
        if pkg == "platform_kit" and within(i, *PLATFORM_KIT_MAY_NOT):
            continue  # rule 6
        if target[1] not in allowed:
            only = ", ".join(sorted(allowed)) or "no other edge package"
            yield f"imports {i} (edge.{pkg} may import only: {only})"


def adapters_only_through_the_registry(m: Module) -> Iterable[str]:
    if within(m.name, "edge") and not within(m.name, "edge.commissioning"):
        for i in m.imports:
            if within(i, "adapters") and not within(i, "adapters.base") and i != "adapters":
                yield f"imports {i}"


RULES: tuple[Rule, ...] = (
    models_are_pure,
    adapters_stand_alone,
    simulators_know_no_gateway,
    verifier_is_portable,
    assembly_on_top,
    platform_kit_shares_only_the_wire,
    simulators_only_for_the_daemon,
    adapters_only_through_the_registry,
    packages_follow_the_graph,
)


def violations(modules: Iterable[Module]) -> list[str]:
    return sorted(
        f"{m.path}: {rule.__name__}: {problem}"
        for m in modules
        for rule in RULES
        for problem in rule(m)
    )


def test_the_code_base_keeps_its_layers() -> None:
    modules = repository()
    assert len(modules) > 50, "the walk found the packages"
    assert violations(modules) == []


# ---- the checker itself: each rule fires on a module that breaks it ---------------------

BAD = [
    ("models/x.py", "import sqlite3", "models_are_pure"),
    ("models/x.py", "from edge.signing import jws", "models_are_pure"),
    ("models/x.py", "import paho.mqtt.client as mqtt", "models_are_pure"),
    ("models/sub/__init__.py", "def f():\n    import asyncio", "models_are_pure"),
    ("adapters/modbus/x.py", "from edge.devices.runner import Backoff", "adapters_stand_alone"),
    ("adapters/modbus/x.py", "from ...simulators import machine", "adapters_stand_alone"),
    ("simulators/x.py", "import edge.transport.mqtt", "simulators_know_no_gateway"),
    ("edge/platform_kit/verifier.py", "import structlog", "verifier_is_portable"),
    ("edge/platform_kit/verifier.py", "from edge.signing.jws import Signer",
     "verifier_is_portable"),
    ("edge/egress/x.py", "from edge.daemon.gateway import Gateway", "assembly_on_top"),
    ("edge/query/x.py", "from .. import cli", "assembly_on_top"),
    ("edge/platform_kit/x.py", "from edge.query.backend import GatewayViews",
     "platform_kit_shares_only_the_wire"),
    ("edge/platform_kit/x.py", "from ..kpi.store import OeeStore",
     "platform_kit_shares_only_the_wire"),
    ("edge/platform_kit/client.py", "from edge.query.handler import REQUEST_TYP",
     "platform_kit_shares_only_the_wire"),
    ("edge/daemon/x.py", "from adapters.modbus.adapter import ModbusAdapter",
     "adapters_only_through_the_registry"),
    ("edge/egress/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from simulators.machine import MachineModel", "simulators_only_for_the_daemon"),
    ("edge/egress/status.py", "from edge.devices.fleet import device_detail",
     "packages_follow_the_graph"),
    ("edge/signing/x.py", "from ..storage import wal", "packages_follow_the_graph"),
    ("edge/kpi/x.py", "def f():\n    from edge.query.backend import QueryBackend",
     "packages_follow_the_graph"),
    ("edge/newstage/x.py", "import json", "packages_follow_the_graph"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "source", "rule"), BAD)
def test_the_checker_catches_a_broken_rule(path: str, source: str, rule: str) -> None:
    found = violations([module(path, source)])
    assert found and all(f": {rule}: " in v for v in found), found


GOOD = [
    ("models/x.py", "import json\nfrom pydantic import BaseModel\nfrom models.sample import S"),
    ("adapters/modbus/x.py", "import asyncio\nfrom models.sample import Sample"),
    ("simulators/x.py", "from adapters.haas.protocol import encode"),
    ("edge/platform_kit/verifier.py", "import json\nimport rfc8785\nfrom cryptography import x"),
    ("edge/daemon/x.py", "from edge.cli import main\nfrom simulators import machine"),
    ("edge/platform_kit/x.py", "from edge.signing.jws import REQUEST_TYP"),
    ("edge/config/registry.py", "from adapters.base import ENTRY_POINT_GROUP, Adapter"),
    ("edge/devices/fleet.py", "from edge.egress.stack import RecordSink"),
    ("edge/query/x.py", "from edge import package_version\nfrom . import nonces"),
]


@pytest.mark.parametrize(("path", "source"), GOOD)
def test_the_checker_allows_what_the_layers_allow(path: str, source: str) -> None:
    assert violations([module(path, source)]) == []


def test_relative_imports_are_resolved() -> None:
    m = module("edge/query/handler.py", "from ..signing import jws\nfrom . import nonces")
    assert {"edge.signing", "edge.signing.jws", "edge.query", "edge.query.nonces"} <= m.imports
    pkg = module("edge/query/__init__.py", "from .handler import QueryHandler")
    assert "edge.query.handler" in pkg.imports
