"""The FOCAS adapter: one TCP session per machine, one data request per poll.

Each poll packs status (cnc_statinfo), program number (cnc_rdprgnum) and every configured
macro variable or parameter into as few data requests as `max_requests_per_frame` allows,
so a poll costs one or two round trips. System info (cnc_sysinfo) is read once per
connect: it names the control for the nameplate and gives the axis count that parameter
records are sized by.

A sub-reply with a FOCAS error code (no such variable...) makes that point quality bad; a
frame that does not parse, or a reply of the wrong type, is a `ProtocolError` and drops the
session, because FOCAS replies carry no request id and a late one would be misread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from adapters.base import AdapterContext, PollingAdapter, expect_settings
from models.errors import DeviceUnavailable, ProtocolError
from models.machine_state import (
    SIG_ALARM,
    SIG_ESTOP,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PROGRAM,
    ControllerMode,
    Execution,
)
from models.sample import Quality, Sample, Value, utc_now

from . import protocol as p
from .settings import FocasPoint, FocasSettings

# cnc_statinfo `run` -> execution, the mapping the MTConnect FANUC adapters use
RUN_STATES: dict[int, Execution] = {
    0: Execution.READY,  # **** (reset)
    1: Execution.STOPPED,  # STOP
    2: Execution.FEED_HOLD,  # HOLD
    3: Execution.ACTIVE,  # STaRT
    4: Execution.INTERRUPTED,  # MSTR (tool retract and recover)
}
# cnc_statinfo `aut` -> controller mode
MODES: dict[int, ControllerMode] = {
    0: ControllerMode.MDI, 1: ControllerMode.AUTOMATIC, 3: ControllerMode.EDIT,
    4: ControllerMode.MANUAL, 5: ControllerMode.MANUAL, 6: ControllerMode.MANUAL,
    7: ControllerMode.MANUAL, 8: ControllerMode.MANUAL, 9: ControllerMode.MANUAL,
    10: ControllerMode.AUTOMATIC,  # RMT: DNC operation
}


class FocasAdapter(PollingAdapter):
    """FANUC 0i/16i/18i/30i-class controls over FOCAS2 Ethernet (TCP 8193)."""

    settings_model: ClassVar[type[BaseModel]] = FocasSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        settings = expect_settings(type(self), settings, FocasSettings)
        super().__init__(context, settings)
        self.config = settings
        self.sysinfo: p.SysInfo | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = p.FrameReader()
        self.last_cycle_requests = 0

    @property
    def endpoint(self) -> str:
        c = self.config.connection
        return f"focas://{c.host}:{c.port}"

    async def connect(self) -> None:
        await self.aclose()
        c = self.config.connection
        try:
            async with asyncio.timeout(c.timeout):
                self._reader, self._writer = await asyncio.open_connection(c.host, c.port)
        except TimeoutError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: connect timed out") from exc
        except OSError as exc:
            raise DeviceUnavailable(f"{self.endpoint}: cannot connect: {exc}") from exc
        self._frames = p.FrameReader()
        ftype, _ = await self._exchange(p.encode_frame(p.OPEN_REQUEST, p.OPEN_BODY), "open")
        if ftype != p.OPEN_RESPONSE:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: open answered with frame type {ftype:#06x}")
        (reply,) = await self._data([p.Request(p.FUNC_SYSINFO)])
        if reply.error != p.EW_OK:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: cnc_sysinfo failed with error {reply.error}")
        try:
            self.sysinfo = p.SysInfo.decode(reply.data)
        except Exception as exc:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: cnc_sysinfo reply unreadable") from exc

    async def aclose(self) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            # be polite: the control has a small number of FOCAS sessions (typically 5-20)
            with contextlib.suppress(Exception):
                writer.write(p.encode_frame(p.CLOSE_REQUEST))
                async with asyncio.timeout(0.2):
                    await writer.drain()
        self._drop()

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    async def _exchange(self, frame: bytes, what: str) -> tuple[int, bytes]:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests += 1
        timeout = self.config.connection.timeout
        try:
            async with asyncio.timeout(timeout):
                writer.write(frame)
                await writer.drain()
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise DeviceUnavailable(
                            f"{self.endpoint}: connection closed by the control"
                        )
                    frames = self._frames.feed(data)
                    if frames:
                        break
        except TimeoutError as exc:
            self._drop()
            raise DeviceUnavailable(
                f"{self.endpoint}: no reply to {what} within {timeout}s"
            ) from exc
        except OSError as exc:
            self._drop()
            raise DeviceUnavailable(f"{self.endpoint}: connection lost: {exc}") from exc
        except ValueError as exc:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: {what}: {exc}") from exc
        except DeviceUnavailable:
            self._drop()
            raise
        if len(frames) > 1:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: {what}: more replies than requests")
        _, ftype, body = frames[0]
        return ftype, body

    async def _data(self, requests: list[p.Request]) -> list[p.Reply]:
        frame = p.encode_frame(p.DATA_REQUEST, p.encode_requests(requests))
        what = ",".join(f"{r.function:#04x}" for r in requests)
        ftype, body = await self._exchange(frame, f"data request {what}")
        try:
            if ftype != p.DATA_RESPONSE:
                raise ValueError(f"frame type {ftype:#06x} instead of a data reply")
            replies = p.decode_replies(body)
            if [r.function for r in replies] != [r.function for r in requests]:
                raise ValueError("sub-replies do not match the sub-requests")
        except ValueError as exc:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: {exc}") from exc
        return replies

    async def read_once(self) -> Sequence[Sample]:
        if self._writer is None or self.sysinfo is None:
            raise DeviceUnavailable(f"{self.endpoint}: not connected")
        self.last_cycle_requests = 0
        info = self.sysinfo
        requests = [p.Request(p.FUNC_STATINFO), p.Request(p.FUNC_PROGRAM_NUMBER)]
        for pt in self.config.points:
            if pt.source == "macro":
                requests.append(p.Request(p.FUNC_MACRO, (pt.number, pt.number, 0, 0, 0)))
            else:
                requests.append(p.Request(p.FUNC_PARAMETER, (pt.number, pt.number, 0, 0, 0)))
        replies: list[p.Reply] = []
        step = self.config.connection.max_requests_per_frame
        for i in range(0, len(requests), step):
            replies += await self._data(requests[i : i + step])
        asset = self.context.asset
        ts = utc_now()
        samples: list[Sample] = []

        def add(signal: str, value: Value, unit: str | None = None,
                quality: Quality = Quality.GOOD) -> None:
            samples.append(Sample(asset, signal, value, unit, ts, quality=quality))

        add("model", info.model)
        add("cnc_type", info.cnc_type)
        add("cnc_series", info.series)
        add("control_version", info.version)
        status, program = replies[0], replies[1]
        try:
            self._status(status, add)
            self._program(program, add)
        except (ValueError, IndexError) as exc:
            self._drop()
            raise ProtocolError(f"{self.endpoint}: unreadable status reply: {exc}") from exc
        for pt, reply in zip(self.config.points, replies[2:], strict=True):
            value, quality = _point_value(pt, reply)
            add(pt.name, value, pt.unit, quality)
        return samples

    def _status(self, reply: p.Reply, add: Any) -> None:
        if reply.error != p.EW_OK:
            for sig in (SIG_EXECUTION, SIG_MODE, SIG_ESTOP, SIG_ALARM):
                add(sig, None, quality=Quality.BAD)
            return
        st = p.StatInfo.decode(reply.data)
        add("focas_run", st.run)
        add("focas_mode", st.aut)
        add("motion", st.motion == 1)
        execution = RUN_STATES.get(st.run)
        add(SIG_EXECUTION, execution.value if execution else None,
            quality=Quality.GOOD if execution else Quality.UNCERTAIN)
        mode = MODES.get(st.aut)
        add(SIG_MODE, mode.value if mode else None,
            quality=Quality.GOOD if mode else Quality.UNCERTAIN)
        add(SIG_ESTOP, st.emergency == 1)
        # statinfo tells only that an alarm is active; the number needs cnc_rdalmmsg (not yet)
        add(SIG_ALARM, "ALARM" if st.alarm == 1 else "")

    def _program(self, reply: p.Reply, add: Any) -> None:
        if reply.error != p.EW_OK:
            add(SIG_PROGRAM, None, quality=Quality.BAD)
            return
        run, main = p.PROGRAM_NUMBER.unpack(reply.data[: p.PROGRAM_NUMBER.size])
        add(SIG_PROGRAM, f"O{run:04d}")
        add("program_number", run)
        add("main_program_number", main)

    def point_addresses(self) -> dict[str, str]:
        return {pt.name: f"{pt.source} {pt.number}" for pt in self.config.points}

    def signal_sources(self) -> dict[str, str]:
        """The FOCAS function (and ODB field) behind each fixed signal."""
        return {
            **dict.fromkeys(("model", "cnc_type", "cnc_series", "control_version"),
                            "cnc_sysinfo (at connect)"),
            "focas_run": "cnc_statinfo.run",
            "focas_mode": "cnc_statinfo.aut",
            "motion": "cnc_statinfo.motion",
            SIG_EXECUTION: "cnc_statinfo.run",
            SIG_MODE: "cnc_statinfo.aut",
            SIG_ESTOP: "cnc_statinfo.emergency",
            SIG_ALARM: "cnc_statinfo.alarm",
            SIG_PROGRAM: "cnc_rdprgnum.data",
            "program_number": "cnc_rdprgnum.data",
            "main_program_number": "cnc_rdprgnum.mdata",
        }

    def describe(self) -> dict[str, Any]:
        info = self.sysinfo
        c = self.config.connection
        return {
            "protocol": "focas2-ethernet",
            "endpoint": self.endpoint,
            "points": len(self.config.points),
            "requests_per_cycle": -(-(2 + len(self.config.points)) // c.max_requests_per_frame),
            "last_cycle_requests": self.last_cycle_requests,
            **({"model": info.model, "series": info.series, "version": info.version}
               if info else {}),
        }


def _point_value(pt: FocasPoint, reply: p.Reply) -> tuple[Value, Quality]:
    if reply.error != p.EW_OK:
        return None, Quality.BAD
    raw: float | None
    try:
        raw = (p.decode_macro(reply.data) if pt.source == "macro"
               else float(p.decode_parameter(reply.data)[1]))
    except Exception:
        return None, Quality.BAD
    if raw is None:  # a vacant macro variable
        return None, Quality.UNCERTAIN
    if pt.data_type == "bool":
        return raw != 0.0, Quality.GOOD
    value = raw * pt.scale + pt.offset
    if pt.data_type == "int":
        return int(value), Quality.GOOD
    return value, Quality.GOOD
