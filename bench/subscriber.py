"""What really reached the broker: an independent paho subscriber that counts telemetry.

The gateway's own counters say what it meant to send; a platform only sees what the broker
delivers, so throughput and latency are measured here, in the bench process, on a paho
network thread of its own. Each telemetry envelope is decoded (the plain v1 body
`{"records": [...]}` or, once signing is wired, the JWS whose `payload` holds it) and each
record's `ts` (the gateway's read time) is kept with the receipt time, so a window can later
be cut by *read* time: a record read inside the window counts even if it arrives just after.

Per-topic `seq` gaps are counted too: a benchmark that loses messages would otherwise report
a lower rate and nobody would ask why.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True, slots=True)
class Arrival:
    """Records of one envelope that share one read time (one Modbus request)."""

    read_at: float  # epoch seconds, from the record's `ts` (millisecond resolution)
    sealed_at: float  # epoch seconds, the envelope's `created` (when it was signed)
    received_at: float  # epoch seconds, when paho handed the message to us
    records: int


@dataclass(frozen=True, slots=True)
class Seen:
    """One telemetry envelope: when its first record was read, its size, its record count
    and how far apart its first and last read times are (one poll's request spread)."""

    read_at: float
    size: int
    records: int
    read_spread: float


@dataclass
class Tally:
    envelopes: list[Seen] = field(default_factory=list)
    other_envelopes: int = 0
    state_received: list[float] = field(default_factory=list)  # arrival times, `state` topics
    undecodable: int = 0
    seq_gaps: int = 0
    duplicates: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    sample_payload: bytes = b""


def _decode(payload: bytes) -> dict[str, Any]:
    obj = json.loads(payload)
    if "records" not in obj and "payload" in obj:  # JWS flattened: the body is the payload
        data = obj["payload"]
        obj = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    if not isinstance(obj, dict):
        raise ValueError("envelope body is not an object")
    return obj


class TelemetrySubscriber:
    """Subscribes to `{prefix}/#` and tallies telemetry envelopes as they arrive."""

    def __init__(self, host: str, port: int, prefix: str = "edge") -> None:
        self._lock = threading.Lock()
        self._tally = Tally()
        self._seq: dict[str, int] = {}
        self._ts_cache: dict[str, float] = {}
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"bench subscriber could not subscribe on {host}:{port}")

    def _epoch(self, ts: str) -> float:
        t = self._ts_cache.get(ts)
        if t is None:
            if len(self._ts_cache) > 100_000:
                self._ts_cache.clear()
            t = self._ts_cache[ts] = datetime.fromisoformat(ts).timestamp()
        return t

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received = time.time()
        payload = bytes(msg.payload)
        if not msg.topic.endswith("/telemetry"):
            with self._lock:
                self._tally.other_envelopes += 1
                if msg.topic.endswith("/state"):
                    self._tally.state_received.append(received)
            return
        try:
            body = _decode(payload)
            per_ts: dict[str, int] = {}
            for r in body["records"]:
                per_ts[r["ts"]] = per_ts.get(r["ts"], 0) + 1
            sealed = self._epoch(body["created"])
            arrivals = [Arrival(self._epoch(ts), sealed, received, n)
                        for ts, n in per_ts.items()]
            seq = int(body["seq"])
            if not arrivals:
                raise ValueError("telemetry envelope without records")
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self._tally.undecodable += 1
            return
        with self._lock:
            t = self._tally
            first = min(a.read_at for a in arrivals)
            t.envelopes.append(Seen(first, len(payload), sum(a.records for a in arrivals),
                                    max(a.read_at for a in arrivals) - first))
            t.arrivals += arrivals
            t.topics.add(msg.topic)
            t.sample_payload = payload
            last = self._seq.get(msg.topic)
            if last is not None:
                if seq <= last:
                    t.duplicates += 1
                elif seq > last + 1:
                    t.seq_gaps += seq - last - 1
            self._seq[msg.topic] = max(seq, last or 0)

    def topics(self) -> int:
        with self._lock:
            return len(self._tally.topics)

    def take(self) -> Tally:
        """Everything tallied so far; the subscriber starts a fresh tally."""
        with self._lock:
            tally, self._tally = self._tally, Tally()
            self._seq.clear()
        return tally

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
