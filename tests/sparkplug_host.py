"""A test-side Sparkplug B host: decodes with its own protoc build of the vendored .proto
(not the gateway's generated module) and checks the edge node's messages as a host would.

`SparkplugHost.feed` raises AssertionError on the first broken rule: data before a birth,
an alias no DBIRTH declared, a seq gap (0-255, wrapping, across all node messages), an
NDEATH whose bdSeq is not the NBIRTH's.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "edge/egress/formats/sparkplug_proto/sparkplug_b.proto"
_compiled: ModuleType | None = None


def decoder() -> ModuleType:
    """The .proto compiled by protoc (grpcio-tools) into a private module, once per run."""
    global _compiled  # noqa: PLW0603 (one compilation per test session)
    if _compiled is None:
        out = Path(tempfile.mkdtemp(prefix="spb-decoder-"))
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
             f"--python_out={out}", str(PROTO)],
            check=True,
        )
        spec = importlib.util.spec_from_file_location("spb_test_decoder",
                                                      out / "sparkplug_b_pb2.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _compiled = module
    return _compiled


def decode(payload: bytes) -> Any:
    return decoder().Payload.FromString(payload)


def value_of(metric: Any) -> Any:
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    return getattr(metric, which) if which else None


@dataclass
class Device:
    names: dict[int, str] = field(default_factory=dict)  # alias -> name
    values: dict[str, Any] = field(default_factory=dict)
    alive: bool = False
    births: int = 0
    deaths: int = 0
    historical: int = 0


@dataclass
class SparkplugHost:
    group: str
    node: str
    online: bool = False
    bdseq: int | None = None
    seq: int | None = None
    nbirths: list[int] = field(default_factory=list)  # bdSeq of each NBIRTH
    ndeaths: list[int] = field(default_factory=list)
    devices: dict[str, Device] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)
    wrapped: bool = False

    def feed(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if parts[0] != "spBv1.0" or len(parts) < 4 or parts[1] == "STATE":
            return
        _, group, kind, node, *rest = parts
        assert (group, node) == (self.group, self.node), topic
        if kind in ("NCMD", "DCMD"):
            return
        msg = decode(payload)
        self.kinds.append(kind)
        if kind == "NDEATH":
            bd = next(value_of(m) for m in msg.metrics if m.name == "bdSeq")
            assert bd == self.bdseq, f"NDEATH bdSeq {bd} != NBIRTH bdSeq {self.bdseq}"
            self.ndeaths.append(bd)
            self.online, self.seq = False, None
            for d in self.devices.values():
                d.alive = False
            return
        if kind == "NBIRTH":
            assert msg.seq == 0, "NBIRTH seq must be 0"
            names = {m.name: value_of(m) for m in msg.metrics}
            assert "bdSeq" in names and names.get("Node Control/Rebirth") is False, names
            self.bdseq, self.seq, self.online = names["bdSeq"], 0, True
            self.nbirths.append(self.bdseq)
            for d in self.devices.values():
                d.alive = False
            return
        assert self.online, f"{kind} before NBIRTH"
        expected = (self.seq + 1) % 256 if self.seq is not None else None
        assert msg.seq == expected, f"{kind} seq {msg.seq}, expected {expected}"
        self.wrapped |= msg.seq == 0
        self.seq = msg.seq
        assert rest, topic
        device = self.devices.setdefault(rest[0], Device())
        if kind == "DBIRTH":
            device.alive, device.births = True, device.births + 1
            device.names = {}
            for m in msg.metrics:
                assert m.name and m.alias and m.datatype, m
                assert m.alias not in device.names, f"alias {m.alias} twice"
                device.names[m.alias] = m.name
                device.values[m.name] = value_of(m)
        elif kind == "DDEATH":
            assert device.alive, "DDEATH of a device that is not alive"
            device.alive, device.deaths = False, device.deaths + 1
        elif kind == "DDATA":
            assert device.alive, f"DDATA for {rest[0]} before its DBIRTH"
            for m in msg.metrics:
                assert m.alias in device.names, f"alias {m.alias} not in the DBIRTH"
                device.values[device.names[m.alias]] = value_of(m)
                device.historical += m.is_historical
        else:
            raise AssertionError(f"unexpected message type {kind}")
