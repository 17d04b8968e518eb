"""What a misspelt plant-YAML key was meant to be.

Why: "unknown field" alone leaves a plant engineer comparing `topic_prefx` with a 1,000-line
schema; the keys the block at that place takes are known from the pydantic models, so the
message can name the likely one (`did you mean 'topic_prefix'?`) or list them.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel

Loc = tuple[int | str, ...]

_LISTED_AT_MOST = 12  # a longer list is noise: the schema command has them all


def _alternatives(tp: object) -> list[object]:
    """`tp` without Annotated, Optional and unions: the types a value there may take."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _alternatives(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [alt for arg in get_args(tp) for alt in _alternatives(arg)]
    return [tp]


def _model(tp: object) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _step(tp: object, part: int | str) -> list[object]:
    """The types one level down from `tp` along `part` (a key or a list index)."""
    model = _model(tp)
    if model is not None:
        if not isinstance(part, str):
            return []
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return _alternatives(info.annotation)
        return []
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
        return _alternatives(args[1])
    if isinstance(origin, type) and issubclass(origin, Sequence) and args and isinstance(part, int):
        return _alternatives(args[0])
    return []


def keys_at(root: type[BaseModel], loc: Loc) -> set[str]:
    """The keys the mapping at `loc` (a path from `root`) takes, over every model a union
    there allows. A path part that leads nowhere is a union member's tag in pydantic's error
    location (`points.0.holding.x`), so it is skipped."""
    here: list[object] = [root]
    for part in loc:
        nxt = [t for tp in here for t in _step(tp, part)]
        if nxt:
            here = nxt
    keys: set[str] = set()
    for tp in here:
        model = _model(tp)
        if model is not None:
            for name, info in model.model_fields.items():
                keys.add(info.alias or name)
    return keys


def unknown_key_message(root: type[BaseModel], loc: Loc) -> str:
    """The message for the unknown key at the end of `loc`: the closest known key, else the
    keys the block takes, and where to read them all."""
    where = "`edge-gateway schema` lists every key"
    if not loc or not isinstance(loc[-1], str):
        return f"unknown field ({where})"
    known = keys_at(root, loc[:-1])
    close = difflib.get_close_matches(loc[-1], sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown field: did you mean {close[0]!r}? ({where})"
    if known and len(known) <= _LISTED_AT_MOST:
        return f"unknown field: this block takes {', '.join(sorted(known))}"
    return f"unknown field (check spelling; {where})"
