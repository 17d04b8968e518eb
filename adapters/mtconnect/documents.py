"""MTConnect XML documents (probe, current/sample streams, errors), parsed safely.

Why defusedxml with `forbid_dtd=True`: an agent is a network peer, and a hostile or broken
one could send a "billion laughs" entity bomb or an external entity that reads local
files. MTConnect documents never need a DTD, so any document that declares one is refused
outright (`ProtocolError`) before a single entity is expanded. Namespaces differ between
MTConnect versions (1.x to 2.x), so elements are matched by local name only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from models.errors import ProtocolError

from .vocabulary import DataItem

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Header",
    "Observation",
    "ProbeDocument",
    "StreamsDocument",
    "parse_document",
    "parse_probe",
    "parse_streams",
]

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""A reply larger than this is refused: a sane /sample page is a few MB at most."""

_CONDITION_LEVELS = frozenset({"Normal", "Warning", "Fault", "Unavailable"})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class Header:
    instance_id: str
    first_sequence: int = 0
    last_sequence: int = 0
    next_sequence: int = 0
    buffer_size: int = 0


@dataclass(frozen=True)
class Observation:
    """One observation of a stream; `level` is set for conditions only."""

    sequence: int
    data_item_id: str
    timestamp: str
    value: str
    level: str | None = None
    native_code: str = ""


@dataclass(frozen=True)
class ProbeDocument:
    header: Header
    device: str
    items: dict[str, DataItem] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)  # manufacturer, model, ...


@dataclass(frozen=True)
class StreamsDocument:
    header: Header
    observations: list[Observation]


@dataclass(frozen=True)
class ErrorDocument:
    header: Header | None
    errors: list[tuple[str, str]]  # (errorCode, text)

    def has(self, code: str) -> bool:
        return any(c == code for c, _ in self.errors)


def parse_document(data: bytes | bytearray | str) -> Element:
    """Parse untrusted XML: no DTD, no entities, no external references, bounded size."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ProtocolError(f"MTConnect document too large ({len(data)} bytes)")
    try:
        root: Element = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                          forbid_external=True)
    except DefusedXmlException as exc:
        raise ProtocolError(f"refused unsafe XML ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise ProtocolError(f"malformed XML: {exc}") from exc
    return root


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _positive(value: str | None) -> float | None:
    """A positive number attribute (`nativeScale`), or None when absent or unusable."""
    try:
        n = float(value) if value is not None else 0.0
    except ValueError:
        return None
    return n if n > 0 and n != float("inf") else None


def _header(root: Element) -> Header | None:
    for child in root:
        if _local(child.tag) == "Header":
            a = child.attrib
            return Header(a.get("instanceId", ""), _int(a.get("firstSequence")),
                          _int(a.get("lastSequence")), _int(a.get("nextSequence")),
                          _int(a.get("bufferSize")))
    return None


def _errors(root: Element) -> ErrorDocument:
    errors = [(e.attrib.get("errorCode", "ERROR"), (e.text or "").strip())
              for e in root.iter() if _local(e.tag) == "Error"]
    return ErrorDocument(_header(root), errors)


def parse_probe(data: bytes | bytearray | str, device: str | None = None) -> ProbeDocument:
    """The data items of one device (by name or uuid; the first device when None)."""
    root = parse_document(data)
    if _local(root.tag) == "MTConnectError":
        raise ProtocolError(f"agent error: {_errors(root).errors}")
    if _local(root.tag) != "MTConnectDevices":
        raise ProtocolError(f"expected MTConnectDevices, got {_local(root.tag)}")
    header = _header(root) or Header("")
    devices = [e for e in root.iter() if _local(e.tag) == "Device"]
    chosen = next((d for d in devices if device is None or device in (
        d.attrib.get("name"), d.attrib.get("uuid"), d.attrib.get("id"))), None)
    if chosen is None:
        names = [d.attrib.get("name", "?") for d in devices]
        raise ProtocolError(f"device {device!r} not in the device model (has {names})")
    items: dict[str, DataItem] = {}

    def walk(elem: Element, component: str) -> None:
        for child in elem:
            tag = _local(child.tag)
            if tag == "DataItems":
                for di in child:
                    if _local(di.tag) != "DataItem" or "id" not in di.attrib:
                        continue
                    a = di.attrib
                    items[a["id"]] = DataItem(
                        id=a["id"], type=a.get("type", ""), category=a.get("category", "EVENT"),
                        name=a.get("name"), sub_type=a.get("subType"), units=a.get("units"),
                        component=component, native_units=a.get("nativeUnits"),
                        native_scale=_positive(a.get("nativeScale")))
            elif tag in ("Components", "Compositions", "References", "Configuration",
                         "Description"):
                if tag == "Components":
                    walk(child, component)
            else:
                walk(child, tag)

    walk(chosen, "Device")
    name = chosen.attrib.get("name") or chosen.attrib.get("uuid") or ""
    description: dict[str, str] = {}
    for child in chosen:
        if _local(child.tag) == "Description":  # identification for the AAS nameplate
            for attr, key in (("manufacturer", "manufacturer"), ("model", "model"),
                              ("serialNumber", "serial_number"), ("station", "station")):
                value = child.attrib.get(attr, "").strip()
                if value:
                    description[key] = value
    return ProbeDocument(header, name, items, description)


def parse_streams(data: bytes | bytearray | str) -> StreamsDocument | ErrorDocument:
    """A /current or /sample reply, or the agent's error document (e.g. OUT_OF_RANGE)."""
    root = parse_document(data)
    kind = _local(root.tag)
    if kind == "MTConnectError":
        return _errors(root)
    if kind != "MTConnectStreams":
        raise ProtocolError(f"expected MTConnectStreams, got {kind}")
    header = _header(root)
    if header is None:
        raise ProtocolError("MTConnectStreams without a Header")
    out: list[Observation] = []
    for group in root.iter():
        gtag = _local(group.tag)
        if gtag not in ("Samples", "Events", "Condition"):
            continue
        for obs in group:
            a = obs.attrib
            if "dataItemId" not in a:
                continue
            tag = _local(obs.tag)
            text = "".join(obs.itertext()).strip()
            if gtag == "Condition" and tag in _CONDITION_LEVELS:
                out.append(Observation(_int(a.get("sequence")), a["dataItemId"],
                                       a.get("timestamp", ""), text, tag.upper(),
                                       a.get("nativeCode", "")))
            else:
                out.append(Observation(_int(a.get("sequence")), a["dataItemId"],
                                       a.get("timestamp", ""), text))
    out.sort(key=lambda o: o.sequence)
    return StreamsDocument(header, out)
