"""Adapter discovery through the `edge_gateway.adapters` entry-point group.

Only adapter types the plant YAML uses are imported, so a broken third-party plugin cannot
stop a plant that does not use it; a name registered twice is refused rather than
silently shadowed. Validating a plant needs only each type's settings model: `settings_loader`
takes it from `edge_gateway.adapter_settings` where the adapter registers it there, so the
parent of worker processes imports no protocol library (pymodbus, asyncua, snap7).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from adapters.base import ENTRY_POINT_GROUP, SETTINGS_ENTRY_POINT_GROUP, Adapter
from models.errors import PluginError


def _entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise PluginError(
                f"adapter type {ep.name!r} is registered twice: by {_dist(other)} ({other.value}) "
                f"and by {_dist(ep)} ({ep.value}); uninstall one of them"
            )
        found[ep.name] = ep
    return found


def _dist(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "an unknown package"


def available() -> list[str]:
    return sorted(_entry_points())


def load(name: str) -> type[Adapter]:
    return _load(name, _entry_points())


def loader() -> Callable[[str], type[Adapter]]:
    """`load` for many machines in a row (a plant's validation, the fleet's start): the
    entry points are scanned once and each type is loaded once. A scan costs ~4 ms, which
    made 2 s of a 500-machine plant's validation and 2 s of its start (issue 17). Errors
    are not kept: each machine of a broken type gets its own."""
    scanned: list[dict[str, EntryPoint]] = []
    loaded: dict[str, type[Adapter]] = {}

    def load_once(name: str) -> type[Adapter]:
        cls = loaded.get(name)
        if cls is None:
            if not scanned:
                scanned.append(_entry_points())
            cls = loaded[name] = _load(name, scanned[0])
        return cls

    return load_once


def settings_loader() -> Callable[[str], type[BaseModel]]:
    """Each adapter type's settings model, scanned and loaded once per type like `loader`:
    the one registered in `edge_gateway.adapter_settings` (its settings module alone), else
    the adapter class's `settings_model` (a plugin that registers only its adapter). A
    type must be registered as an adapter either way, so a plant that validates can run."""
    scanned: list[tuple[dict[str, EntryPoint], dict[str, EntryPoint]]] = []
    loaded: dict[str, type[BaseModel]] = {}

    def load_once(name: str) -> type[BaseModel]:
        model = loaded.get(name)
        if model is None:
            if not scanned:
                scanned.append((_entry_points(), _entry_points(SETTINGS_ENTRY_POINT_GROUP)))
            adapters, settings = scanned[0]
            _entry(name, adapters)
            ep = settings.get(name)
            model = _load(name, adapters).settings_model if ep is None else _settings(name, ep)
            loaded[name] = model
        return model

    return load_once


def _entry(name: str, eps: dict[str, EntryPoint]) -> EntryPoint:
    ep = eps.get(name)
    if ep is None:
        raise PluginError(
            f"unknown adapter {name!r}; installed: {', '.join(sorted(eps)) or 'none'}"
        )
    return ep


def _load(name: str, eps: dict[str, EntryPoint]) -> type[Adapter]:
    ep = _entry(name, eps)
    cls = _import(name, ep)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise PluginError(
            f"adapter {name!r} from package {_dist(ep)} is not an adapters.base.Adapter"
        )
    return cls


def _settings(name: str, ep: EntryPoint) -> type[BaseModel]:
    model = _import(name, ep)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(
            f"adapter {name!r} from package {_dist(ep)}: its settings are not a pydantic model"
        )
    return model


def _import(name: str, ep: EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:  # a plugin's import error is its own bug, reported by name
        raise PluginError(
            f"adapter {name!r} from package {_dist(ep)} failed to import: {exc}"
        ) from exc
