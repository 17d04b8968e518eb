"""The Haas adapter: Machine Data Collection Q-commands, one request at a time.

Why one at a time: MDC has no request ids, so a reply can only be matched to its request
by order. After a timeout or a garbled reply the link is closed, because a late reply
would otherwise be taken for the next request's (the same rule as the Modbus adapter).

Identification (Q100 serial number, Q101 control version, Q102 model) is read once per
connect and repeated in every batch, so a twin that starts late still sees it. Q104 and
Q500 are read every poll; Q600 once per configured macro variable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from adapters.base import AdapterContext, PollingAdapter, expect_settings
from models.errors import DeviceUnavailable, ProtocolError
from models.machine_state import (
    SIG_ALARM,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    SIG_PROGRAM,
)
from models.sample import Quality, Sample, Value, utc_now

from . import protocol as p
from .link import Link, make_link
from .settings import HaasMacro, HaasSettings

SIG_SERIAL = "serial_number"
SIG_MODEL = "model"
SIG_VERSION = "control_version"


class HaasAdapter(PollingAdapter):
    """Haas NGC / classic controls over TCP (setting 143) or RS-232."""

    settings_model: ClassVar[type[BaseModel]] = HaasSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, HaasSettings)
        super().__init__(context, settings)
        self.config = settings
        self._link: Link | None = None
        self._reader = p.ReplyReader()
        self._identity: dict[str, str] = {}
        self.last_cycle_requests = 0
        self._counter_from_macro = any(pt.name == SIG_PART_COUNT for pt in settings.points)

    @property
    def endpoint(self) -> str:
        c = self.config.connection
        if c.transport == "serial":
            return f"serial://{c.port_path}?{c.baudrate}-{c.bytesize}{c.parity}{c.stopbits}"
        return f"tcp://{c.host}:{c.port}"

    async def connect(self) -> None:
        await self.aclose()  # the runner reconnects on the same instance
        link = make_link(self.config.connection)
        try:
            async with asyncio.timeout(self.config.connection.timeout):
                await link.open()
        except TimeoutError as exc:
            link.close()
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        self._link = link
        self._reader = p.ReplyReader()
        self._identity = {}
        if self.config.connection.identify:
            for q, signal in ((p.Q_SERIAL, SIG_SERIAL), (p.Q_VERSION, SIG_VERSION),
                              (p.Q_MODEL, SIG_MODEL)):
                reply = await self.query(q)
                if not p.is_error(reply):
                    self._identity[signal] = p.value_of(reply)

    async def aclose(self) -> None:
        self._drop()

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    async def query(self, q: int, arg: int | None = None) -> str:
        """Send one Q-command and return its reply text (framing stripped)."""
        link = self._link
        if link is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests += 1
        what = f"Q{q}" if arg is None else f"Q{q} {arg}"
        try:
            async with asyncio.timeout(self.config.connection.timeout):
                await link.write(p.command(q, arg))
                while True:
                    replies = self._reader.feed(await link.read())
                    if replies:
                        break
        except TimeoutError as exc:
            await self.aclose()
            raise DeviceUnavailable(
                f"{self.endpoint}: no reply to {what} within {self.config.connection.timeout}s"
            ) from exc
        except ValueError as exc:  # the reader's "no terminator" guard
            await self.aclose()
            raise ProtocolError(f"{self.endpoint}: {what}: {exc}") from exc
        except DeviceUnavailable:
            await self.aclose()
            raise
        if len(replies) > 1:  # more answers than questions: we are out of step
            await self.aclose()
            raise ProtocolError(f"{self.endpoint}: {what}: unexpected extra reply {replies[1]!r}")
        return replies[0]

    async def read_once(self) -> Sequence[Sample]:
        if self._link is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests = 0
        c = self.config.connection
        asset = self.context.asset
        samples: list[Sample] = []

        def add(signal: str, value: Value, unit: str | None = None,
                quality: Quality = Quality.GOOD) -> None:
            samples.append(Sample(asset, signal, value, unit, utc_now(), quality=quality))

        for signal, text in self._identity.items():
            add(signal, text)
        if c.mode:
            reply = await self.query(p.Q_MODE)
            if p.is_error(reply):
                add(SIG_MODE, None, quality=Quality.BAD)
            else:
                word = p.mode_word(reply)
                add("haas_mode", word)
                mode = p.MODES.get(word)
                if mode is None:
                    add(SIG_MODE, None, quality=Quality.UNCERTAIN)
                else:
                    add(SIG_MODE, mode.value)
        if c.status:
            self._status(await self.query(p.Q_STATUS), add)
        for point in self.config.points:
            reply = await self.query(p.Q_MACRO, point.macro)
            value, quality = _macro_value(reply, point)
            add(point.name, value, point.unit, quality)
        return samples

    def _status(self, reply: str, add: Any) -> None:
        if p.is_error(reply):
            add(SIG_EXECUTION, None, quality=Quality.BAD)
            return
        try:
            st = p.parse_status(reply)
        except ValueError as exc:  # out of step or not a Haas: start over on a new link
            self._drop()
            raise ProtocolError(f"{self.endpoint}: Q500: {exc}") from exc
        add("haas_status", st.status)
        execution = p.STATUSES.get(st.status)
        if execution is None:
            add(SIG_EXECUTION, None, quality=Quality.UNCERTAIN)
        else:
            add(SIG_EXECUTION, execution.value)
        # Haas has no alarm number in MDC; ALARM status is all the protocol tells.
        add(SIG_ALARM, "ALARM" if st.status == "ALARM" else "")
        if st.program is not None:  # absent while BUSY: the twin keeps the last value
            add(SIG_PROGRAM, p.program_name(st.program))
            digits = "".join(ch for ch in st.program if ch.isdigit())
            if digits:
                add("program_number", int(digits))
        if st.parts is not None and not self._counter_from_macro:
            add(SIG_PART_COUNT, st.parts)

    def point_addresses(self) -> dict[str, str]:
        return {pt.name: f"macro #{pt.macro} (Q600)" for pt in self.config.points}

    def signal_sources(self) -> dict[str, str]:
        """The Q command (and reply field) behind each fixed signal."""
        status = f"Q{p.Q_STATUS}"
        return {
            SIG_SERIAL: f"Q{p.Q_SERIAL}",
            SIG_VERSION: f"Q{p.Q_VERSION}",
            SIG_MODEL: f"Q{p.Q_MODEL}",
            "haas_mode": f"Q{p.Q_MODE}",
            SIG_MODE: f"Q{p.Q_MODE}",
            "haas_status": f"{status} status",
            SIG_EXECUTION: f"{status} status",
            SIG_ALARM: f"{status} status",
            SIG_PROGRAM: f"{status} PROGRAM",
            "program_number": f"{status} PROGRAM",
            SIG_PART_COUNT: f"{status} PARTS",
        }

    def describe(self) -> dict[str, Any]:
        c = self.config.connection
        return {
            "protocol": "haas-mdc",
            "endpoint": self.endpoint,
            "transport": c.transport,
            "macros": [pt.macro for pt in self.config.points],
            "requests_per_cycle": int(c.mode) + int(c.status) + len(self.config.points),
            "last_cycle_requests": self.last_cycle_requests,
            **self._identity,
        }


def _macro_value(reply: str, point: HaasMacro) -> tuple[Value, Quality]:
    """A Q600 answer as the point's type; words instead of a number mean quality bad."""
    if p.is_error(reply):
        return None, Quality.BAD
    try:
        raw = p.parse_macro(reply)
    except ValueError:
        return None, Quality.BAD
    if point.data_type == "bool":
        return raw != 0.0, Quality.GOOD
    value = raw * point.scale + point.offset
    if point.data_type == "int":
        return int(value), Quality.GOOD
    return value, Quality.GOOD
