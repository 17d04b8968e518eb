"""Regenerates the conformance vectors in this folder: `python docs/vectors/generate.py`.

Everything is deterministic (fixed keys, fixed times, Ed25519 signatures are deterministic;
the query sessions' booking ids, salts, clocks and version are passed into the gateway's
classes),
so `tests/edge/platform_kit/test_vectors.py` rebuilds the files in memory and fails when one on disk
differs: the vectors never drift from the code. The keys are public test keys (RFC 8037
appendix A.1 for the gateway, RFC 8032 section 7.1 test 2 for the platform, test 3 for a
stranger); never use them for anything real.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import structlog  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from adapters.base import Adapter  # noqa: E402
from edge.bookings.desk import BookingDesk, PlantHolds  # noqa: E402
from edge.bookings.store import BookingStore  # noqa: E402
from edge.capacity.bookings import BookingsFiles  # noqa: E402
from edge.capacity.publisher import CapacityRecords  # noqa: E402
from edge.config.loader import LoadedPlant, parse_plant  # noqa: E402
from edge.devices.fleet import Device, DeviceFleet  # noqa: E402
from edge.egress.formats import JsonEncoder  # noqa: E402
from edge.egress.formats.sparkplug_node import SparkplugNode  # noqa: E402
from edge.egress.loss import LossLedger  # noqa: E402
from edge.egress.stack import EgressSlot  # noqa: E402
from edge.egress.unsignable import UnsignableRecords  # noqa: E402
from edge.kpi.service import KpiService  # noqa: E402
from edge.kpi.store import OeeStore  # noqa: E402
from edge.parts.energy import EnergyWindows  # noqa: E402
from edge.parts.recorder import PartRecorder  # noqa: E402
from edge.parts.store import PartStore  # noqa: E402
from edge.platform_kit.client import sign_request  # noqa: E402
from edge.platform_kit.verifier import booking_commitment  # noqa: E402
from edge.query.backend import QueryBackend  # noqa: E402
from edge.query.handler import Incoming, QueryHandler  # noqa: E402
from edge.signing.jws import (  # noqa: E402
    Signer,
    b64url_decode,
    b64url_encode,
    canonical_json,
    jwk_public,
    jwks,
    signing_input_hash,
)
from models.booking import booking_record, part_range  # noqa: E402
from models.envelope import Stream, envelope_body  # noqa: E402
from models.sample import Sample  # noqa: E402

GATEWAY_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # RFC 8037 A.1
PLATFORM_D = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"  # RFC 8032 t2
STRANGER_D = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"  # RFC 8032 t3
CREATED = "2026-11-22T10:00:00.000Z"
BASE = "edge/plant-a/hall-1/line-2/m1"
REPLY_TOPIC = "platform/replies/5d1e"
# a platform's booking as every subscriber sees it (docs/protocol.md, "Who sees whose
# bookings"): the salt is what only the platform's own reserve reply carries
BOOKING = {"booking": "b-4f1c2a9e0d3b7a65", "platform": "p1", "reference": "PO-4711",
           "salt": "c2FsdC1mb3ItdmVjdG9ycw"}
COMMITMENT = booking_commitment(**BOOKING)
OWNER = {"platform": None, "reference": None, "commitment": COMMITMENT}
PART: dict[str, Any] = {
    "part_seq": 1842, "parts": 1, "machine_count": 412, "counter_reset": False,
    "program": "O1000", "start": "2026-11-22T08:58:12.500Z", "end": "2026-11-22T08:58:44.100Z",
    "cycle_time": 31.6, "ideal_cycle_time": 30.0,
    "states": {"active": 28.1, "feed_hold": 3.5, "interrupted": 0, "stopped": 0, "alarm": 0,
               "other": 0, "unknown": 0},
    "alarms": [], "signals": {"spindle_load": {"min": 21.5, "mean": 38.2, "max": 61.0, "n": 316}},
    "energy_kwh": 0.0782, "energy_basis": "interpolated", "co2e_kg": 0.0297,
    "carbon_factor": {"kg_per_kwh": 0.38, "source": "test grid", "year": 2025},
    "verdict": "good", "verdict_basis": "bad_part_count did not advance (still 3)",
    "partial": False, "partial_reasons": [], "gaps": [],
    "booking": {"id": BOOKING["booking"], **OWNER}, "ts": "2026-11-22T08:58:44.100Z",
}
WINDOW_OEE = {
    "window": {"kind": "range", "name": None, "day": None, "start": "2026-11-22T06:00:00.000Z",
               "end": "2026-11-22T09:00:00.000Z", "closed": True},
    "availability": 0.92, "effectiveness": 0.9, "quality": 0.975, "oee": 0.8073,
    "time": {"pbt": 10800.0, "apt": 9936.0, "effective": 8940.0, "unplanned_apt": 0.0,
             "downtime": {"alarm": 500.0, "feed_hold": 64.0, "setup": 300.0, "waiting": 0.0,
                          "unavailable": 0.0, "no_data": 0.0}},
    "counts": {"pq": 40, "gq": 39, "scrap": 1, "unplanned_pq": 0, "unrated_pq": 0},
    "losses": {"gap": 0.0, "speed_loss": 996.0, "scrap_time": 223.5, "gap_parts": []},
    "ts": "2026-11-22T09:00:00.400Z",
}

_GOOD = {"Quality": {"type": "Int32", "value": 192}}  # docs/sparkplug.md: 192 good
SPARKPLUG: dict[str, dict[str, Any]] = {
    # What docs/sparkplug.md's mapping makes of the telemetry vector, written out by hand
    # (not decoded from the files), so that a platform's decoder has values to compare with
    # and tests/edge/platform_kit/test_vectors.py catches an encoder that drifts from the doc.
    # Datatypes by their name in sparkplug_b.proto's DataType; properties by key.
    "sparkplug-dbirth": {
        "timestamp": 1795341600000, "seq": 1, "metrics": [
            {"name": "Signals/spindle_speed", "alias": 1, "timestamp": 1795341599900,
             "datatype": "Double", "value": 1200.0,
             "properties": {"engUnit": {"type": "String", "value": "1/min"}, **_GOOD}},
            {"name": "Signals/execution", "alias": 2, "timestamp": 1795341599900,
             "datatype": "String", "value": "active", "properties": _GOOD},
        ]},
    "sparkplug-ddata": {
        "timestamp": 1795341600000, "seq": 2, "metrics": [
            {"alias": 1, "timestamp": 1795341599900, "datatype": "Double", "value": 1250.0,
             "properties": _GOOD},
        ]},
}

def _created(text: str = CREATED) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


RECORDS: dict[Stream, list[dict[str, Any]]] = {
    "telemetry": [
        {"signal": "spindle_speed", "value": 1200.0, "unit": "1/min",
         "ts": "2026-11-22T09:59:59.900Z", "quality": "good"},
        {"signal": "execution", "value": "active", "unit": None,
         "ts": "2026-11-22T09:59:59.900Z", "quality": "good"},
    ],
    "state": [
        {"availability": "available", "execution": "active", "controller_mode": "automatic",
         "emergency_stop": False, "alarms": [], "program": "O1001", "part_count": 412,
         "bad_part_count": 3, "ts": "2026-11-22T09:58:12.500Z"},
    ],
    "oee": [
        {"window": {"kind": "shift", "name": "early", "day": "2026-11-22",
                    "start": "2026-11-22T05:00:00.000Z", "end": "2026-11-22T10:00:00.000Z",
                    "closed": False},
         "availability": 0.91, "effectiveness": 0.87, "quality": 0.99, "oee": 0.78,
         "time": {"pbt": 16200.0, "apt": 14742.0, "effective": 12825.5, "unplanned_apt": 0.0,
                  "downtime": {"alarm": 600.0, "feed_hold": 120.0, "setup": 438.0,
                               "waiting": 300.0, "unavailable": 0.0, "no_data": 0.0}},
         "counts": {"pq": 412, "gq": 408, "scrap": 4, "unplanned_pq": 0, "unrated_pq": 0},
         "losses": {"gap": 0.0, "speed_loss": 1916.5, "scrap_time": 124.5, "gap_parts": []},
         "ts": "2026-11-22T10:00:00.000Z"},
    ],
    "capacity": [
        {"machine": "m1", "capabilities": {"processes": ["milling"], "materials": ["steel"]},
         "free_slots": [{"start": "2026-11-23T05:00:00.000Z", "end": "2026-11-23T13:00:00.000Z",
                         "hours": 8.0}],
         "free_hours": 8.0,
         "horizon": {"start": "2026-11-22T10:00:00.000Z", "end": "2026-12-06T10:00:00.000Z"},
         "performance": {"7d": {"availability": 0.88, "effectiveness": 0.9, "quality": 0.99,
                                "oee": 0.78}, "30d": None},
         "freshness": {"last_sample": "2026-11-22T09:59:59.500Z", "age_s": 0.5},
         "ts": "2026-11-22T10:00:00.000Z"},
    ],
    "bookings": [
        booking_record(
            booking=BOOKING["booking"], state="completed", owner=OWNER, machine="m1",
            start=_created("2026-11-22T06:00:00.000Z"), end=_created("2026-11-22T09:00:00.000Z"),
            at=_created("2026-11-22T09:00:00.400Z"), by="gateway",
            request={"program": "O1000", "quantity": 40}, oee=WINDOW_OEE,
            parts=part_range([{"part_seq": 1803 + i, "parts": 1,
                               "verdict": "scrap" if i == 17 else "good"} for i in range(40)]),
        ),
    ],
    "part": [PART],
    "gap": [
        {"envelopes": 26, "from": "2026-11-22T09:02:40.376Z", "reason": "disk_full",
         "records": 126, "streams": {"capacity": 1, "state": 5, "telemetry": 120},
         "to": "2026-11-22T09:02:44.176Z", "ts": "2026-11-22T09:02:44.176Z"},
    ],
}


def _key(d: str) -> Ed25519PrivateKey:
    raw = bytes.fromhex(d) if len(d) == 64 else b64url_decode(d)
    return Ed25519PrivateKey.from_private_bytes(raw)


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _private_jwk(key: Ed25519PrivateKey, d: str) -> dict[str, str]:
    raw = bytes.fromhex(d) if len(d) == 64 else b64url_decode(d)
    return {**jwk_public(key), "d": b64url_encode(raw)}


def _envelope(signer: Signer, stream: Stream, seq: int, prev: str | None,
              records: list[dict[str, Any]]) -> dict[str, str]:
    body = envelope_body(gateway="gw-01", topic=f"{BASE}/{stream}", asset="m1", stream=stream,
                         seq=seq, prev=prev, created=_created(), records=records)
    return signer.sign_body(body)


def build() -> dict[str, bytes]:
    """Every file of the folder (besides this script and README.md) by name."""
    gateway, platform, stranger = _key(GATEWAY_D), _key(PLATFORM_D), _key(STRANGER_D)
    signer, strange = Signer(gateway), Signer(stranger)
    files: dict[str, bytes] = {
        "keys/gateway.private.jwk.json": _json(_private_jwk(gateway, GATEWAY_D)),
        "keys/gateway.jwks.json": _json(jwks([gateway])),
        "keys/platform.private.jwk.json": _json(_private_jwk(platform, PLATFORM_D)),
        "keys/platform.jwks.json": _json(jwks([platform])),
    }
    cases: list[dict[str, Any]] = []
    bodies: dict[str, dict[str, Any]] = {}
    for stream, records in RECORDS.items():
        env = _envelope(signer, stream, 1, None, records)
        body = json.loads(b64url_decode(env["payload"]))
        bodies[stream] = body
        files[f"{stream}.envelope.json"] = _compact(env)
        cases.append({"name": f"{stream}-envelope", "format": "envelope",
                      "topic": f"{BASE}/{stream}", "file": f"{stream}.envelope.json",
                      "expect": {"verdict": "ok", "body": body}})
        msg = JsonEncoder().encode(_compact(env))
        files[f"{stream}.json"] = msg.payload
        cases.append({"name": f"{stream}-json", "format": "json", "topic": f"{BASE}/{stream}",
                      "file": f"{stream}.json",
                      "user_properties": dict(msg.user_properties),
                      "expect": {"verdict": "ok", "body": body}})

    # negative cases
    good = json.loads(files["telemetry.envelope.json"])
    tampered_body = {**bodies["telemetry"], "records": [
        {**bodies["telemetry"]["records"][0], "value": 1300.0},
        bodies["telemetry"]["records"][1]]}
    tampered = {**good, "payload": b64url_encode(canonical_json(tampered_body))}
    files["negative/tampered-body.envelope.json"] = _compact(tampered)
    cases.append({"name": "tampered-body", "format": "envelope", "topic": f"{BASE}/telemetry",
                  "file": "negative/tampered-body.envelope.json",
                  "expect": {"verdict": "forgery"}})
    files["negative/tampered-body.json"] = canonical_json(tampered_body)
    cases.append({"name": "tampered-body-json", "format": "json", "topic": f"{BASE}/telemetry",
                  "file": "negative/tampered-body.json",
                  "user_properties": {"jws": f"{good['protected']}..{good['signature']}"},
                  "expect": {"verdict": "forgery"}})
    wrong = _envelope(strange, "telemetry", 1, None, RECORDS["telemetry"])
    files["negative/wrong-kid.envelope.json"] = _compact(wrong)
    cases.append({"name": "wrong-kid", "format": "envelope", "topic": f"{BASE}/telemetry",
                  "file": "negative/wrong-kid.envelope.json",
                  "expect": {"verdict": "unknown_key"}})
    misrouted = f"{BASE.replace('/m1', '/m2')}/telemetry"
    files["negative/misrouted.envelope.json"] = files["telemetry.envelope.json"]
    cases.append({"name": "misrouted", "format": "envelope", "topic": misrouted,
                  "file": "negative/misrouted.envelope.json",
                  "expect": {"verdict": "misrouted"}})
    e1 = _envelope(signer, "telemetry", 1, None, RECORDS["telemetry"][:1])
    e2 = _envelope(signer, "telemetry", 2, signing_input_hash(e1), RECORDS["telemetry"][1:])
    e3 = _envelope(signer, "telemetry", 3, signing_input_hash(e1), RECORDS["telemetry"][:1])
    files["negative/broken-chain.jsonl"] = b"".join(
        _compact({"topic": f"{BASE}/telemetry", "envelope": e}) + b"\n" for e in (e1, e2, e3))
    cases.append({"name": "broken-chain", "format": "capture",
                  "file": "negative/broken-chain.jsonl",
                  "expect": {"verdicts": ["ok", "ok", "broken_chain"]}})

    # Sparkplug: a DBIRTH declares the aliases, the DDATA uses them
    node = SparkplugNode("plant-a", "gw-01", clock_ms=lambda: 1795341600000)
    node.will()
    node.birth()
    first = {**bodies["telemetry"]}
    (birth,) = node.feed(first)
    changed = {**first, "records": [{**first["records"][0], "value": 1250.0}]}
    (data,) = node.feed(changed)
    for name, msg in (("sparkplug-dbirth", birth), ("sparkplug-ddata", data)):
        files[f"{name}.bin"] = msg.payload
        cases.append({"name": name, "format": "sparkplug_b", "topic": msg.topic,
                      "file": f"{name}.bin",
                      "expect": {"verdict": "unsigned", "payload": SPARKPLUG[name]}})

    # a signed request and its reply (the worked example of docs/protocol.md), and its replay
    request_body = {"method": "state", "params": {"asset": "m1"}, "id": "7f3c2a91d04e5b68",
                    "ts": "2026-11-22T10:00:00Z", "nonce": "q9XkL2vYp0RzT4wN8bCd1A"}
    request = sign_request(platform, request_body)
    files["request-state.json"] = _compact(request)
    oee_body = {"method": "oee", "params": {"asset": "m1", "window": "range",
                                            "start": "2026-11-21T00:00:00Z",
                                            "end": "2026-11-22T00:00:00Z"},
                "id": "a1b2c3d4e5f60718", "ts": "2026-11-22T10:00:00Z",
                "nonce": "Zm9yLXZlY3RvcnMtb25seQ"}
    files["request-oee-yesterday.json"] = _compact(sign_request(platform, oee_body))
    state = {**RECORDS["state"][0], "link": "up"}
    reply_record = {"id": request_body["id"], "ok": True, "result": {"machines": {"m1": state}}}
    reply = _reply(signer, 1, None, reply_record, "2026-11-22T10:00:00.250Z")
    files["reply-state.json"] = _compact(reply)
    replay_record = {"id": request_body["id"], "ok": False,
                     "error": {"code": "unauthorized", "message": "nonce already used"}}
    files["negative/replayed-nonce.reply.json"] = _compact(
        _reply(signer, 2, signing_input_hash(reply), replay_record, "2026-11-22T10:00:00.250Z"))
    cases += [
        {"name": "request-state", "format": "request", "topic": "edge/plant-a/gw-01/query",
         "file": "request-state.json", "reply_topic": REPLY_TOPIC,
         "received_at": "2026-11-22T10:00:00.250Z",
         "expect": {"verdict": "ok", "body": request_body, "reply": "reply-state.json"}},
        {"name": "request-oee-yesterday", "format": "request",
         "topic": "edge/plant-a/gw-01/query", "file": "request-oee-yesterday.json",
         "expect": {"verdict": "ok", "body": oee_body}},
        {"name": "replayed-nonce", "format": "request", "topic": "edge/plant-a/gw-01/query",
         "file": "request-state.json", "reply_topic": REPLY_TOPIC, "sent": 2,
         "received_at": "2026-11-22T10:00:00.250Z",
         "expect": {"verdict": "unauthorized", "message": "nonce already used",
                    "reply": "negative/replayed-nonce.reply.json"}},
    ]
    sessions = (
        ("bookings-and-parts", SESSION_TOPIC,
         _session(signer, platform, json.loads(files["part.envelope.json"]))),
        ("query-methods", DAY_TOPIC, _plant_day(signer, platform)),
    )
    for session, topic, replies in sessions:
        for name, body, request, reply in replies:
            files[f"request-{name}.json"] = _compact(request)
            files[f"reply-{name}.json"] = _compact(reply)
            record = json.loads(b64url_decode(reply["payload"]))["records"][0]
            cases.append({"name": name, "format": "request",
                          "topic": "edge/plant-a/gw-01/query", "file": f"request-{name}.json",
                          "reply_topic": topic, "session": session,
                          "expect": {"verdict": SESSION_EXPECT.get(name, "ok"), "body": body,
                                     "reply": f"reply-{name}.json", "record": record}})
    cases.append({"name": "booking-commitment", "format": "commitment", "inputs": BOOKING,
                  "expect": {"commitment": COMMITMENT}})
    files["index.json"] = _json({
        "description": "edge-gateway wire contract v1 conformance vectors; see README.md",
        "gateway_jwks": "keys/gateway.jwks.json",
        "platform_jwks": "keys/platform.jwks.json",
        "cases": cases,
    })
    return files


def _reply(signer: Signer, seq: int, prev: str | None, record: dict[str, Any],
           created: str) -> dict[str, str]:
    body = envelope_body(gateway="gw-01", topic=REPLY_TOPIC, asset=None, stream="response",
                         seq=seq, prev=prev, created=_created(created), records=[record])
    return signer.sign_body(body)


# The booking and parts session: requests of platform p1 answered in this order by the real
# query handler, backend, booking desk and SQLite stores (a temporary directory), all on one
# reply topic, so the replies chain (seq 1, 2, ...). Ids, salts and clocks are passed in
# (BookingStore's `new_id`/`salt`, the desk's and the handler's `clock`), nothing patched.
SESSION_TOPIC = "platform/replies/b00c"
SESSION_PLANT = """\
gateway: {id: gw-01, site: plant-a}
shifts:
  shifts: [{name: day, start: "06:00", end: "22:00"}]
