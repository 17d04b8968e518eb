"""README's configuration table covers every key of config/schema.json, and names no key the
schema lacks: the table is what a plant engineer reads, so it must not drift from the YAML
the loader accepts.

A key is covered when it is a row's key (`machines[].energy`, or `.meter_for` after it in the
same cell), or when every segment below the nearest row key appears in backticks in that
row's text (`gateway.batch`'s row names `max_records`). Adapter settings under
`machines[].connection` / `.points` live in each adapter's README, not here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
ADAPTER_SPECIFIC = ("machines[].connection", "machines[].points")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:  # optional objects are `X | None`: the object branch has the keys
            branches = [_resolve(b, defs) for b in node[key]]
            shaped = [b for b in branches if "properties" in b or b.get("type") == "array"]
            return shaped[0] if shaped else node
    return node


def _paths(node: dict[str, Any], defs: dict[str, Any], path: str, out: list[str]) -> None:
    node = _resolve(node, defs)
    if node.get("type") == "array" and "items" in node:
        _paths(node["items"], defs, path + "[]", out)
        return
    for name, sub in node.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        out.append(key)
        _paths(sub, defs, key, out)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in _resolve(extra, defs):
        _paths(extra, defs, path + ".{*}", out)


def schema_paths() -> list[str]:
    schema = json.loads((ROOT / "config" / "schema.json").read_text(encoding="utf-8"))
    out: list[str] = []
    _paths(schema, schema["$defs"], "", out)
    return out


def table_rows() -> dict[str, str]:
    """Each documented key -> its row's text. `a.b`, `.c` in one cell documents a.b and a.c;
    `.quotas.{platform}` a placeholder segment (`{*}` in schema paths)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration reference", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split(" | ", 1)[0].strip("| ")
        first = ""
        for written in re.findall(r"`([^`]+)`", cell):
            key = re.sub(r"\{[a-z_]+\}", "{*}", written)
            if key.startswith("."):
                key = first.rsplit(".", 1)[0] + key
            else:
                first = key
            rows[_canonical(key)] = line
    return rows


def _covered(path: str, rows: dict[str, str]) -> bool:
    """`path` canonical. A container (`booking`, `machines`) is covered by its rows."""
    if path in rows or any(key.startswith(path + ".") for key in rows):
        return True
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner = ".".join(parts[:cut])
        if owner in rows:
            spans = " ".join(re.findall(r"`([^`]+)`", rows[owner]))
            below = [p for p in parts[cut:] if p != "{*}"]
            return all(re.search(rf"\b{re.escape(p)}\b", spans) for p in below)
    return False


def _canonical(path: str) -> str:
    """`machines[].bookings[].start` and `machines[].bookings` name the same keys."""
    return path.replace("[]", "")


def test_every_schema_key_is_in_the_readme_table() -> None:
    rows = table_rows()
    missing = [p for p in schema_paths()
               if not p.startswith(tuple(a + "." for a in ADAPTER_SPECIFIC))
               and not _covered(_canonical(p), rows)]
    assert missing == [], f"config/schema.json keys missing from README's table: {missing}"


def test_the_readme_table_names_only_schema_keys() -> None:
    known = {_canonical(p).rsplit(".", n)[0] for p in schema_paths() for n in range(3)}
    stale = [k for k in table_rows() if _canonical(k) not in known]
    assert stale == [], f"README's configuration table names keys the schema lacks: {stale}"
