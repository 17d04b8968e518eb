"""`edge-gateway probe`: read one machine once, the way the gateway would, and judge each point.

Why a separate path from the daemon: commissioning asks "is my point map right?" before
anything is signed or sent. The daemon answers that only indirectly (a state that looks
odd, a counter of bad samples), so a register map copied from the wrong manual went
unnoticed. Probe uses the same adapter class and validated settings as `run`, reads every
configured point once (polling adapters) or until every configured point has had its first
notification (subscriptions), and names each point that is not good:

- quality bad or uncertain from the adapter (device refused the address, a code missing
  from the point's `map`, NaN), with the adapter's undecoded value beside it;
- a machine-state signal whose value is outside the shared vocabulary
  (models/machine_state.py), which the twin would silently keep out of the state;
- a value no real machine would report (see `implausible`): a register map copied from
  another controller usually reads without a single error, and only shows this way;
- a configured point that produced no value at all within the time allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from adapters.base import Adapter, AdapterContext, PollingAdapter
from edge.config import registry
from edge.config.loader import LoadedPlant
from edge.devices.twin import AssetTwin
from edge.text_table import cell, format_table
from models.errors import ConfigurationError, TransientError
from models.machine_state import SIG_ALARM
from models.sample import Quality, Sample

_REFUSALS = ("exception", "short reply", "unresolved", "refused by the server")
"""How raw_values() reports a point the device refused: the Modbus adapter's exception
replies, the OPC UA adapter's node ids the server does not have or would not monitor."""


@dataclass(frozen=True)
class ProbeRow:
    point: str
    address: str
    raw: str
    value: object
    unit: str | None
    quality: str
    error: str

    @property
    def good(self) -> bool:
        return self.quality == Quality.GOOD.value and not self.error


@dataclass(frozen=True)
class ProbeResult:
    machine: str
    endpoint: str
    rows: list[ProbeRow]
    failure: str = ""
    """Why nothing could be read (connection refused, timeout); empty when the read ran."""

    @property
    def ok(self) -> bool:
        return not self.failure and all(r.good for r in self.rows)

    @property
    def bad_points(self) -> list[str]:
        return [r.point for r in self.rows if not r.good]


async def _collect(adapter: Adapter, wanted: set[str], within: float) -> list[Sample]:
    """One read for polling adapters; notifications until every wanted point has one (or
    time is up) for subscriptions, whose first batch need not carry every point."""
    if isinstance(adapter, PollingAdapter):
        async with asyncio.timeout(within):
            return list(await adapter.read_once())
    seen: dict[str, Sample] = {}
    stream: AsyncIterator[Sequence[Sample]] = adapter.stream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch = await anext(stream)
            except TimeoutError:
                break
            for s in batch:
                seen.setdefault(s.signal, s)
            if wanted <= seen.keys():
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return list(seen.values())


def implausible(value: object) -> str:
    """Why a value read with quality good still betrays a wrong point map, or "".

    Two tells that need no knowledge of the machine: a non-zero float too small for any
    physical quantity (integer registers decoded as a float, or a wrong byte order, give
    subnormal numbers like 1.4e-45), and a text point that holds no printable character
    (the address holds no string)."""
    if isinstance(value, float) and value != 0.0 and abs(value) < 1e-30:
        return f"{value:.3g} is implausible: integer registers read as a float, or byte_order?"
    if isinstance(value, str) and not any(ch.isprintable() and not ch.isspace() for ch in value):
        return "no text at this address (empty or control characters)"
    return ""


def judge(
    samples: Sequence[Sample],
    addresses: dict[str, str],
    raw: dict[str, str],
    asset: str,
    within: float,
    *,
    sources: dict[str, str],
) -> list[ProbeRow]:
    """Rows for every sample and every configured point that produced none; a signal the
    adapter derives itself is shown beside `sources` (its nodes, data item...)."""
    latest = {sample.signal: sample for sample in samples}
    _, rejected = AssetTwin(asset).apply(latest.values())
    outside = dict(rejected)
    rows = []
    for name in [*addresses, *sorted(latest.keys() - addresses.keys())]:
        s = latest.get(name)
        address = addresses.get(name) or sources.get(name, "(device model)")
        if s is None:
            rows.append(
                ProbeRow(name, address, "-", None, None, "-", f"no value within {within:g} s")
            )
            continue
        raw_text = raw.get(name, "-")
        refused = raw_text.startswith(_REFUSALS)  # the device's own words, not a value
        error = ""
        if s.quality is Quality.BAD:
            error = raw_text if refused else "the adapter marked it bad"
        elif s.quality is Quality.UNCERTAIN:
            error = "uncertain: a code missing from the point's map, or a vacant variable"
        elif name in outside:
            error = f"{outside[name]!r} is not in the machine-state vocabulary"
        elif name in addresses and name != SIG_ALARM:  # "" is the vocabulary's "no alarm"
            error = implausible(s.value)
        rows.append(
            ProbeRow(
                name, address, "-" if refused else raw_text, s.value, s.unit, s.quality.value,
                error,
            )
        )
    return rows


async def probe(loaded: LoadedPlant, machine_id: str, within: float = 10.0) -> ProbeResult:
    """Connect, read, judge, close. Raises KeyError for a machine not in the plant."""
    machine = loaded.plant.machine(machine_id)
    adapter_cls = registry.load(machine.adapter)
    context = AdapterContext(
        asset=machine.id,
        poll_interval=machine.poll_interval,
        state_dir=loaded.state_dir,
        keep_raw=True,
    )
    adapter = adapter_cls(context, loaded.settings[machine.id])
    addresses = adapter.point_addresses()
    endpoint = str(adapter.describe().get("endpoint", machine.adapter))
    try:
        async with asyncio.timeout(within):
            await adapter.connect()
        samples = await _collect(adapter, set(addresses), within)
        sources = adapter.signal_sources()
        endpoint = str(adapter.describe().get("endpoint", endpoint))
    except TimeoutError:
        return ProbeResult(machine.id, endpoint, [], f"no answer within {within:g} s")
    except (TransientError, ConfigurationError) as exc:
        return ProbeResult(machine.id, endpoint, [], str(exc) or type(exc).__name__)
    finally:
        await adapter.aclose()
    return ProbeResult(
        machine.id,
        endpoint,
        judge(samples, addresses, adapter.raw_values(), machine.id, within, sources=sources),
    )


def render(result: ProbeResult) -> str:
    head = ("point", "address/node", "raw", "value", "unit", "quality", "error")
    lines = [f"{result.machine} at {result.endpoint}"]
    if result.failure:
        return "\n".join([*lines, f"cannot read: {result.failure}", ""])
    lines += format_table(
        head,
        [
            (r.point, r.address, cell(r.raw), cell(r.value), r.unit or "", r.quality, r.error)
            for r in result.rows
        ],
    )
    good = sum(r.good for r in result.rows)
    verdict = (
        f"ok: all {good} point(s) good"
        if result.ok
        else f"{len(result.bad_points)} of {len(result.rows)} point(s) not good: "
        + ", ".join(result.bad_points)
    )
    return "\n".join([*lines, verdict, ""])
