"""The adapter contract (docs/architecture.md, "The adapter contract").

Lifecycle, driven by the gateway's runner::

    adapter = AdapterClass(context, settings)   # no I/O here; settings already validated
    await adapter.connect()                     # may raise TransientError / ConfigurationError
    async for batch in adapter.stream():        # lists of Sample, forever
        ...
    await adapter.aclose()                      # always called, even after errors

Errors: raise `TransientError` (or a subclass) when the device may come back: the runner
backs off (capped exponential with jitter), logs once when the device goes away and once
when it returns, then calls `connect()` again on the same instance. Raise
`ConfigurationError` when retrying cannot help: that device stops, no other is affected.

Polling adapters subclass `PollingAdapter` and implement `read_once()` only; the base class
paces reads on a monotonic schedule (no drift, no bursts after a stall).

Adapters are registered under the entry-point group `edge_gateway.adapters`; the entry
point names the adapter class, whose `settings_model` (a pydantic model) validates the
machine's `connection:` and `points:` blocks of the plant YAML, passed to it as
`{"connection": ..., "points": [...]}` by edge/config/loader.py. An adapter may also
register that model alone, under the same name in `edge_gateway.adapter_settings`: a
process that only validates the plant (the parent of worker processes, `validate`) then
imports the settings module, not the adapter and its protocol library.
"""

from __future__ import annotations

import abc
import asyncio
import os
import random
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError, TransientError
from models.logger import Logger
from models.plant import SecretRef
from models.sample import Sample

__all__ = [
    "Adapter",
    "AdapterContext",
    "ConfigurationError",
    "DeviceUnavailable",
    "PollingAdapter",
    "ProtocolError",
    "Sample",
    "TransientError",
]

ENTRY_POINT_GROUP = "edge_gateway.adapters"
SETTINGS_ENTRY_POINT_GROUP = "edge_gateway.adapter_settings"