machines:
  - id: m1
    area: hall-1
    line: line-2
    adapter: modbus
    capabilities: {processes: [milling]}
    connection: {host: 127.0.0.1}
    points: [{name: part_count, register: holding, address: 10, data_type: uint32}]
platforms:
  - {id: p1, public_key_file: p1.pem, machines: [m1],
     methods: [state, oee, parts, reserve, release, bookings]}
"""
SESSION_IDS = ("b-4f1c2a9e0d3b7a65", "b-0a9d3e5f7c1b2468")
SESSION_SALTS = ("c2FsdC1mb3ItdmVjdG9ycw", "YW5vdGhlci12ZWN0b3Itc2FsdA")
TUESDAY = "2026-11-24T{}:00:00Z"
SESSION: list[tuple[str, str, dict[str, Any]]] = [
    # (case name, method, params); a request is received one second after the one before
    ("reserve-accepted", "reserve", {
        "asset": "m1", "reference": "PO-4711", "start": TUESDAY.format("06"),
        "end": TUESDAY.format("10"), "program": "O1000", "quantity": 40}),
    ("reserve-declined", "reserve", {
        "asset": "m1", "reference": "PO-4712", "start": TUESDAY.format("08"),
        "end": TUESDAY.format("12")}),
    ("release", "release", {"booking": SESSION_IDS[0]}),
    ("bookings", "bookings", {"state": ["released", "declined"], "limit": 10}),
    ("release-closed", "release", {"booking": SESSION_IDS[0]}),
    ("parts", "parts", {"asset": "m1", "limit": 10}),
    ("unknown-method", "cancel", {"booking": SESSION_IDS[0]}),
]
SESSION_EXPECT = {"release-closed": "bad_request", "unknown-method": "bad_request"}
"""The cases refused with an error reply (`ok` false) and their code; the others are `ok`."""


class _Clock:
    """The one wall clock of the session's handler and booking desk: fixed, moved on by
    hand between requests."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class _RunningMachines:
    """The fleet as `QueryBackend` reads it for `parts`: every enabled machine running.
    (The booking methods read the plant, not the fleet.)"""

    def __init__(self, loaded: LoadedPlant) -> None:
        self.loaded = loaded

    def assets(self) -> list[str]:
        return [m.id for m in self.loaded.enabled_machines()]

    def device(self, asset: str) -> Device:
        raise AssertionError(f"the session does not read device {asset}")

    def statuses(self) -> dict[str, str]:
        return {}

    def reasons(self) -> dict[str, str]:
        return {}

    def faults(self) -> dict[str, dict[str, Any]]:
        return {}


