"""The Modbus adapter: executes the read plan each poll and turns replies into Samples.

Failure policy, chosen so one bad register never blinds the whole machine and one dead
machine never hides behind stale values:

- an exception response (the device answered "illegal address", "busy"...) concerns only
  the points of that request: they get quality bad and value None, and the cycle goes on;
  the error is logged once until that request succeeds again;
- a short reply (fewer registers than asked) is treated the same way: the device is alive
  but the data of that request cannot be trusted;
- no reply, refused or dropped connection: `DeviceUnavailable`;
  a reply that does not match the request (wrong unit or transaction id): `ProtocolError`.
  Both drop the connection so a late answer cannot be taken for the next request's.

pymodbus's own reconnect loop and retries are off: the gateway's runner owns retry timing
(backoff with jitter, log once on loss and once on recovery). Every call into pymodbus
sits behind `asyncio.timeout`, so even a library bug cannot hang the poll loop (not
`wait_for`: on Python 3.11 it can swallow a cancellation racing with a reply, which
would keep a device polling after the gateway was told to stop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from adapters.base import AdapterContext, PollingAdapter, expect_settings
from models.errors import DeviceUnavailable, ProtocolError
from models.sample import Quality, Sample, utc_now

from .codec import Decoder, point_decoder
from .plan import ReadRequest, minimum_requests, plan_reads
from .settings import BIT_KINDS, ModbusSettings, modicon_advice

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

Reader = Callable[..., Awaitable[ModbusPDU]]
_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}
_ILLEGAL_ADDRESS = "exception 2 "


class ModbusAdapter(PollingAdapter):
    """Modbus TCP, RTU (serial) and RTU-over-TCP devices."""

    settings_model: ClassVar[type[BaseModel]] = ModbusSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, ModbusSettings)
        super().__init__(context, settings)
        self.config = settings
        self._steps = [_Step(r) for r in plan_reads(settings.points, settings.connection)]
        self.last_cycle_requests = 0
        self._client: ModbusBaseClient | None = None
        self._reported: set[tuple[int, str, int, int, str]] = set()
        c = settings.connection
        # pymodbus is told the configured timeout; our guard is a backstop a little later,
        # so normally pymodbus gives up first and keeps its own state consistent.
        self._guard = c.timeout * 1.5 + 0.1
        self._heard = False  # any bytes received during the current request
        self._replies: dict[_Step, Sequence[int] | str] = {}
        """Per request: its registers as last read, or why the device refused them."""

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus drops frames it cannot match and just times out; this tells the two apart."""
        if not sending and data:
            self._heard = True
        return data

    @property
    def endpoint(self) -> str:
        c = self.config.connection
        if c.transport == "rtu":
            return f"rtu://{c.port_path}?{c.baudrate}-{c.bytesize}{c.parity}{c.stopbits}"
        scheme = "tcp" if c.transport == "tcp" else "rtu+tcp"
        return f"{scheme}://{c.host}:{c.port}"

    def _new_client(self) -> ModbusBaseClient:
        c = self.config.connection
        common: dict[str, Any] = {
            "timeout": c.timeout,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
        }
        if c.transport == "rtu":
            assert c.port_path is not None  # guaranteed by ModbusConnection validation
            return AsyncModbusSerialClient(
                c.port_path,
                framer=FramerType.RTU,
                baudrate=c.baudrate,
                bytesize=c.bytesize,
                parity=c.parity,
                stopbits=c.stopbits,
                **common,
            )
        assert c.host is not None
        framer = FramerType.SOCKET if c.transport == "tcp" else FramerType.RTU
        return AsyncModbusTcpClient(c.host, port=c.port, framer=framer, **common)

    async def connect(self) -> None:
        await self.aclose()  # the runner reconnects on the same instance
        client = self._new_client()
        try:
            async with asyncio.timeout(self._guard):
                ok = await client.connect()
        except TimeoutError as exc:
            client.close()
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        except Exception as exc:  # library boundary: nothing of pymodbus/pyserial escapes
            client.close()
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {exc}") from exc
        if not ok:
            client.close()
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect (refused or unreachable)")
        self._client = client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def plan(self) -> list[ReadRequest]:
        """The requests of one poll (coalesced reads, minus any a device made us split)."""
        return [step.request for step in self._steps]

    async def read_once(self) -> Sequence[Sample]:
        client = self._client
        if client is None or not client.connected:
            await self.aclose()
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests = 0
        samples: list[Sample] = []
        append = samples.append
        asset, keep_raw = self.context.asset, self.context.keep_raw
        queue = deque(self._steps)
        steps: list[_Step] = []
        while queue:
            step = queue.popleft()
            req = step.request
            self.last_cycle_requests += 1
            values, error = await self._execute(client, req)
            if values is None and error.startswith(_ILLEGAL_ADDRESS) and len(req.slots) > 1:
                queue.extendleft(reversed([_Step(r) for r in self._split(req)]))
                continue
            steps.append(step)
            ts = utc_now()
            if values is None:
                for name, unit, _, _ in step.reads:
                    append(Sample(asset, name, None, unit, ts, None, Quality.BAD))
            else:  # positional: keywords cost more per call, and this runs per point
                for name, unit, at, decode in step.reads:
                    value, quality = decode(values, at)
                    append(Sample(asset, name, value, unit, ts, None, quality))
            if keep_raw:  # formatted only when asked (raw_values)
                self._replies[step] = error if values is None else values
            if error or self._reported:  # nothing to clear and nothing to say: skip
                self._report(req, error)
        self._steps = steps
        return samples

    def _split(self, req: ReadRequest) -> list[ReadRequest]:
        """A device refused a coalesced read with "illegal data address": it does not map
        some register the read bridged. Split the request (first at its gaps, then point by
        point) and remember the split, so coalescing stays the default and a picky device
        costs one refused read per hole, once."""
        points = [slot.point for slot in req.slots]
        conn = self.config.connection
        parts = plan_reads(points, conn.model_copy(update={"max_gap": 0}))
        if len(parts) == 1:
            parts = plan_reads(points, conn.model_copy(update={"one_request_per_point": True}))
        if self.context.logger is not None:
            self.context.logger.warning(
                "modbus_read_split",
                endpoint=self.endpoint,
                unit=req.unit,
                register=req.kind,
                address=req.address,
                count=req.count,
                into=len(parts),
                reason="illegal data address: the device does not map every register the "
                "coalesced read spans",
            )
        return parts

    async def _execute(
        self, client: ModbusBaseClient, req: ReadRequest
    ) -> tuple[Sequence[int] | None, str]:
        """Values of one request, or None and why when the device refused it."""
        read: Reader = getattr(client, _READERS[req.kind])
        self._heard = False
        try:
            async with asyncio.timeout(self._guard):
                rsp = await read(req.address, count=req.count, device_id=req.unit)
        except (TimeoutError, ModbusIOException) as exc:
            # pymodbus reports "no response" for silence and for frames it could not match
            # (garbage, wrong unit or transaction id) alike; what we heard tells them apart.
            await self.aclose()
            where = f"{self.endpoint} unit {req.unit} {req.kind} {req.address}+{req.count}"
            if self._heard:
                raise ProtocolError(f"{where}: garbled or mismatched reply") from exc
            raise DeviceUnavailable(
                f"{where}: no reply within {self.config.connection.timeout}s"
            ) from exc
        except ConnectionException as exc:
            await self.aclose()
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc
        except Exception as exc:  # library boundary: nothing of pymodbus escapes
            await self.aclose()
            raise ProtocolError(f"{self.endpoint}: {type(exc).__name__}: {exc}") from exc
        if rsp.isError():
            code = int(getattr(rsp, "exception_code", 0))
            return None, f"exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"
        # a reply of its own: kept as it is unless it carries more than asked (bits come
        # padded to whole bytes)
        raw = [int(b) for b in rsp.bits] if req.kind in BIT_KINDS else rsp.registers
        if len(raw) < req.count:
            return None, f"short reply: {len(raw)} of {req.count}"
        return (raw if len(raw) == req.count else raw[: req.count]), ""

    def _report(self, req: ReadRequest, error: str) -> None:
        """Log a request's failure once, and again only after it has worked in between."""
        keys = {k for k in self._reported if k[:4] == (req.unit, req.kind, req.address, req.count)}
        if not error:
            self._reported -= keys
            return
        key = (req.unit, req.kind, req.address, req.count, error)
        if key in self._reported:
            return
        self._reported -= keys
        self._reported.add(key)
        if self.context.logger is not None:
            self.context.logger.warning(
                "modbus_exception",
                endpoint=self.endpoint,
                unit=req.unit,
                register=req.kind,
                address=req.address,
                count=req.count,
                error=error,
                points=[s.point.name for s in req.slots],
            )

    def point_addresses(self) -> dict[str, str]:
        unit = self.config.connection.unit
        out = {}
        for p in self.config.points:
            where = f"{p.kind} {p.address}"
            if p.width > 1:
                where += f"+{p.width}"
            if p.unit_id is not None and p.unit_id != unit:
                where = f"unit {p.unit_id} {where}"
            detail = p.data_type if p.data_type != "bit" else f"bit {p.bit}"
            if p.byte_order != "ABCD" and p.width > 1:
                detail += f" {p.byte_order}"
            out[p.name] = f"{where} {detail}"
        return out

    def raw_values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for step, reply in self._replies.items():
            for name, _, at, _ in step.reads:
                width = step.widths[name]
                out[name] = reply if isinstance(reply, str) else _registers_text(
                    reply[at : at + width])
            if isinstance(reply, str) and reply.startswith(_ILLEGAL_ADDRESS):
                for slot in step.request.slots:  # a register map's 40011 written as is
                    advice = modicon_advice(slot.point.kind, slot.point.address)
                    if advice:
                        out[slot.point.name] = f"{reply}: {advice}"
        return out

    def describe(self) -> dict[str, Any]:
        c = self.config.connection
        return {
            "protocol": "modbus",
            "endpoint": self.endpoint,
            "transport": c.transport,
            "unit": c.unit,
            "points": len(self.config.points),
            "requests_per_cycle": len(self.plan),
            "minimum_requests": minimum_requests(self.config.points, c),
            "last_cycle_requests": self.last_cycle_requests,
        }


class _Step:
    """One request of the poll with its points' decoders, built once (not per poll).

    Identity-hashed on purpose: the key of `_replies` (a ReadRequest holds pydantic points
    with dict fields, which do not hash)."""

    __slots__ = ("reads", "request", "widths")

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        self.reads: tuple[tuple[str, str | None, int, Decoder], ...] = tuple(
            (s.point.name, s.point.unit, s.offset, point_decoder(s.point)) for s in request.slots
        )
        self.widths = {s.point.name: s.point.width for s in request.slots}


def _registers_text(registers: Sequence[int]) -> str:
    """Registers as the hex words a Modbus tool shows, e.g. `0x0001 0x86a0`."""
    return " ".join(f"0x{r:04x}" for r in registers)
