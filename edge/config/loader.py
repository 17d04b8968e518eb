"""Load a plant YAML and report every problem with file, line, column and field path.

Two passes: the generic `models.plant.Plant` schema, then each machine's `connection` and
`points` against its adapter's `settings_model`. Errors of both are mapped back to YAML
node positions, so a plant engineer sees `plant.yaml:14:9: machines[1].points[3].address:
...` rather than a traceback. Duplicate mapping keys are errors too (PyYAML would silently
keep the last one, which hides typos). Both passes anchor every file and directory the YAML
names at the YAML file's directory (`models.config_path.ConfigPath`), so `run` under
systemd (working directory `/`) opens what `validate` beside the file checked.

Hostile or broken files are refused quickly with a location, never a traceback or a spin:
a size limit, a nesting-depth limit checked on the event stream (before the recursive
composer could overflow the stack), a limit on the node count after alias expansion (a
YAML "billion laughs" is tiny as text and astronomic as data) and on its depth once
aliases are followed (recursive aliases refused), and impossible dates (`2026-13-45`),
over-long integers and forbidden characters reported at their node or position.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from adapters.base import AdapterSettings
from edge.config import registry
from edge.config.shares import chosen_share, narrow, share_problems
from edge.config.suggest import unknown_key_message
from edge.config.workers import WorkerRole
from models.config_path import CONFIG_DIR
from models.errors import ConfigProblem, PlantConfigError, PluginError
from models.plant import (
    Machine,
    Plant,
    duplicate_id_problems,
    meter_problems,
    worker_problems,
)

Loc = tuple[int | str, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024  # a 1,000-machine plant is well under 1 MiB
MAX_DEPTH = 64  # the schema needs 6 levels; PyYAML's composer recurses per level
# after alias expansion: anchors and merge keys share settings, a few times over at most;
# an alias bomb multiplies a few dozen nodes a billion times
MAX_EXPANSION = 10  # times the distinct nodes
MIN_NODE_LIMIT = 100_000
# problems reported, the first in file order; the rest are counted (`... and N more`)
MAX_REPORTED = 50


@dataclass
class LoadedPlant:
    """A validated plant plus each machine's validated adapter settings."""

    plant: Plant
    path: Path
    settings: dict[str, BaseModel] = field(default_factory=dict)
    # line and column of a field path, for problems found after validation (references)
    locate: Callable[[Loc], tuple[int | None, int | None]] = field(
        default=lambda _loc: (None, None), repr=False, compare=False
    )
    share: str | None = None
    """The gateway id whose share of a split plant this is (edge.config.shares), else None."""
    worker: WorkerRole | None = None
    """Which worker process of this host this is (edge/daemon/workers.py), else None."""

    @property
    def state_dir(self) -> Path:
        """$STATE_DIRECTORY (set by systemd's StateDirectory=) wins; relative paths are
        relative to the YAML file so a checkout's demo keeps its state beside it. A share of
        a split plant keeps its state in a subdirectory named after it, so two shares on
        one host never mix outboxes or keys."""
        env = os.environ.get("STATE_DIRECTORY")
        if env:
            p = Path(env.split(":")[0])
        else:
            p = Path(self.plant.gateway.state_dir)
            p = p if p.is_absolute() else (self.path.parent / p).resolve()
        p = p / self.share if self.share else p
        return p / self.worker.directory if self.worker else p

    @property
    def keys_dir(self) -> Path:
        configured = self.plant.gateway.keys_dir
        if configured is None:  # a worker signs with its gateway's key
            return (self.state_dir.parent if self.worker else self.state_dir) / "keys"
        p = Path(configured)
        p = p if p.is_absolute() else (self.path.parent / p).resolve()
        return p / self.share if self.share else p

    def enabled_machines(self) -> list[Machine]:
        return [m for m in self.plant.machines if m.enabled]


