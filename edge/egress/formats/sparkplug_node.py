"""Sparkplug 3.0 edge node state, pure: envelope bodies in, Sparkplug B messages out.

Why a pure state machine: the rules that make a Sparkplug host trust an edge node (births
before data, one `seq` 0-255 across all node messages, aliases unique in the node, a device
born again after it died, every metric in its DBIRTH with a datatype that never changes) are
easiest to get right, and to test, without a broker. `edge.egress.formats.sparkplug`
drives this with the outbox and the transport. docs/sparkplug.md describes the mapping.

Mapping (edge node = gateway, device = machine):

* `telemetry` records: metric `Signals/<signal>`, datatype from the value (Boolean, Double
  for every number, String), properties `engUnit` and `Quality` (192 good, 64 uncertain, 0 bad).
* `state`: `State/Availability`, `State/Execution`, `State/ControllerMode`,
  `State/EmergencyStop`, `State/Alarms` (comma separated), `State/Program`,
  `State/PartCount`, `State/BadPartCount`. Availability `unavailable` is a DDEATH; the
  device's next `available` state is a DBIRTH.
* `oee`: `OEE/Availability`, `OEE/Effectiveness`, `OEE/Quality`, `OEE/OEE`,
  `OEE/Window/Name`, `OEE/Window/Start`, `OEE/Window/Closed`, `OEE/GoodCount`,
  `OEE/TotalCount`.
* `gap` (records the gateway could not store): `Gap/LostRecords`, `Gap/From`, `Gap/Reason`.
* `capacity`: `Capacity/FreeHours`, `Capacity/FreeSlots` (JSON text),
  `Capacity/Performance7d/OEE`, `Capacity/LastSample`.
* `part` (one completed part): `Part/Seq`, `Part/Parts`, `Part/Program`, `Part/Start`,
  `Part/End`, `Part/CycleTime`, `Part/IdealCycleTime`, `Part/Verdict`, `Part/Partial`,
  `Part/EnergyKWh`, `Part/CO2eKg`, and `Part/Record`: the whole record as JSON text, so a
  host that reads only what changed (report by exception) still gets every part whole.

DDATA carries only metrics whose value or quality changed, by alias. A metric first seen on
a device that is already born (or with another datatype) makes the device be born again
(a fresh DBIRTH with all its metrics), because a host only knows what a DBIRTH declared.
Data that arrives while a device is dead updates its values silently; the DBIRTH shows them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.egress.formats.sparkplug_proto import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

DataType = pb.DataType
QUALITY_CODES = {"good": 192, "uncertain": 64, "bad": 0}


@dataclass(frozen=True)
class Message:
    """One MQTT message of the node: topic and protobuf bytes (QoS 0 per spec, we use 1)."""

    topic: str
    payload: bytes
    kind: str  # NBIRTH, DBIRTH, DDATA, DDEATH, NDEATH


@dataclass
class _Metric:
    name: str
    alias: int
    datatype: int
    value: Any = None
    timestamp: int = 0
    unit: str | None = None
    quality: int | None = None


@dataclass
class _Device:
    metrics: dict[str, _Metric] = field(default_factory=dict)
    alive: bool | None = None  # None: never born nor declared dead
    born: bool = False  # a DBIRTH went out in the current node session


def _ms(ts: Any) -> int:
    if isinstance(ts, str):
        try:
            return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return 0
    return 0


def _datatype(value: Any) -> int | None:
    if isinstance(value, bool):
        return DataType.Boolean
    if isinstance(value, int):
        return DataType.Int64
    if isinstance(value, float):
        return DataType.Double
    if isinstance(value, str):
        return DataType.String
    return None  # null: the metric waits for a typed value


def _set_value(metric: pb.Payload.Metric, datatype: int, value: Any) -> None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        metric.is_null = True
    elif datatype == DataType.Boolean:
        metric.boolean_value = bool(value)
    elif datatype == DataType.Int64:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # two's complement, per spec
    elif datatype == DataType.Double:
        metric.double_value = float(value)
    elif datatype == DataType.DateTime:
        metric.long_value = int(value)
    else:
        metric.string_value = str(value)


def _properties(metric: pb.Payload.Metric, unit: str | None, quality: int | None) -> None:
    if unit is not None:
        metric.properties.keys.append("engUnit")
        metric.properties.values.add(type=DataType.String, string_value=unit)
    if quality is not None:
        metric.properties.keys.append("Quality")
        metric.properties.values.add(type=DataType.Int32, int_value=quality)


def _fits(datatype: int, value: Any) -> bool:
    have = _datatype(value)
    return (
        have is None
        or have == datatype
        or (datatype == DataType.Double and have == DataType.Int64)
        or (datatype == DataType.DateTime and have == DataType.Int64)
    )


Reading = tuple[Any, int, str | None, int | None, int]
"""(value, datatype, unit, quality, timestamp ms) of one metric in one record."""


def readings(stream: str, record: Mapping[str, Any]) -> dict[str, Reading]:
    """The device metrics one record of `stream` sets (see the module docstring)."""
    ts = _ms(record.get("ts"))
    out: dict[str, Reading] = {}

    def put(name: str, value: Any, datatype: int | None = None, unit: str | None = None,
            quality: int | None = None) -> None:
        dt = datatype if datatype is not None else _datatype(value)
        if dt is not None:
            out[name] = (value, dt, unit, quality, ts)

    if stream == "telemetry":
        quality = QUALITY_CODES.get(str(record.get("quality")), 0)
        value = record.get("value")
        # RFC 8785 writes 1200.0 as 1200, so a reading's int/float is not known from the
        # body: every number is a Double, or a whole reading would flip the datatype
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        put(f"Signals/{record['signal']}", value, DataType.Double if number else None,
            unit=record.get("unit"), quality=quality)
    elif stream == "state":
        put("State/Availability", record.get("availability"), DataType.String)
        put("State/Execution", record.get("execution"), DataType.String)
        put("State/ControllerMode", record.get("controller_mode"), DataType.String)
        put("State/EmergencyStop", record.get("emergency_stop"), DataType.Boolean)
        put("State/Alarms", ",".join(record.get("alarms") or []), DataType.String)
        put("State/Program", record.get("program"), DataType.String)
        put("State/PartCount", record.get("part_count"), DataType.Int64)
        put("State/BadPartCount", record.get("bad_part_count"), DataType.Int64)
    elif stream == "oee":
        for key, name in (("availability", "Availability"), ("effectiveness", "Effectiveness"),
                          ("quality", "Quality"), ("oee", "OEE")):
            put(f"OEE/{name}", record.get(key), DataType.Double)
        window = record.get("window") or {}
        counts = record.get("counts") or {}
        put("OEE/Window/Name", window.get("name"), DataType.String)
        put("OEE/Window/Start", _ms(window.get("start")) or None, DataType.DateTime)
        put("OEE/Window/Closed", window.get("closed"), DataType.Boolean)
        put("OEE/GoodCount", counts.get("gq"), DataType.Int64)
        put("OEE/TotalCount", counts.get("pq"), DataType.Int64)
    elif stream == "gap":
        put("Gap/LostRecords", record.get("records"), DataType.Int64)
        put("Gap/From", _ms(record.get("from")) or None, DataType.DateTime)
        put("Gap/Reason", record.get("reason"), DataType.String)
    elif stream == "capacity":
        perf = (record.get("performance") or {}).get("7d") or {}
        put("Capacity/FreeHours", record.get("free_hours"), DataType.Double)
        put("Capacity/FreeSlots", json.dumps(record.get("free_slots") or [],
                                             separators=(",", ":")), DataType.String)
        put("Capacity/Performance7d/OEE", perf.get("oee"), DataType.Double)
        last = (record.get("freshness") or {}).get("last_sample")
        put("Capacity/LastSample", _ms(last) or None, DataType.DateTime)
    elif stream == "part":
        put("Part/Seq", record.get("part_seq"), DataType.Int64)
        put("Part/Parts", record.get("parts"), DataType.Int64)
        if "program" in record:  # absent when the destination's signals filter denies it
            put("Part/Program", record["program"], DataType.String)
        put("Part/Start", _ms(record.get("start")) or None, DataType.DateTime)
        put("Part/End", _ms(record.get("end")) or None, DataType.DateTime)
        put("Part/CycleTime", record.get("cycle_time"), DataType.Double, unit="s")
        put("Part/IdealCycleTime", record.get("ideal_cycle_time"), DataType.Double, unit="s")
        put("Part/Verdict", record.get("verdict"), DataType.String)
        put("Part/Partial", record.get("partial"), DataType.Boolean)
        put("Part/EnergyKWh", record.get("energy_kwh"), DataType.Double, unit="kWh")
        put("Part/CO2eKg", record.get("co2e_kg"), DataType.Double, unit="kg")
        put("Part/Record", json.dumps(record, sort_keys=True, separators=(",", ":")),
            DataType.String)
    return out


class SparkplugNode:
    """One edge node: bdSeq, seq, aliases and every device's metrics."""

    def __init__(
        self, group: str, node: str, *, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.group, self.node = group, node
        self._clock: Callable[[], int] = clock_ms or (lambda: int(time.time() * 1000))
        self.bdseq = -1  # the first will registered makes it 0
        self._seq = 0
        self._aliases: dict[tuple[str, str], int] = {}
        self.devices: dict[str, _Device] = {}

    # ------------------------------------------------------------------ topics

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.node}"
        return base if device is None else f"{base}/{device}"

    # ------------------------------------------------------------------ node session

    def continue_session(self, previous: SparkplugNode) -> None:
        """Carry on the numbering of `previous`, the node this one replaces in the same
        process (a reload that restarts the egress side): the next connect registers the
        next `bdSeq`, not 0 again (Sparkplug 3.0 wants it incremented per CONNECT, and a host
        matches an NDEATH to its session by it), and every metric keeps its alias."""
        self.bdseq = previous.bdseq
        self._aliases = dict(previous._aliases)

    def will(self) -> tuple[str, bytes, bool]:
        """The NDEATH to register as the will of the next MQTT connect, with a new bdSeq
        (0-255, wrapping), not retained; the transport asks for it at every attempt."""
        self.bdseq = (self.bdseq + 1) % 256
        return self.topic("NDEATH"), self.death_payload(), False

    def death_payload(self) -> bytes:
        payload = pb.Payload(timestamp=self._clock())
        payload.metrics.add(name=BDSEQ, datatype=DataType.Int64, long_value=self.bdseq)
        data: bytes = payload.SerializeToString()
        return data

    def birth(self) -> list[Message]:
        """NBIRTH (seq 0, the current bdSeq, `Node Control/Rebirth`) then a DBIRTH for every
        device that is not dead: what a (re)connect and a Rebirth command publish."""
        self._seq = 0
        payload = pb.Payload(timestamp=self._clock(), seq=0)
        payload.metrics.add(name=BDSEQ, datatype=DataType.Int64, long_value=self.bdseq)
        payload.metrics.add(name=REBIRTH, datatype=DataType.Boolean, boolean_value=False)
        out = [Message(self.topic("NBIRTH"), payload.SerializeToString(), "NBIRTH")]
        for name, device in self.devices.items():
            device.born = False
            if device.alive is not False and device.metrics:
                out.append(self._device_birth(name, device))
        return out

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    # ------------------------------------------------------------------ devices

    def _alias(self, device: str, name: str) -> int:
        key = (device, name)
        alias = self._aliases.get(key)
        if alias is None:
            alias = self._aliases[key] = len(self._aliases) + 1
        return alias

    def _device_birth(self, name: str, device: _Device) -> Message:
        payload = pb.Payload(timestamp=self._clock(), seq=self._next_seq())
        for m in device.metrics.values():
            metric = payload.metrics.add(name=m.name, alias=m.alias, datatype=m.datatype,
                                         timestamp=m.timestamp or self._clock())
            _set_value(metric, m.datatype, m.value)
            _properties(metric, m.unit, m.quality)
        device.born = True
        return Message(self.topic("DBIRTH", name), payload.SerializeToString(), "DBIRTH")

    def _device_death(self, name: str, device: _Device) -> Message:
        device.born = False
        payload = pb.Payload(timestamp=self._clock(), seq=self._next_seq())
        return Message(self.topic("DDEATH", name), payload.SerializeToString(), "DDEATH")

    def feed(self, body: Mapping[str, Any], *, historical: bool = False) -> list[Message]:
        """Messages for one verified envelope body (telemetry, state, oee, gap, capacity
        or part; other streams set no metric)."""
        asset, stream = body.get("asset"), str(body.get("stream"))
        if not isinstance(asset, str):
            return []
        device = self.devices.setdefault(asset, _Device())
        changed: dict[str, _Metric] = {}
        rebirth = False
        for record in body.get("records", []):
            for name, (value, dt, unit, quality, ts) in readings(stream, record).items():
                m = device.metrics.get(name)
                if m is None or not _fits(m.datatype, value):
                    m = device.metrics[name] = _Metric(name, self._alias(asset, name), dt)
                    rebirth = True
                if historical or m.value != value or m.quality != quality or m.unit != unit:
                    changed[name] = m  # a replay repeats all: its first try may be lost
                m.value, m.timestamp, m.unit, m.quality = value, ts, unit, quality
        out: list[Message] = []
        if stream == "state" and body.get("records"):
            alive = body["records"][-1].get("availability") != "unavailable"
            was, device.alive = device.alive, alive
            if not alive:
                if device.born:
                    out.append(self._device_death(asset, device))
                return out
            if was is False:
                rebirth = True
        if device.alive is False or not device.metrics:
            return out  # dead: values kept for its next DBIRTH; nothing known: nothing to say
        if rebirth or not device.born:
            out.append(self._device_birth(asset, device))
        elif changed:
            out.append(self._device_data(asset, changed.values(), historical))
        return out

    def _device_data(self, name: str, metrics: Iterable[_Metric], historical: bool) -> Message:
        payload = pb.Payload(timestamp=self._clock(), seq=self._next_seq())
        for m in metrics:
            metric = payload.metrics.add(alias=m.alias, datatype=m.datatype,
                                         timestamp=m.timestamp or self._clock())
            if historical:
                metric.is_historical = True
            _set_value(metric, m.datatype, m.value)
            if m.quality is not None:
                _properties(metric, None, m.quality)
        return Message(self.topic("DDATA", name), payload.SerializeToString(), "DDATA")
