"""The S7 adapter: reads a Siemens S7-300/400/1200/1500 over ISO-on-TCP with python-snap7.

python-snap7 3.x is pure Python and ships an asyncio client (`snap7.async_client`), so the
reads run on the gateway's event loop, no thread. The client's `read_multi_vars` sends one
request per variable, so the multi-variable requests of our plan (plan.py) are encoded by
the library's own `S7Protocol.build_multi_read_request`, exchanged with the public
`iso_exchange_buffer`, and their per-item return codes read here: one refused item (a DB
that does not exist) then spoils only its own points. Timers and counters go through
`read_area`.

Failure policy, the same as every adapter's:

- the PLC answered with an error for an item (or a whole request): those points get
  quality bad and value None, the cycle goes on, the error is logged once until that
  request works again, with the S7-1200/1500 explanation when it is the usual cause
  (PUT/GET not permitted, optimized block access);
- no reply, refused or dropped connection: `DeviceUnavailable`; a reply that does not
  parse or answers another request: `ProtocolError`. Both drop the connection, so a late
  answer cannot be taken for the next request's. The runner backs off and reconnects.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel
from snap7.async_client import AsyncClient
from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError
from snap7.s7protocol import get_return_code_description
from snap7.type import Area as Snap7Area

from adapters.base import AdapterContext, PollingAdapter, expect_settings
from models.errors import DeviceUnavailable, ProtocolError
from models.sample import Quality, Sample, utc_now

from .address import Area
from .codec import interpret
from .plan import ByteRange, ReadPlan, Request, minimum_requests, plan_reads
from .settings import MIN_PDU, S7Settings

_CONNECTION_TYPES = {"pg": 1, "op": 2, "basic": 3}
_ITEM_OK = 0xFF
_ITEM = struct.Struct(">BBH")

PUT_GET_HINT = (
    "the CPU refuses absolute access. On an S7-1200/1500, in TIA Portal: CPU properties > "
    "Protection & Security > Connection mechanisms > 'Permit access with PUT/GET "
    "communication from remote partner', and for each DB read: DB properties > Attributes > "
    "clear 'Optimized block access' (optimized DBs have no absolute addresses); then "
    "download the hardware configuration and the DBs"
)
_EXPLAIN = {
    0x03: PUT_GET_HINT,
    0x05: "the address lies outside the DB or area (is the DB shorter than the map, or "
          "optimized? optimized DBs have no absolute offsets: clear 'Optimized block access')",
    0x0A: "no such DB or area in the CPU (check the DB number; on an S7-1200/1500 an "
          "optimized DB also answers this: clear 'Optimized block access')",
}
_HEADER_REFUSALS = {0x8104, 0x8500, 0xD209, 0xD602, 0x8404}


def explain(code: int) -> str:
    """Text for an item return code, with the usual S7-1200/1500 cause when there is one."""
    text = f"{get_return_code_description(code)} (0x{code:02X})"
    hint = _EXPLAIN.get(code)
    return f"{text}: {hint}" if hint else text


class S7Adapter(PollingAdapter):
    """Siemens S7 PLCs: data blocks, merkers, inputs, outputs, timers, counters."""

    settings_model: ClassVar[type[BaseModel]] = S7Settings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, S7Settings)
        super().__init__(context, settings)
        self.config = settings
        c = settings.connection
        # Planned for the smallest PDU until the CPU tells us its own at connect.
        self.plan: ReadPlan = plan_reads(settings.points, c, MIN_PDU)
        self.last_cycle_requests = 0
        self._client: AsyncClient | None = None
        self._reported: dict[Request, str] = {}
        self._guard = c.timeout * 1.5 + 0.1

    @property
    def endpoint(self) -> str:
        c = self.config.connection
        if c.remote_tsap is not None:
            return f"s7://{c.host}:{c.port}?tsap={c.local_tsap:04X}/{c.remote_tsap:04X}"
        return f"s7://{c.host}:{c.port}?rack={c.rack}&slot={c.slot}"

    def _new_client(self) -> tuple[AsyncClient, int, int]:
        """A client set up for our TSAPs; returns it with the rack and slot to connect with.

        AsyncClient.connect derives the remote TSAP as (type << 8) | (rack << 5) | slot;
        any 16-bit TSAP has exactly one such decomposition, so an explicit remote TSAP is
        passed through that formula rather than by poking the client's internals.
        """
        c = self.config.connection
        client = AsyncClient()
        client.pdu_length = c.pdu_size
        if c.remote_tsap is not None and c.local_tsap is not None:
            client.local_tsap = c.local_tsap
            client.connection_type = c.remote_tsap >> 8
            return client, (c.remote_tsap >> 5) & 0x7, c.remote_tsap & 0x1F
        client.connection_type = _CONNECTION_TYPES[c.connection_type]
        return client, c.rack, c.slot

    async def connect(self) -> None:
        await self.aclose()  # the runner reconnects on the same instance
        c = self.config.connection
        client, rack, slot = self._new_client()
        try:
            async with asyncio.timeout(self._guard):
                await client.connect(c.host, rack, slot, c.port)
        except TimeoutError as exc:
            await _quietly_close(client)
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        except Exception as exc:  # library boundary: nothing of snap7 escapes
            await _quietly_close(client)
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {exc}") from exc
        if client.connection is not None:
            client.connection.timeout = c.timeout
        self._client = client
        # the negotiated PDU and the reads it takes reach the log in the supervisor's
        # `device_connected` (describe()): one line per connect, not two
        self.plan = plan_reads(self.config.points, c, client.pdu_length)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quietly_close(client)

    async def read_once(self) -> Sequence[Sample]:
        client = self._client
        if client is None or not client.get_connected():
            await self.aclose()
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests = 0
        chunks: dict[int, list[tuple[int, bytearray]]] = {}  # range -> (start, bytes)
        failed: dict[int, str] = {}
        for request in self.plan.requests:
            self.last_cycle_requests += 1
            results, whole = await self._execute(client, request)
            errors: list[str] = []
            for item, result in zip(request.items, results, strict=True):
                if isinstance(result, str):
                    failed.setdefault(item.range_index, result)
                    errors.append(f"{self.plan.ranges[item.range_index].label}: {result}")
                else:
                    chunks.setdefault(item.range_index, []).append((item.start, result))
            self._report(request, whole or "; ".join(errors))
        ts = utc_now()
        samples: list[Sample] = []
        for index, rng in enumerate(self.plan.ranges):
            data = None if index in failed else _assemble(chunks.get(index, []))
            samples += _decode(self.context.asset, rng, data, ts)
        return samples

    async def _execute(
        self, client: AsyncClient, request: Request
    ) -> tuple[list[bytearray | str], str]:
        """Per item its bytes or the PLC's refusal; and the refusal of the whole request."""
        try:
            async with asyncio.timeout(self._guard):
                if request.element_area:
                    item = request.items[0]
                    area = Snap7Area.TM if item.area is Area.TIMERS else Snap7Area.CT
                    return [await client.read_area(area, 0, item.start, item.size)], ""
                return await self._multi_read(client, request), ""
        except TimeoutError as exc:
            await self.aclose()
            raise DeviceUnavailable(
                f"{self.endpoint}: no reply within {self.config.connection.timeout}s"
            ) from exc
        except (S7ConnectionError, S7TimeoutError, OSError) as exc:
            await self.aclose()
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc
        except S7ProtocolError as exc:
            code = exc.error_code or 0
            if code in _HEADER_REFUSALS or (request.element_area and "Read operation" in str(exc)):
                text = str(exc)
                if code in _HEADER_REFUSALS:
                    text = f"{exc}: {PUT_GET_HINT}"
                return [text] * len(request.items), text
            await self.aclose()
            raise ProtocolError(f"{self.endpoint}: {exc}") from exc
        except S7Error as exc:  # library boundary
            await self.aclose()
            raise ProtocolError(f"{self.endpoint}: {type(exc).__name__}: {exc}") from exc

    async def _multi_read(self, client: AsyncClient, request: Request) -> list[bytearray | str]:
        protocol = client.protocol
        pdu = protocol.build_multi_read_request(
            [(int(it.area), it.db, it.start, it.size) for it in request.items]
        )
        reply = protocol.parse_response(bytes(await client.iso_exchange_buffer(bytearray(pdu))))
        if reply["sequence"] != struct.unpack_from(">H", pdu, 4)[0]:
            raise S7ProtocolError("reply to another request (sequence number mismatch)")
        params = reply.get("parameters") or {}
        if params.get("item_count") != len(request.items):
            raise S7ProtocolError(
                f"reply carries {params.get('item_count')} items, asked {len(request.items)}"
            )
        return _split_items(bytes(reply.get("raw_data") or b""), request)

    def _report(self, request: Request, error: str) -> None:
        """Log a request's failure once, and again only after it has worked in between."""
        if not error:
            self._reported.pop(request, None)
            return
        if self._reported.get(request) == error:
            return
        self._reported[request] = error
        if self.context.logger is not None:
            self.context.logger.warning(
                "s7_read_refused", endpoint=self.endpoint, error=error,
                items=[f"{it.area.name} db={it.db} {it.start}+{it.size}" for it in request.items],
            )

    def point_addresses(self) -> dict[str, str]:
        return {
            p.name: p.address + (f" {p.data_type}" if p.data_type else "")
            for p in self.config.points
        }

    def describe(self) -> dict[str, Any]:
        c = self.config.connection
        return {
            "protocol": "s7",
            "endpoint": self.endpoint,
            "pdu": self.plan.pdu,
            "points": len(self.config.points),
            "requests_per_cycle": len(self.plan.requests),
            "minimum_requests": minimum_requests(self.config.points, self.plan.pdu),
            "last_cycle_requests": self.last_cycle_requests,
            "max_gap": c.max_gap,
        }