class _Located:
    """Finds the YAML node for a pydantic error location.

    Holds the text only and composes it on the first question. Why: the node tree with its
    marks is ~0.25 MB per machine of 40 points (~50 MB at 200 machines), which a running
    gateway (and each of its workers) kept for the few problems found after loading, when
    the file is refused anyway. It composes once, with libyaml when PyYAML has it (the
    pure-Python composer took 50-100 s of CPU for a 4 MiB file of schema errors, in
    `validate` and in a SIGHUP's parse thread), and indexes each mapping's keys the first
    time a path passes through it, so every later problem costs its path's depth, not a
    scan of the file or of a mapping: locating is O(file) once, not once per problem.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.root: yaml.Node | None = None
        self.composed = False
        self._keys: dict[int, dict[str, yaml.Node]] = {}  # id(mapping) -> key -> value

    def _compose(self) -> yaml.Node | None:
        """The text passed the checks of `parse_plant` already; libyaml first, the
        pure-Python parser if libyaml refuses what it accepted (as `parse_plant` does).
        Merge keys (`<<`) are flattened as when the file was loaded, without constructing
        the data again."""
        for cls in (_FastPositionsLoader, _PositionsLoader):
            if cls is None:
                continue
            loader = cls(self.text)
            try:
                root = loader.get_single_node()
                seen: set[int] = set()
                todo = [root] if root is not None and loader.merges else []
                while todo:
                    node = todo.pop()
                    if id(node) in seen:
                        continue
                    seen.add(id(node))
                    if isinstance(node, yaml.MappingNode) and any(
                        k.tag == _MERGE for k, _ in node.value
                    ):
                        loader.flatten_mapping(node)
                    todo.extend(_children(node))
                return root
            except yaml.YAMLError:
                if cls is _PositionsLoader:
                    raise
            finally:
                loader.dispose()
        return None  # pragma: no cover - the loop returns or raises at _PositionsLoader

    def _child(self, node: yaml.Node, part: int | str) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            keys = self._keys.get(id(node))
            if keys is None:
                keys = {}
                for k, v in node.value:  # the first of duplicate keys, as reported
                    if isinstance(k, yaml.ScalarNode):
                        keys.setdefault(str(k.value), v)
                self._keys[id(node)] = keys
            return keys.get(str(part))
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            return node.value[part] if 0 <= part < len(node.value) else None
        return None

    def mark(self, loc: Loc) -> tuple[int | None, int | None]:
        if not self.composed:
            self.root = self._compose()
            self.composed = True
        best = node = self.root
        for part in loc:
            nxt = self._child(node, part) if node is not None else None
            if nxt is None:
                break
            node = best = nxt
        if best is None:
            return None, None
        return best.start_mark.line + 1, best.start_mark.column + 1


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _duplicate_keys(node: yaml.Node | None, path: Loc, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            if k.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(k.value)
            if key in seen:
                problems.append(
                    ConfigProblem(
                        file,
                        k.start_mark.line + 1,
                        k.start_mark.column + 1,
                        format_path((*path, key)),
                        "duplicate key",
                    )
                )
            seen.add(key)
            problems += _duplicate_keys(v, (*path, key), file)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            problems += _duplicate_keys(v, (*path, i), file)
    return problems


def _problems(
    exc: ValidationError, prefix: Loc, where: _Located, file: str, model: type[BaseModel]
) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        inner: Loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
        loc: Loc = (*prefix, *inner)
        line, col = where.mark(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = unknown_key_message(model, inner)
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append(ConfigProblem(file, line, col, format_path(loc), msg))
    return out


class _Mark(yaml.Mark):
    """A node position as this loader reports it: line and column only.

    Why: PyYAML gives every token and node two marks that also hold the offset and the
    buffer for a snippet this loader never prints; with `__dict__` and two int objects each
    they were half of a composed tree (~19 MB of the peak at 200 machines x 40 points)."""

    __slots__ = ("column", "line")

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column

    name = "<plant>"  # what PyYAML's own messages would print; this loader prints neither
    index = pointer = 0
    buffer = None

    def get_snippet(self, indent: int = 4, max_length: int = 75) -> None:
        return None


class _LocatedScalars:
    """Impossible timestamps (`2026-13-45`) and integers longer than Python converts (4,300
    digits) as located errors, not ValueErrors."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            value: int = yaml.constructor.SafeConstructor.construct_yaml_int(
                self, node  # type: ignore[arg-type]
            )
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer too long ({len(node.value):,} characters)",
                node.start_mark,
            ) from None
        return value

    def construct_yaml_timestamp(self, node: yaml.Node) -> dt.date | dt.datetime:
        safe = yaml.constructor.SafeConstructor
        try:
            value: dt.date | dt.datetime = safe.construct_yaml_timestamp(
                self, node  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date or time {node.value!r}: {exc}", node.start_mark
            ) from None
        return value


class _PlantLoader(_LocatedScalars, yaml.SafeLoader):
    """The pure-Python SafeLoader: its error messages are the ones users see; its marks
    are line and column only (`_Mark`)."""

    def get_mark(self) -> yaml.Mark:
        return _Mark(self.line, self.column)


