"""MTConnect agent client: `/probe`, then `/current`, then `/sample?from=` page after page.

Why polling pages rather than the agent's multipart `interval` stream: each page is a
complete, independently parseable document whose header says where the buffer stands
(`firstSequence`, `nextSequence`, `instanceId`), so continuity is checked on every page
and a stuck chunked stream cannot hold the adapter hostage. While the agent has more
than one page to give, pages are fetched back to back; once caught up, the adapter waits
`poll_interval` before asking again.

Resynchronization, the two cases the issue names:

- agent restart: `instanceId` changed. Sequence numbers of the old instance mean nothing
  now, so the device model is probed again (it may have changed) and the state is
  re-read with `/current`;
- buffer overrun: the agent answered OUT_OF_RANGE, or `firstSequence` moved past our
  `from` (observations were dropped before we read them). `/current` gives every data
  item's latest value, so the normalized state is whole again; the intermediate history
  is lost, which is counted in `describe()["overruns"]` and logged.

Either way the next batch carries the full current state ("without loss of state"): the
twin never keeps a value the device no longer has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from adapters.base import Adapter, AdapterContext, expect_settings
from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError
from models.machine_state import SIG_ALARM
from models.sample import Quality, Sample, utc_now

from .documents import (
    ErrorDocument,
    Observation,
    StreamsDocument,
    parse_probe,
    parse_streams,
)
from .settings import MtconnectAgentSettings
from .vocabulary import Normalizer, parse_timestamp

__all__ = ["MtconnectAgentAdapter"]


class MtconnectAgentAdapter(Adapter):
    """Reads one device of an MTConnect agent over HTTP (entry point `mtconnect`)."""

    settings_model: ClassVar[type[BaseModel]] = MtconnectAgentSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, MtconnectAgentSettings)
        super().__init__(context, settings)
        self.config = settings
        self._client: httpx.AsyncClient | None = None
        renames = {p.data_item: p.name for p in settings.points}
        units = {p.name: p.unit for p in settings.points if p.unit}
        self.normalizer = Normalizer(context.asset, {}, renames,
                                     keep_unlisted=settings.connection.unlisted == "keep",
                                     units=units)
        self.device: str | None = settings.connection.device
        self.instance_id: str | None = None
        self.next_sequence: int | None = None
        self.restarts = 0
        self.description: dict[str, str] = {}
        self.overruns = 0
        self.observations = 0
        self.pages = 0
        self.unknown_items = 0

    @property
    def endpoint(self) -> str:
        return self.config.connection.url

    def _path(self, request: str) -> str:
        prefix = f"/{self.device}" if self.device else ""
        return f"{self.endpoint}{prefix}/{request}"

    def _log(self, event: str, **kw: Any) -> None:
        if self.context.logger is not None:
            self.context.logger.warning(event, endpoint=self.endpoint, **kw)

    async def connect(self) -> None:
        await self.aclose()
        self._client = httpx.AsyncClient(timeout=self.config.connection.timeout,
                                         follow_redirects=False)
        try:
            await self._probe()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _get(self, url: str, params: dict[str, int] | None = None) -> bytearray:
        client = self._client
        if client is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        cap = self.config.connection.max_reply_bytes
        try:
            async with client.stream("GET", url, params=params) as rsp:
                declared = rsp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:  # refused without reading it
                    raise ProtocolError(f"{url}: reply of {declared} B is over max_reply_bytes "
                                        f"({cap} B)")
                body = bytearray()  # grown in place: no list of chunks, no join copy
                async for chunk in rsp.aiter_bytes():  # decoded: a gzip bomb counts expanded
                    body += chunk
                    if len(body) > cap:
                        raise ProtocolError(f"{url}: reply larger than max_reply_bytes "
                                            f"({cap} B)")
                status = rsp.status_code
        except httpx.TimeoutException as exc:
            raise DeviceUnavailable(f"{url}: no reply within "
                                    f"{self.config.connection.timeout}s") from exc
        except httpx.TransportError as exc:
            raise DeviceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        elements = body.count(b"<")  # an upper bound of the elements (with comments, PIs)
        if elements > self.config.connection.max_elements:
            raise ProtocolError(f"{url}: reply with {elements} XML tags, over the "
                                f"{self.config.connection.max_elements} allowed for count "
                                f"{self.config.connection.count}")
        if status >= 500:
            raise DeviceUnavailable(f"{url}: HTTP {status}")
        if status >= 300 and b"MTConnectError" not in body[:4096]:
            raise ProtocolError(f"{url}: HTTP {status}")
        return body

    async def _probe(self) -> None:
        body = await self._get(self._path("probe"))
        try:
            doc = parse_probe(body, self.config.connection.device)
        except ProtocolError as exc:
            if "not in the device model" in str(exc) or "NO_DEVICE" in str(exc):
                raise ConfigurationError(f"{self.endpoint}: {exc}") from exc
            raise
        if not doc.items:
            raise ConfigurationError(f"{self.endpoint}: device {doc.device!r} has no data items")
        self.device = self.config.connection.device or doc.device or None
        self.normalizer.set_items(doc.items)
        self.normalizer.conditions.clear()
        self.instance_id = doc.header.instance_id or None
        self.next_sequence = None
        self.description = doc.description

    def stream(self) -> AsyncIterator[Sequence[Sample]]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Sequence[Sample]]:
        resyncs = 0  # in a row: an agent whose instanceId flips on every request (two
        # agents behind one address) must not be hammered with back-to-back probes
        while True:
            if self.next_sequence is None:
                if resyncs > 1:
                    await asyncio.sleep(self.context.poll_interval)
                resyncs += 1
                batch = await self._current()
                if batch:
                    yield batch
                continue
            batch, caught_up = await self._sample()
            if self.next_sequence is not None:
                resyncs = 0
            if batch:
                yield batch
            if caught_up:
                await asyncio.sleep(self.context.poll_interval)

    async def _current(self) -> list[Sample]:
        doc = parse_streams(await self._get(self._path("current")))
        if isinstance(doc, ErrorDocument):
            raise ProtocolError(f"{self.endpoint}: /current failed: {doc.errors}")
        if self.instance_id is not None and doc.header.instance_id != self.instance_id:
            await self._restarted(doc.header.instance_id)
            return []
        self.instance_id = doc.header.instance_id
        self.normalizer.conditions.clear()
        now = utc_now()
        samples = self._samples(doc.observations, now)
        if any(i.category == "CONDITION" for i in self.normalizer.items.values()):
            # the full state: an alarm cleared while we were away must clear here too
            samples = [s for s in samples if s.signal != SIG_ALARM]
            samples.append(Sample(self.context.asset, SIG_ALARM,
                                  self.normalizer.conditions.current(), None, now, None,
                                  Quality.GOOD))
        self.next_sequence = doc.header.next_sequence
        # the device model's Description (manufacturer, model, serial number) travels as
        # samples with the well-known identification names, which the AAS nameplate uses
        samples += [
            Sample(self.context.asset, key, value, None, now, None, Quality.GOOD)
            for key, value in self.description.items()
            if key in ("manufacturer", "model", "serial_number")
        ]
        return samples

    async def _restarted(self, new_instance: str) -> None:
        self.restarts += 1
        self._log("mtconnect_agent_restarted", old=self.instance_id, new=new_instance)
        await self._probe()

    async def _sample(self) -> tuple[list[Sample], bool]:
        assert self.next_sequence is not None
        start = self.next_sequence
        doc = parse_streams(await self._get(
            self._path("sample"), {"from": start, "count": self.config.connection.count}))
        head = doc.header
        if head is not None and self.instance_id and head.instance_id \
                and head.instance_id != self.instance_id:
            await self._restarted(head.instance_id)
            return [], False
        if isinstance(doc, ErrorDocument):
            if doc.has("OUT_OF_RANGE"):
                self._overrun(start, head.first_sequence if head else None)
                return [], False
            raise ProtocolError(f"{self.endpoint}: /sample failed: {doc.errors}")
        assert isinstance(doc, StreamsDocument)
        header = doc.header
        if start < header.first_sequence:
            self._overrun(start, header.first_sequence)
            return [], False
        self.pages += 1
        obs = [o for o in doc.observations if o.sequence >= start]
        samples = self._samples(obs, utc_now())
        self.next_sequence = max(header.next_sequence, start)
        return samples, self.next_sequence > header.last_sequence

    def _overrun(self, start: int, first: int | None) -> None:
        self.overruns += 1
        self._log("mtconnect_buffer_overrun", requested=start, first_sequence=first,
                  hint="observations were dropped by the agent; resynchronizing from /current")
        self.next_sequence = None

    def _samples(self, observations: list[Observation], now: Any) -> list[Sample]:
        out: list[Sample] = []
        n = self.normalizer
        for o in observations:
            self.observations += 1
            item = n.items.get(o.data_item_id)
            if item is None:
                self.unknown_items += 1
                continue
            ts = parse_timestamp(o.timestamp)
            s = (n.condition(item, o.level, o.native_code, message=o.value, source_ts=ts,
                             gateway_ts=now) if o.level
                 else n.sample(item, o.value, ts, now))
            if s is not None:
                out.append(s)
        return out

    def point_addresses(self) -> dict[str, str]:
        return {p.name: f"data item {p.data_item}" for p in self.config.points}

    def signal_sources(self) -> dict[str, str]:
        """Each signal's data item id(s) from the agent's /probe; empty before the first."""
        attrs = {"manufacturer": "manufacturer", "model": "model", "serial_number": "serialNumber"}
        return {
            **{key: f"/probe Device/Description@{attr}" for key, attr in attrs.items()
               if key in self.description},
            **{signal: "data item " + " + ".join(i.id for i in items)
               for signal, items in self.normalizer.signals().items()},
        }

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "mtconnect",
            "endpoint": self.endpoint,
            "device": self.device,
            "instance_id": self.instance_id,
            "next_sequence": self.next_sequence,
            "data_items": len(self.normalizer.items),
            "observations": self.observations,
            "restarts": self.restarts,
            "overruns": self.overruns,
            "unknown_items": self.unknown_items,
        }