def _session(signer: Signer, platform: Ed25519PrivateKey, part_envelope: dict[str, str]
             ) -> Iterator[tuple[str, dict[str, Any], dict[str, str], dict[str, str]]]:
    """(case name, request body, signed request, reply) for each request of SESSION."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stores:
        loaded = parse_plant(SESSION_PLANT, str(Path(tmp) / "plant.yaml"))
        clock = _Clock(_created("2026-11-22T10:00:00.250Z"))
        logger = structlog.wrap_logger(structlog.ReturnLogger())
        bookings = stores.enter_context(BookingStore(
            Path(tmp) / "bookings.sqlite3", durable=False,
            new_id=iter(SESSION_IDS).__next__, salt=iter(SESSION_SALTS).__next__))
        parts = stores.enter_context(PartStore(Path(tmp) / "parts.sqlite3"))
        parts.save("m1", {}, _created(PART["ts"]), [PART])
        parts.attach_envelope("m1", PART["part_seq"], part_envelope)
        desk = BookingDesk(lambda: loaded, bookings,
                           PlantHolds(lambda: loaded, BookingsFiles(logger)),
                           lambda machine, now: None, lambda: None, clock=clock)
        backend = QueryBackend(
            lambda: loaded, _RunningMachines(loaded),
            None, None,  # type: ignore[arg-type]  # OEE and capacity: not asked
            stats=dict, counts=dict, bookings=desk, parts=parts, started=clock())
        handler = _handler(loaded, backend, signer, platform, clock)
        yield from _answers(handler, platform, clock, SESSION, topic=SESSION_TOPIC,
                            prefixes=("q-", "dmVjdG9yLXNlc3Npb24t"), ts="2026-11-22T10:00:00Z")


def _handler(loaded: LoadedPlant, backend: QueryBackend, signer: Signer,
             platform: Ed25519PrivateKey, clock: _Clock) -> QueryHandler:
    """The gateway's query handler, knowing the plant's one platform by `platform`'s key."""
    (p1,) = loaded.plant.platforms
    return QueryHandler(
        loaded.plant, backend, signer=lambda: signer,
        keys={jwk_public(platform)["kid"]: (p1, platform.public_key())},
        logger=structlog.wrap_logger(structlog.ReturnLogger()), clock=clock,
        monotonic=lambda: 0.0)