_FastLoader: type[yaml.SafeLoader] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CPlantLoader(_LocatedScalars, yaml.CSafeLoader):
        """libyaml's parser and composer: the same nodes, marks and data ~10x faster (a
        500-machine plant took 11 s of CPU to parse in pure Python, issue 17)."""

    _FastLoader = _CPlantLoader  # type: ignore[assignment]

for _loader in (_PlantLoader, _FastLoader):
    if _loader is not None:
        _loader.add_constructor("tag:yaml.org,2002:timestamp",  # type: ignore[type-var]
                                _LocatedScalars.construct_yaml_timestamp)
        _loader.add_constructor("tag:yaml.org,2002:int",  # type: ignore[type-var]
                                _LocatedScalars.construct_yaml_int)


_MERGE = "tag:yaml.org,2002:merge"


class _Positions(yaml.resolver.BaseResolver):
    """Nodes for their positions only: every plain scalar a string but `<<`, which
    `flatten_mapping` needs. Why: resolving each scalar against the int/float/bool/date
    patterns was half of composing a 4 MiB file again to locate its problems."""

    merges = False  # set when a `<<` key was seen: only then are mappings flattened

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            if value == "<<" and implicit[0]:
                self.merges = True
                return _MERGE
            return self.DEFAULT_SCALAR_TAG
        return self.DEFAULT_SEQUENCE_TAG if kind is yaml.SequenceNode else self.DEFAULT_MAPPING_TAG


class _PositionsLoader(_Positions, _PlantLoader):
    """`_Positions` on the pure-Python parser."""


_FastPositionsLoader: type[_PositionsLoader] | None = None
if _FastLoader is not None:

    class _CPositionsLoader(_Positions, _FastLoader):  # type: ignore[misc,valid-type]
        """`_Positions` on libyaml."""

    _FastPositionsLoader = _CPositionsLoader


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML refused by a limit."""


def _check_depth(text: str, loader: type[yaml.SafeLoader]) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the parser's events (iterative, cheap)."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=event.start_mark,  # type: ignore[arg-type]  # same fields
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a graph whose alias expansion exceeds MAX_EXPANSION times its distinct nodes
    (at least MIN_NODE_LIMIT), nests deeper than MAX_DEPTH once aliases are followed (a
    chain of anchors, each holding an alias of the one before, is flat as text), or holds
    an alias inside its own anchor (`&a [*a]`, a cycle): every later step walks the data
    recursively. Sizes and depths are memoized per distinct node, so the check itself is
    linear in the file, not in the expansion; it recurses only as deep as the text nests,
    since an alias refers to an anchor already measured unless it is inside it."""
    if root is None:
        return
    distinct: set[int] = set()
    shared = False
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) not in distinct:
            distinct.add(id(node))
            todo.extend(_children(node))
        else:
            shared = True
    if not shared:  # no alias: the expansion is the file itself (most plants; issue 17)
        return
    limit = max(MIN_NODE_LIMIT, MAX_EXPANSION * len(distinct))
    measured: dict[int, tuple[int, int]] = {}  # id -> (nodes, depth) once expanded
    measuring: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):  # most nodes: a leaf holds no alias
            return 1, 0
        known = measured.get(id(node))
        if known is not None:
            return known
        if id(node) in measuring:
            raise _Refused(problem="an alias inside its own anchor (a recursive structure)",
                           problem_mark=node.start_mark)
        measuring.add(id(node))
        parts = [measure(c) for c in _children(node)]
        measuring.discard(id(node))
        total = 1 + sum(n for n, _ in parts)
        nests = isinstance(node, yaml.CollectionNode)  # as `_check_depth` counts levels
        depth = int(nests) + max((d for _, d in parts), default=0)
        measured[id(node)] = (total, depth)
        if total > limit:
            raise _Refused(
                problem=f"aliases expand to more than {limit:,} nodes (an alias bomb?)",
                problem_mark=node.start_mark,
            )
        if depth > MAX_DEPTH:
            raise _Refused(problem=f"aliases nest deeper than {MAX_DEPTH} levels",
                           problem_mark=node.start_mark)
        return total, depth

    measure(root)


def _kind(exc: yaml.MarkedYAMLError) -> str:
    syntax = (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.composer.ComposerError)
    return "YAML syntax error: " if isinstance(exc, syntax) else ""