class AdapterSettings(BaseModel):
    """Base of every adapter's settings models: an unknown key is an error (a typo in the
    plant YAML must not be ignored silently), and settings never change once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def point_clashes(self) -> list[tuple[int, str]]:
        """(index in `points`, message) for each configured point named like a signal the
        adapter already publishes by itself with these settings (a profile, fixed commands).

        Why: such a point puts two records of one signal in one envelope, often of two
        types (`2002` and `"2002"`): a Sparkplug host re-births the device on every flip, a
        Telegraf/InfluxDB consumer hits a field type conflict. The loader reports each at
        the point's `name` with file and line. Empty by default: the adapter publishes only
        its points."""
        return []


def name_clashes(names: Sequence[str | None], taken: Collection[str], by: str) -> list[
        tuple[int, str]]:
    """`AdapterSettings.point_clashes` for point names `names` and the signals `taken` that
    `by` (e.g. "profile machine_tool") publishes: one message per clashing point."""
    return [
        (i, f"rename the point, e.g. {_renamed(name)}; {by} already publishes `{name}`")
        for i, name in enumerate(names)
        if name is not None and name in taken
    ]


def _renamed(name: str) -> str:
    return "alarm_code" if name == "alarm" else f"{name}_point"


def resolve_secret(ref: SecretRef) -> str:
    """The value a `SecretRef` names (environment variable or file), read only when a
    connection needs it; a trailing newline (as `echo` or editors leave) is dropped.

    Errors name where the secret should have been (the variable or the path) so an operator
    can fix it, never what it holds: these messages end up in logs and systemd's journal.
    Here, in the adapter contract, because adapters (OPC UA user passwords) and the gateway
    (MQTT passwords, TLS key passwords, the status page token; edge/config/secret_refs.py)
    must read secrets the same way, and adapters may not import the gateway."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise ConfigurationError(f"secret {ref}: environment variable {ref.env!r} is not set")
        return value
    assert ref.file is not None  # the model guarantees exactly one of env / file
    try:
        text = Path(ref.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigurationError(f"secret {ref}: cannot read {ref.file!r} ({reason})") from None
    return text.removesuffix("\n").removesuffix("\r")


def no_duplicates(names: Sequence[str], what: str = "point name(s)") -> None:
    """A ValueError naming every value given more than once. Why every adapter's settings
    call it: the twin keys signals by name, so a second point of one name would overwrite
    the first without a word; the plant YAML error reads the same for every adapter."""
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate {what}: {', '.join(dup)}")


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def expect_settings(adapter: type, settings: BaseModel, model: type[SettingsT]) -> SettingsT:
    """`settings` as the adapter's own settings type, or a ConfigurationError naming both
    (the registry validates with `settings_model`, so this guards direct construction)."""
    if not isinstance(settings, model):
        raise ConfigurationError(
            f"{adapter.__name__} needs {model.__name__}, got {type(settings).__name__}"
        )
    return settings


@dataclass(frozen=True)
class AdapterContext:
    """What the gateway tells an adapter about the machine it serves."""

    asset: str
    poll_interval: float = 1.0
    logger: Logger | None = None  # the daemon's structlog logger, seen through models.logger
    state_dir: Path | None = None  # the gateway's state directory, for keys and certificates
    keep_raw: bool = False
    """Keep each read's undecoded form for `raw_values()`: on for `edge-gateway probe` and
    while the status page is enabled; off otherwise. Adapters should keep a reference per
    read (not a copy per point) and do the cutting and formatting in `raw_values()`, which
    runs only while someone looks."""
    poll_phase: float | None = None
    """Where in each interval a `PollingAdapter` reads, in seconds after the interval's grid
    on the monotonic clock (the gateway's `gateway.poll_slots`): devices of one phase wake
    the loop once between them, which is most of what a poll at 1 s costs (issue 17).
    None: a random phase of the device's own (`spread`)."""


class Adapter(abc.ABC):
    """Base class of every adapter."""

    settings_model: ClassVar[type[BaseModel]]

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        self.context = context
        self.settings = settings

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[Sequence[Sample]]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Static facts for the terminal view and `describe` queries (points, endpoint)."""
        return {}

    async def reachable(self) -> bool | None:
        """Cheap check, between retries, whether the device answers on the network again
        (e.g. its TCP port accepts); None when the adapter cannot tell. The runner uses it to
        retry at once when a device that was gone is back, instead of sitting out its
        backoff."""
        return None

    def point_addresses(self) -> dict[str, str]:
        """Where each configured point is read (register, node id, macro...) by signal name,
        so commissioning tools and the status page can show a value beside its source.
        Empty for adapters whose signals come from the device's own model."""
        return {}

    def signal_sources(self) -> dict[str, str]:
        """Where each signal the adapter derives by itself (a profile, the device's model, a
        fixed status call) comes from, by signal name: node ids, data item ids, functions.
        Asked again whenever shown, because some are known only after connect (OPC UA
        discovery); `point_addresses()` covers the configured points."""
        return {}

    def raw_values(self) -> dict[str, str]:
        """The last read's undecoded form per signal (registers, reply text), kept only when
        `context.keep_raw` is set; a wrong register map shows here before anywhere else."""
        return {}


class PollingAdapter(Adapter):
    """An adapter that reads the whole device on a fixed interval."""

    last_read_seconds: float | None = None
    """How long the latest `read_once()` took (the runner's poll-duration histogram)."""

    @abc.abstractmethod
    async def read_once(self) -> Sequence[Sample]: ...

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        loop = asyncio.get_running_loop()
        interval = self.context.poll_interval
        next_at = first_deadline(loop.time(), interval, self.context.poll_phase) - interval
        while True:
            started = loop.time()
            batch = await self.read_once()
            self.last_read_seconds = loop.time() - started
            yield batch
            now = loop.time()
            next_at = next_deadline(next_at + interval, now, interval)
            await asyncio.sleep(next_at - now)


def first_deadline(now: float, interval: float, phase: float | None) -> float:
    """When the read after the first (which is immediate, at `now`) is due.

    With a phase: the first time `k * interval + phase` on the monotonic clock at least half
    an interval after `now`, so devices of one phase read together from their second read on
    (CLOCK_MONOTONIC is system-wide: worker processes share the grid), and a device started
    just before its slot does not read twice in a row. Without: a random moment within one
    interval, so devices started together do not poll (and sign) in one burst."""
    if phase is None:
        return now + random.uniform(0, interval)
    due = (now // interval) * interval + phase % interval
    while due < now + interval / 2:
        due += interval
    return due


def next_deadline(due: float, now: float, interval: float) -> float:
    """`due`, or when a read fell behind it, the next time on the same grid after `now`:
    missed reads are skipped rather than made up in a burst, and the phase is kept."""
    if due < now:
        due = now + interval - ((now - due) % interval)
    return due