def _answers(handler: QueryHandler, platform: Ed25519PrivateKey, clock: _Clock,
             requests: list[tuple[str, str, dict[str, Any]]], *, topic: str,
             prefixes: tuple[str, str], ts: str,
             ) -> Iterator[tuple[str, dict[str, Any], dict[str, str], dict[str, str]]]:
    """(case name, request body, signed request, reply) for each of `requests`, signed by
    `platform` (`prefixes`: of the request ids and nonces, numbered from 1), answered by
    `handler` on `topic`, one second apart on `clock`."""
    for n, (name, method, params) in enumerate(requests, 1):
        body = {"method": method, "params": params, "id": f"{prefixes[0]}{n}", "ts": ts,
                "nonce": f"{prefixes[1]}{n}"}
        request = sign_request(platform, body)
        reply = handler.handle(Incoming("edge/plant-a/gw-01/query", _compact(request),
                                        topic, None))
        assert reply is not None, name
        yield name, body, request, json.loads(reply.payload)
        clock.now += timedelta(seconds=1)


# The query methods' session: a morning of machine m1 (a mill that meters its own energy)
# goes through the gateway's real classes, as in the daemon (edge/daemon/gateway.py): a
# DeviceRunner reads a scripted device and hands each batch to the DeviceFleet, which
# folds it into the AssetTwin and tells the KpiService (OEE, SQLite) and the PartRecorder
# (part records and metered energy, SQLite); then platform p1 asks every query method, each
# answered by the real QueryHandler and QueryBackend over those, with CapacityRecords and
# EnergyWindows. The one clock (the fleet's, the KPI service's, the recorder's reads, the
# handler's, the backend's uptime, the offer's and the energy's "now") and the version
# are passed in. The only stand-in is the device: `_ScriptedDevice`, an adapter that
# yields the script's batches (the vectors have no machine to connect to); no egress
# stack runs, so `health` names no destination.
DAY_TOPIC = "platform/replies/d0c5"
DAY_VERSION = "1.0.0"
DAY_PLANT = """\
gateway:
  id: gw-01
  site: plant-a
  carbon: {kg_per_kwh: 0.38, source: test grid, year: 2025}
shifts:
  shifts: [{name: early, start: "06:00", end: "14:00"}]
machines:
  - id: m1
    name: Mill 1
    area: hall-1
    line: line-2
    adapter: modbus
    ideal_cycle_time: 50
    nameplate: {manufacturer: ACME, model: VMC-800, serial_number: SN-0042,
                year_of_construction: 2021}
    capabilities: {processes: [milling], materials: [steel, aluminium]}
    bookings: [{start: "2026-11-24T06:00:00Z", end: "2026-11-24T10:00:00Z",
                reference: PO-4711}]
    part_record: {signals: [spindle_load]}
    energy: {energy_kwh: energy_kwh}
    connection: {host: 127.0.0.1}
    points:
      - {name: execution, register: holding, address: 0, map: {0: ready, 1: active, 3: feed_hold}}
      - {name: part_count, register: holding, address: 10, data_type: uint32}
      - {name: bad_part_count, register: holding, address: 12, data_type: uint32}
      - {name: spindle_load, register: input, address: 0, unit: "%"}
      - {name: energy_kwh, register: input, address: 2, data_type: float32, unit: kWh}
platforms:
  - {id: p1, public_key_file: p1.pem, machines: [m1],
     methods: [describe, health, oee, energy, capacity, aas]}
"""
DAY_STARTED = "2026-11-23T05:58:00.000Z"
"""When the gateway started (Monday): two minutes before the early shift."""
DAY_ASKED = "2026-11-23T06:15:00.250Z"
"""When the first request is received; the shift's first quarter hour has been read."""