_SYNTAX_HINTS = (
    ("expected <block end>", "this line is indented differently from the lines of its block"),
    ("mapping values are not allowed here",
     "check this line's indentation against the line above, or quote a value holding ': '"),
    ("found character '\\t'", "indent with spaces: YAML does not allow tabs there"),
    ("expected ',' or '}'", "a { } mapping opened earlier lacks its '}' (or a ',') before this"),
)
"""PyYAML's words for the usual slips of a hand-edited file, and what they mean: a plant
engineer reads "expected <block end>, but found '?'" as noise."""


def _syntax_hint(problem: str) -> str:
    return next((f" ({hint})" for words, hint in _SYNTAX_HINTS if words in problem), "")


def _read_yaml(
    text: str, file: str, loader_cls: type[yaml.SafeLoader]
) -> tuple[yaml.Node | None, Any, list[ConfigProblem]]:
    """The node graph (for marks), the data and the duplicate keys, after the limits."""
    _check_depth(text, loader_cls)
    loader = loader_cls(text)
    try:
        root = loader.get_single_node()
        _check_expansion(root)
        # before construction: constructing flattens `<<` merge keys into the node
        duplicates = _duplicate_keys(root, (), file)
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data, duplicates


def parse_plant(text: str, file: str) -> LoadedPlant:
    """Validate YAML text; raises PlantConfigError with every problem found. Relative paths
    in it are anchored at the directory of `file` (after following symbolic links, as
    `LoadedPlant.state_dir` is)."""
    if len(text) > MAX_FILE_BYTES:
        raise PlantConfigError(
            [ConfigProblem(file, None, None, "", f"larger than {MAX_FILE_BYTES:,} bytes")]
        )
    try:
        try:
            root, data, duplicates = _read_yaml(text, file, _FastLoader or _PlantLoader)
        except _Refused:
            raise
        except yaml.YAMLError:
            if _FastLoader is None:
                raise
            # refused anyway: read again by the pure-Python parser, whose messages and
            # marks are the documented ones (libyaml words its errors differently)
            root, data, duplicates = _read_yaml(text, file, _PlantLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PlantConfigError(
            [
                ConfigProblem(
                    file,
                    mark.line + 1 if mark else None,
                    mark.column + 1 if mark else None,
                    "",
                    f"{_kind(exc)}{exc.problem or exc.context}"
                    f"{_syntax_hint(str(exc.problem or exc.context))}",
                )
            ]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL...)
        row = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise PlantConfigError(
            [ConfigProblem(file, row, column, "",
                           f"character U+{int(exc.character):04X} is not allowed in YAML")]
        ) from None
    except yaml.YAMLError as exc:
        raise PlantConfigError(
            [ConfigProblem(file, None, None, "", f"YAML error: {exc}")]
        ) from None
    # The tree goes before validation, and the data is copied first: its strings were
    # made between the tree's nodes, and one string left in a pymalloc arena (1 MiB, freed
    # only when empty) keeps the arena. With fresh copies the tree's arenas go back to the
    # system; kept, ~50 MB at 200 machines stayed with the process for good. A problem
    # composes the text again. pickle: an exact copy (dates, int keys, shared anchors).
    data = pickle.loads(pickle.dumps(data, pickle.HIGHEST_PROTOCOL))
    del root
    where = _Located(text)
    if not isinstance(data, dict):
        raise PlantConfigError(
            [ConfigProblem(file, 1, 1, "", "expected a mapping with 'gateway' and 'machines'")]
        )

    problems = duplicates
    # every file the YAML names is relative to its directory, not to the working directory
    # (`/` under systemd): models/config_path.py
    context = {CONFIG_DIR: str(Path(file).resolve().parent)}
    plant: Plant | None = None
    try:
        plant = Plant.model_validate(data, context=context)
    except ValidationError as exc:
        problems += _problems(exc, (), where, file, Plant)

    settings: dict[str, BaseModel] = {}
    raw_machines = data.get("machines")
    settings_model = registry.settings_loader()  # the models alone: no protocol library
    for i, raw in enumerate(raw_machines if isinstance(raw_machines, list) else []):
        if not isinstance(raw, dict) or not isinstance(raw.get("adapter"), str):
            continue
        try:
            model = settings_model(raw["adapter"])
        except PluginError as exc:
            line, col = where.mark(("machines", i, "adapter"))
            problems.append(
                ConfigProblem(file, line, col, format_path(("machines", i, "adapter")), str(exc))
            )
            continue
        try:
            machine_settings = model.model_validate(
                {"connection": raw.get("connection"), "points": raw.get("points", [])},
                context=context,
            )
        except ValidationError as exc:
            problems += _problems(exc, ("machines", i), where, file, model)
            continue
        settings[str(raw.get("id"))] = machine_settings
        if isinstance(machine_settings, AdapterSettings):
            for j, message in machine_settings.point_clashes():
                loc: Loc = ("machines", i, "points", j, "name")
                line, col = where.mark(loc)
                problems.append(ConfigProblem(file, line, col, format_path(loc), message))

    if plant is not None:
        located = (duplicate_id_problems(plant) + share_problems(plant) + meter_problems(plant)
                   + worker_problems(plant))
        for loc, message in located:
            line, col = where.mark(loc)
            problems.append(ConfigProblem(file, line, col, format_path(loc), message))

    if problems or plant is None:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise PlantConfigError(problems[:MAX_REPORTED],
                               omitted=max(0, len(problems) - MAX_REPORTED))
    return LoadedPlant(plant=plant, path=Path(file), settings=settings, locate=where.mark)


class FileTooLarge(ValueError):
    """A YAML file over MAX_FILE_BYTES."""


def _read_bounded(path: Path) -> str:
    """The file as text, reading at most one byte past the limit: a size from stat() is 0
    for a device or /proc file (`validate /dev/zero` read until memory ran out). Raises
    OSError, FileTooLarge or UnicodeDecodeError."""
    with path.open("rb") as fh:
        raw = fh.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise FileTooLarge(f"larger than {MAX_FILE_BYTES:,} bytes")
    return raw.decode("utf-8")


def read_yaml_file(path: Path) -> Any:
    """The data of another YAML file the plant names (a machine's `bookings_file`, which a
    scheduler writes and the gateway re-reads on every refresh), under the plant file's
    limits: an alias bomb or deep nesting there made `validate` spin for over a minute or
    die of a RecursionError. Raises OSError, ValueError (a refusal with its line and
    column) or yaml.YAMLError."""
    try:
        _root, data, _duplicates = _read_yaml(_read_bounded(path), str(path),
                                              _FastLoader or _PlantLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{where}{_kind(exc)}{exc.problem or exc.context}") from None
    return data


def load_plant(path: str | os.PathLike[str]) -> LoadedPlant:
    p = Path(path)
    try:
        text = _read_bounded(p)
    except FileTooLarge as exc:
        raise PlantConfigError([ConfigProblem(str(p), None, None, "", str(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlantConfigError(
            [ConfigProblem(str(p), None, None, "", f"cannot read: {exc}")]
        ) from None
    loaded = parse_plant(text, str(p))
    loaded.path = p.resolve()
    return loaded


def load_share(path: str | os.PathLike[str], gateway_id: str | None) -> LoadedPlant:
    """The plant as this host serves it: `load_plant`, then `share_of`."""
    return share_of(load_plant(path), gateway_id)


def share_of(loaded: LoadedPlant, gateway_id: str | None) -> LoadedPlant:
    """`loaded` narrowed to the share chosen by `gateway_id` / $EDGE_GATEWAY_ID /
    `gateway.id` when the plant is split over gateways; `loaded` itself otherwise. Check
    references before narrowing: `locate` paths index the whole file's machines."""
    share = chosen_share(loaded.plant, gateway_id, str(loaded.path))
    if share is None:
        return loaded
    plant = narrow(loaded.plant, share)
    ids = {m.id for m in plant.machines}
    return dataclasses.replace(loaded, plant=plant, share=share,
                               settings={k: v for k, v in loaded.settings.items() if k in ids})


def json_schema() -> dict[str, Any]:
    """The plant JSON Schema, with each installed adapter's settings attached by type."""
    schema = Plant.model_json_schema()
    defs = schema.setdefault("$defs", {})
    rules = []
    settings_model = registry.settings_loader()
    for name in registry.available():
        sm = settings_model(name).model_json_schema(ref_template="#/$defs/{model}")
        for k, v in sm.pop("$defs", {}).items():
            defs[k] = v
        props = sm.get("properties", {})
        rules.append(
            {
                "if": {"properties": {"adapter": {"const": name}}, "required": ["adapter"]},
                "then": {
                    "properties": {k: props[k] for k in ("connection", "points") if k in props}
                },
            }
        )
    defs["Machine"]["allOf"] = rules
    return schema