def _split_items(raw: bytes, request: Request) -> list[bytearray | str]:
    """The data section of a read reply: per item a return code, a length, the data."""
    results: list[bytearray | str] = []
    offset = 0
    last = len(request.items) - 1
    for i, item in enumerate(request.items):
        if offset + _ITEM.size > len(raw):
            raise S7ProtocolError(f"read reply truncated at item {i}")
        code, transport, length = _ITEM.unpack_from(raw, offset)
        offset += _ITEM.size
        if code != _ITEM_OK:
            results.append(explain(code))
            continue
        size = length // 8 if transport in (0x03, 0x04, 0x05) else length
        if size != item.size or offset + size > len(raw):
            raise S7ProtocolError(f"item {i}: {size} bytes in the reply, asked {item.size}")
        results.append(bytearray(raw[offset:offset + size]))
        offset += size + (size & 1 if i < last else 0)
    return results


def _assemble(chunks: list[tuple[int, bytearray]]) -> bytearray:
    return bytearray(b"".join(data for _, data in sorted(chunks, key=lambda c: c[0])))


def _decode(asset: str, rng: ByteRange, data: bytearray | None, ts: datetime) -> list[Sample]:
    unit = 2 if rng.area in (Area.TIMERS, Area.COUNTERS) else 1
    samples = []
    for slot in rng.slots:
        p = slot.point
        if data is None:
            value, quality = None, Quality.BAD
        else:
            start = slot.offset * unit
            value, quality = interpret(data[start:start + p.width * unit], p)
        samples.append(Sample(asset, p.name, value, p.unit, ts, quality=quality))
    return samples


async def _quietly_close(client: AsyncClient) -> None:
    try:
        await client.disconnect()
    except Exception:  # closing a broken socket may fail; nothing is left to do with it
        return