def _day_reads() -> list[tuple[datetime, dict[str, Any]]]:
    """The device's reads, every 30 s from 06:00: program O1000 runs a part a minute (ideal
    50 s), a feed hold 06:08-06:10, a scrapped part at 06:05; the meter counts up."""
    reads = []
    kwh, count, bad = 1520.0, 100, 2
    start = _created("2026-11-23T06:00:00.000Z")
    for i in range(30):
        at = start + timedelta(seconds=30 * i)
        hold = 16 <= i < 20
        if i and not hold and i % 2 == 0:
            count += 1
        if i == 10:
            bad += 1
        kwh = round(kwh + (0.004 if hold else 0.025), 3)
        reads.append((at, {
            "execution": "feed_hold" if hold else "active", "controller_mode": "automatic",
            "program": "O1000", "part_count": count, "bad_part_count": bad,
            "spindle_load": 0.0 if hold else 40.0 + 5.0 * (i % 3), "energy_kwh": kwh}))
    return reads


UNITS = {"spindle_load": "%", "energy_kwh": "kWh"}


class _ScriptedDevice(Adapter):
    """The vectors' device: yields each read of `_day_reads` with the gateway's clock set
    to its time (a real device is read at the clock's time), then signals that it is done
    and waits to be stopped."""

    clock: _Clock
    done: asyncio.Event

    async def connect(self) -> None:
        return None

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        asset = self.context.asset
        for at, values in _day_reads():
            self.clock.now = at
            yield [Sample(asset, name, value, UNITS.get(name), at)
                   for name, value in values.items()]
        self.done.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


