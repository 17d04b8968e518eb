"""LineMeter: an imaginary line-based protocol, small enough to read in one sitting.

The gateway sends `READ` + LF; the device answers one line, either
`OK state=<word> mode=<word> parts=<int> speed=<float>` or `ERR <message>`.

Everything a real adapter must do is here in miniature: a pydantic settings model (so the
plant YAML is validated at load time), no I/O in the constructor, every library or OS error
translated to the gateway's `TransientError` family, and samples on the well-known state
signal names so the gateway's twin and OEE engine understand this vendor without changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import AdapterContext, PollingAdapter
from models.errors import ConfigurationError, DeviceUnavailable, ProtocolError
from models.sample import Quality, Sample, utc_now

# device word -> gateway vocabulary (models/machine_state.py)
STATES = {"run": "active", "idle": "ready", "hold": "feed_hold", "stop": "stopped"}
MODES = {"auto": "automatic", "manual": "manual", "mdi": "mdi"}


class LineMeterConnection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(7070, ge=1, le=65535)
    timeout: float = Field(2.0, gt=0, le=60)


class LineMeterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    connection: LineMeterConnection
    points: list[dict[str, object]] = Field(default_factory=list, max_length=0,
                                            description="LineMeter has no configurable points")


class LineMeterAdapter(PollingAdapter):
    settings_model: ClassVar[type[BaseModel]] = LineMeterSettings

    def __init__(self, context: AdapterContext, settings: BaseModel) -> None:
        if not isinstance(settings, LineMeterSettings):
            raise ConfigurationError(f"LineMeterAdapter needs LineMeterSettings, got "
                                     f"{type(settings).__name__}")
        super().__init__(context, settings)
        self.conn = settings.connection
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        await self.aclose()
        try:
            async with asyncio.timeout(self.conn.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.conn.host, self.conn.port)
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"linemeter {self.conn.host}:{self.conn.port}: {exc}") from exc

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    async def read_once(self) -> Sequence[Sample]:
        if self._reader is None or self._writer is None:
            raise DeviceUnavailable("linemeter: not connected")
        try:
            async with asyncio.timeout(self.conn.timeout):
                self._writer.write(b"READ\n")
                await self._writer.drain()
                line = await self._reader.readline()
        except (OSError, TimeoutError) as exc:
            await self.aclose()
            raise DeviceUnavailable(f"linemeter: {exc or 'no reply'}") from exc
        if not line:
            await self.aclose()
            raise DeviceUnavailable("linemeter: connection closed")
        text = line.decode("ascii", "replace").strip()
        if not text.startswith("OK "):
            await self.aclose()
            raise ProtocolError(f"linemeter: unexpected reply {text!r}")
        fields = dict(item.split("=", 1) for item in text[3:].split() if "=" in item)
        ts, asset = utc_now(), self.context.asset
        state, mode = STATES.get(fields.get("state", "")), MODES.get(fields.get("mode", ""))
        out = [
            Sample(asset, "execution", state, None, ts,
                   quality=Quality.GOOD if state else Quality.UNCERTAIN),
            Sample(asset, "controller_mode", mode, None, ts,
                   quality=Quality.GOOD if mode else Quality.UNCERTAIN),
        ]
        try:
            out.append(Sample(asset, "part_count", int(fields["parts"]), None, ts))
            out.append(Sample(asset, "spindle_speed", float(fields["speed"]), "1/min", ts))
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"linemeter: bad field in {text!r}") from exc
        return out
