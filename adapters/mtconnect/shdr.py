"""SHDR adapter client: reads an MTConnect adapter's TCP stream (port 7878) directly.

Why talk SHDR at all when an agent exists: many machines ship an SHDR adapter and no agent,
and running an agent on the gateway only to read it back over HTTP doubles the moving parts.

Behaviour, each choice driven by what real recordings contain:

- heartbeats: on connect we send `* PING`; a device answering `* PONG <ms>` gets a PING
  every `<ms>` and is declared gone (`DeviceUnavailable`) after twice that without a byte.
  A device that never answers PONG (legacy adapters) is declared gone after
  `connection.silence` seconds without data;
- timestamps that jump backwards between runs (the OKUMA recording has four runs, each on
  its own clock): `source_ts` stays the device's word (`timestamps: device`, the default)
  and each backward jump is counted (`describe()["clock_jumps"]`) and logged, so durations
  computed within a run are exact; `timestamps: gateway` drops device time altogether;
- counters that reset to 0: `part_count` is passed on as the device's cumulative value; the
  OEE engine turns it into increments with `CounterTracker` (a drop counts the new value,
  so a reset never makes a negative delta);
- assets (`@ASSET@`, multiline bodies): parsed with the same hostile-XML-safe parser as the
  agent documents; a refused asset is logged and skipped, the data stream goes on. Each
  accepted change is announced as an `asset_changed` sample (`"<type>:<id>"`);
- junk (not UTF-8, control characters, unreadable timestamps or keys, keys outside the
  device model): refused, counted and logged once per interval (`shdr_junk.py`), never
  published; a number that is not a number is published as None with quality bad;
- MESSAGE items (`key|native_code|text`), typed by the device model or a point's
  `type: MESSAGE`: the text is published as the value (string, quality good);
- units: values are in the data item's `nativeUnits` (the agent would convert them); with a
  device model they are converted to the declared `units`, or labelled with the native unit
  when the conversion is unknown (`units.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel

from adapters.base import Adapter, AdapterContext, expect_settings
from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError
from models.sample import Quality, Sample, utc_now

from .documents import parse_document, parse_probe
from .settings import ShdrSettings
from .shdr_junk import RefusedInput, bad_key, decode_line, has_control
from .shdr_protocol import AssetEvent, Command, ConditionEvent, DataEvent, Event, ShdrParser
from .vocabulary import DataItem, Normalizer, parse_timestamp

__all__ = ["SIG_ASSET", "ShdrAdapter"]

SIG_ASSET = "asset_changed"
MAX_LINE = 1024 * 1024
_CLOCK_TOLERANCE = timedelta(seconds=1)

# What common SHDR keys mean when neither a device model nor a point says so (the keys of
# cppagent's sample adapters and of the gateway's own SHDR simulator).
_DEFAULT_KEYS: dict[str, tuple[str, str | None, str]] = {
    "avail": ("AVAILABILITY", None, "EVENT"),
    "availability": ("AVAILABILITY", None, "EVENT"),
    "estop": ("EMERGENCY_STOP", None, "EVENT"),
    "emergency_stop": ("EMERGENCY_STOP", None, "EVENT"),
    "mode": ("CONTROLLER_MODE", None, "EVENT"),
    "controller_mode": ("CONTROLLER_MODE", None, "EVENT"),
    "execution": ("EXECUTION", None, "EVENT"),
    "exec": ("EXECUTION", None, "EVENT"),
    "program": ("PROGRAM", None, "EVENT"),
    "part_count": ("PART_COUNT", "ALL", "EVENT"),
    "partcount": ("PART_COUNT", "ALL", "EVENT"),
    "bad_part_count": ("PART_COUNT", "BAD", "EVENT"),
}


class ShdrAdapter(Adapter):
    """Reads an SHDR stream over TCP (entry point `shdr`)."""

    settings_model: ClassVar[type[BaseModel]] = ShdrSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, ShdrSettings)
        super().__init__(context, settings)
        self.config = settings
        c = settings.connection
        items: dict[str, DataItem] = {}
        if c.device_model is not None:
            try:
                data = c.device_model.read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"device_model {c.device_model}: {exc}") from exc
            try:
                items = parse_probe(data, c.device).items
            except ProtocolError as exc:
                raise ConfigurationError(f"device_model {c.device_model}: {exc}") from exc
        for p in settings.points:
            base = self._known(items, p.key)
            if p.type or p.category or base is None:
                items.pop(base.id if base else p.key, None)
                items[p.key] = DataItem(
                    id=p.key, type=p.type or (base.type if base else ""),
                    category=p.category or (base.category if base else
                                            ("SAMPLE" if p.unit else "EVENT")),
                    name=base.name if base else None,
                    sub_type=p.sub_type or (base.sub_type if base else None),
                    units=base.units if base else None,
                    component=p.component or (base.component if base else ""),
                    native_units=base.native_units if base else None,
                    native_scale=base.native_scale if base else None)
        renames = {p.key: p.name for p in settings.points if p.name}
        units = {(p.name or p.key): p.unit for p in settings.points if p.unit}
        self.normalizer = Normalizer(context.asset, items, renames,
                                     keep_unlisted=settings.connection.unlisted == "keep",
                                     units=units, native_units=True)
        # a key outside a device model (or, with `unlisted: drop`, outside the points) is junk
        self._closed = c.device_model is not None or c.unlisted == "drop"
        self.refused = RefusedInput(self._log)
        self._good_ts = ""
        self._by_key: dict[str, DataItem | None] = {}
        self._messages: dict[str, bool] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.parser = ShdrParser(self._is_condition, self._is_message)
        self.heartbeat: float | None = None  # seconds, from the device's PONG
        self.pongs = 0
        self.clock_jumps = 0
        self.lines = 0
        self.assets: dict[str, tuple[str, str]] = {}
        self.refused_assets = 0
        self._last_ts: datetime | None = None

    @staticmethod
    def _known(items: dict[str, DataItem], key: str) -> DataItem | None:
        if key in items:
            return items[key]
        return next((i for i in items.values() if i.name == key), None)

    @property
    def endpoint(self) -> str:
        c = self.config.connection
        return f"shdr://{c.host}:{c.port}"

    def _log(self, event: str, level: str = "warning", **kw: Any) -> None:
        if self.context.logger is not None:
            getattr(self.context.logger, level)(event, endpoint=self.endpoint, **kw)

    def item(self, key: str) -> DataItem | None:
        """The data item an SHDR key stands for (device model, points, then defaults)."""
        if key in self._by_key:
            return self._by_key[key]
        found = self.normalizer.lookup(key)
        if found is None:
            d = _DEFAULT_KEYS.get(key.lower())
            if d is not None:
                found = DataItem(id=key, type=d[0], sub_type=d[1], category=d[2])
            else:
                found = DataItem(id=key, type="", category="EVENT")
            self.normalizer.items[key] = found
        self._by_key[key] = found
        return found

    def _is_condition(self, key: str) -> bool | None:
        found = self.normalizer.lookup(key)
        if found is None:
            return None
        return found.category == "CONDITION"

    def _is_message(self, key: str) -> bool:
        """A MESSAGE (`key|native_code|text`) only when the device model or a point says so:
        its shape is a plain pair and a stray key, so guessing would publish junk as good.
        The text is the value; records have no place for the native code, which is dropped
        (as the agent adapter does with a Message's nativeCode)."""
        known = self._messages.get(key)
        if known is None:  # asked for every key of every line: look a known key up once
            found = self.normalizer.lookup(key)
            if found is None:  # not cached: junk keys must not grow memory
                return False
            known = found.type == "MESSAGE" and found.category == "EVENT"
            self._messages[key] = known
        return known

    async def connect(self) -> None:
        await self.aclose()
        c = self.config.connection
        try:
            async with asyncio.timeout(c.timeout):
                reader, writer = await asyncio.open_connection(c.host, c.port, limit=MAX_LINE)
        except TimeoutError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {exc}") from exc
        self._reader, self._writer = reader, writer
        # a half-read asset must not leak over
        self.parser = ShdrParser(self._is_condition, self._is_message)
        self.heartbeat = None
        await self._ping()

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def _ping(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(b"* PING\n")
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            await self.aclose()
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc

    def stream(self) -> AsyncIterator[Sequence[Sample]]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Sequence[Sample]]:
        loop = asyncio.get_running_loop()
        pending = b""
        last_byte = loop.time()
        next_ping = loop.time() + self.config.connection.heartbeat
        while True:
            reader = self._reader
            if reader is None:
                raise DeviceUnavailable(f"{self.endpoint}: not connected")
            silence = (2 * self.heartbeat if self.heartbeat
                       else self.config.connection.silence)
            now = loop.time()
            wait = max(0.0, min(next_ping, last_byte + silence) - now)
            try:
                async with asyncio.timeout(wait):
                    chunk = await reader.read(65536)
            except TimeoutError:
                now = loop.time()
                if now >= last_byte + silence:
                    await self.aclose()
                    raise DeviceUnavailable(
                        f"{self.endpoint}: nothing heard for {silence:g}s") from None
                if now >= next_ping:
                    await self._ping()
                    next_ping = now + (self.heartbeat or self.config.connection.heartbeat)
                continue
            except OSError as exc:
                await self.aclose()
                raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc
            if not chunk:
                await self.aclose()
                raise DeviceUnavailable(f"{self.endpoint}: closed by the device")
            last_byte = loop.time()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE:
                await self.aclose()
                raise ProtocolError(f"{self.endpoint}: line longer than {MAX_LINE} bytes")
            batch = self.parse_lines(self._decoded(lines))
            if batch:
                yield batch

    def _decoded(self, lines: list[bytes]) -> Iterator[str]:
        for raw in lines:
            text = decode_line(raw)
            if text is None:
                self.lines += 1
                self.refused.refuse("not_utf8", raw.decode("utf-8", "replace"))
            else:
                yield text

    def _refused_line(self, line: str) -> list[Event] | None:
        """The events of a line, or None when the line is junk (counted in `refused`)."""
        if has_control(line):
            self.refused.refuse("control_characters", line)
            return None
        in_body = self.parser.in_asset_body
        malformed = self.parser.malformed
        events = self.parser.feed(line)
        if in_body or line.startswith("*") or not line.strip():
            return events
        if "|" not in line:
            self.refused.refuse("no_fields", line)
            return None
        if self.parser.malformed > malformed:  # a key the line ends on, with no value field
            self.refused.refuse("missing_value", line)
            return None
        for e in events:
            if isinstance(e, DataEvent | ConditionEvent):
                if e.ts != self._good_ts:
                    if e.ts and parse_timestamp(e.ts) is None:
                        self.refused.refuse("bad_timestamp", line)
                        return None
                    self._good_ts = e.ts
                if bad_key(e.key):
                    self.refused.refuse("bad_key", line)
                    return None
        return events

    def _unknown(self, key: str) -> bool:
        if not self._closed or key in self._by_key:
            return False
        if self.normalizer.lookup(key) is not None or key.lower() in _DEFAULT_KEYS:
            return False
        self.refused.refuse("unknown_key", key)
        return True

    def parse_lines(self, lines: Iterable[str]) -> list[Sample]:
        """Lines of SHDR -> samples (public so the benchmark can time parsing alone)."""
        out: list[Sample] = []
        now = utc_now()
        device_ts = self.config.connection.timestamps == "device"
        n = self.normalizer
        for raw in lines:
            self.lines += 1
            events = self._refused_line(raw.rstrip("\r\n"))
            for e in events or ():
                if isinstance(e, DataEvent | ConditionEvent) and self._unknown(e.key):
                    continue
                if isinstance(e, Command):
                    self._command(e.text)
                    continue
                ts = parse_timestamp(e.ts) if device_ts else None
                if ts is not None and not isinstance(e, AssetEvent):
                    self._check_clock(ts)  # asset lines carry the asset's own (old) time
                if isinstance(e, DataEvent):
                    item = self.item(e.key)
                    s = n.sample(item, e.value, ts, now) if item else None
                elif isinstance(e, ConditionEvent):
                    item = self.item(e.key)
                    if item is not None and item.category != "CONDITION":
                        item = DataItem(id=item.id, type=item.type, category="CONDITION",
                                        name=item.name)
                        n.items[e.key] = item
                        self._by_key[e.key] = item
                    s = n.condition(item, e.level, e.native_code, message=e.message,
                                    source_ts=ts, gateway_ts=now) if item else None
                else:
                    s = self._asset(e, ts, now)
                if s is not None:
                    out.append(s)
        return out

    def _check_clock(self, ts: datetime) -> None:
        last = self._last_ts
        if last is not None and ts < last - _CLOCK_TOLERANCE:
            self.clock_jumps += 1
            self._log("shdr_clock_jumped_back", level="info", previous=str(last), now=str(ts))
        self._last_ts = ts

    def _command(self, text: str) -> None:
        if text.upper().startswith("PONG"):
            self.pongs += 1
            parts = text.split()
            try:
                self.heartbeat = int(parts[1]) / 1000.0 if len(parts) > 1 else None
            except ValueError:
                self.heartbeat = None
            if self.heartbeat is not None and self.heartbeat <= 0:
                self.heartbeat = None

    def _asset(self, e: AssetEvent, ts: datetime | None, now: datetime) -> Sample | None:
        if e.command == "REMOVE_ALL_ASSETS":
            for key in [k for k, (t, _) in self.assets.items() if t == e.asset_type]:
                del self.assets[key]
            value = f"{e.asset_type}:*"
        elif e.command == "REMOVE_ASSET":
            self.assets.pop(e.asset_id, None)
            value = f"removed:{e.asset_id}"
        else:
            try:
                parse_document(e.body)
            except ProtocolError as exc:
                self.refused_assets += 1
                self._log("shdr_asset_refused", asset=e.asset_id, reason=str(exc))
                return None
            self.assets[e.asset_id] = (e.asset_type, e.body)
            value = f"{e.asset_type}:{e.asset_id}"
        return Sample(self.context.asset, SIG_ASSET, value, None, now, ts, Quality.GOOD)

    def point_addresses(self) -> dict[str, str]:
        # CONDITION items have no signal of their own: they fold into `alarm`, which is
        # sent only when the set of active faults changes
        return {(p.name or p.key): f"SHDR key {p.key}" for p in self.config.points
                if p.category != "CONDITION"}

    def signal_sources(self) -> dict[str, str]:
        """Each signal's SHDR key(s): the keys seen on the wire, else (not sent yet) the
        device model's name or id for the item."""
        keys = {id(item): key for key, item in self._by_key.items() if item is not None}
        return {
            SIG_ASSET: "SHDR @ASSET@ lines",
            **{signal: "SHDR key " + " + ".join(keys.get(id(i), i.name or i.id) for i in items)
               for signal, items in self.normalizer.signals().items()},
        }

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "shdr",
            "endpoint": self.endpoint,
            "heartbeat": self.heartbeat,
            "lines": self.lines,
            "clock_jumps": self.clock_jumps,
            "assets": len(self.assets),
            "refused_assets": self.refused_assets,
            "refused": self.refused.describe(),
        }