async def _read_the_morning(fleet: DeviceFleet, loaded: LoadedPlant, clock: _Clock) -> None:
    """Start m1's runner on the scripted device, let it read the whole script, stop it."""
    done = asyncio.Event()
    device_type = type("ScriptedDevice", (_ScriptedDevice,), {"clock": clock, "done": done})
    (machine,) = loaded.enabled_machines()
    fleet.start(machine, lambda adapter: device_type, poll_phase=0.0)
    await done.wait()
    device = fleet.device(machine.id)
    device.runner.stop()
    device.task.cancel()
    await asyncio.gather(device.task, return_exceptions=True)


DAY: list[tuple[str, str, dict[str, Any]]] = [
    ("describe", "describe", {}),
    ("health", "health", {}),
    ("oee", "oee", {"asset": "m1", "window": "shift"}),
    ("energy", "energy", {"asset": "m1", "window": "range",
                          "start": "2026-11-23T06:00:00Z", "end": "2026-11-23T06:15:00Z"}),
    ("capacity", "capacity", {"asset": "m1"}),
    ("aas", "aas", {"asset": "m1"}),
]


def _plant_day(signer: Signer, platform: Ed25519PrivateKey
               ) -> Iterator[tuple[str, dict[str, Any], dict[str, str], dict[str, str]]]:
    """(case name, request body, signed request, reply) for each request of DAY."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stores:
        loaded = parse_plant(DAY_PLANT, str(Path(tmp) / "plant.yaml"))
        clock = _Clock(_created(DAY_STARTED))
        logger = structlog.wrap_logger(structlog.ReturnLogger())
        oee = stores.enter_context(OeeStore(Path(tmp) / "oee.sqlite3", logger=logger))
        parts = stores.enter_context(PartStore(Path(tmp) / "parts.sqlite3"))
        kpi = KpiService(loaded.plant, oee, clock, logger=logger)
        slot = EgressSlot()  # no egress stack: what the stages emit is dropped, counted
        recorder = PartRecorder(lambda: loaded, parts, slot, logger)
        energy = EnergyWindows(lambda: loaded, parts, recorder, clock=clock)
        fleet = DeviceFleet(lambda: loaded, slot, kpi, logger, observers=[recorder],
                            clock=clock)
        asyncio.run(_read_the_morning(fleet, loaded, clock))
        clock.now = _created(DAY_ASKED)
        capacity = CapacityRecords(lambda: loaded, fleet, kpi, BookingsFiles(logger),
                                   energy=energy.by_program, clock=clock)
        backend = QueryBackend(
            lambda: loaded, fleet, kpi, capacity, stats=slot.destination_stats,
            counts=lambda: dict(handler.counts), losses=LossLedger().snapshot,
            unsignable=UnsignableRecords(logger.warning).snapshot, parts=parts,
            energy=energy, started=_created(DAY_STARTED), clock=clock, version=DAY_VERSION)
        handler = _handler(loaded, backend, signer, platform, clock)
        yield from _answers(handler, platform, clock, DAY, topic=DAY_TOPIC,
                            prefixes=("d-", "dmVjdG9yLWRheS0"), ts="2026-11-23T06:15:00Z")


def main() -> None:
    for name, data in build().items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote the vectors to {HERE}")


if __name__ == "__main__":
    main()
