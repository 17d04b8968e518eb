"""One value canonical JSON cannot carry must not cost the rest of its batch.

Why: an integer beyond 2**53, a NaN that slipped through, or a non-JSON type from a
third-party adapter used to make the sealer refuse the whole batch, on every poll. The
offending record is now replaced by a `bad` record with a null value and a reason, every
other record is signed and stored (a real outbox in tmp_path), and the problem is logged
once per interval per machine and signal.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.sender import DestinationSender
from edge.egress.unsignable import UnsignableRecords
from edge.platform_kit.verifier import verify_stream
from edge.signing.jws import Signer, b64url_decode, jwks
from models.plant import Destination

TS = "2026-12-06T07:00:00.000Z"


def rec(signal: str, value: Any) -> dict[str, Any]:
    return {"signal": signal, "value": value, "unit": None, "ts": TS, "quality": "good"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __call__(self, event: str, **kw: Any) -> None:
        self.lines.append({"event": event, **kw})


def bodies(outbox: Outbox, dest: str = "a") -> list[dict[str, Any]]:
    return [json.loads(b64url_decode(json.loads(r.payload)["payload"]))
            for r in outbox.peek(dest, None, 100)]


def make(tmp_path: Path, lines: Lines, clock: Clock,
         dests: list[Destination] | None = None) -> tuple[Outbox, Sealer, Egress, Signer]:
    dests = dests or [Destination(id="a", url="mqtt://127.0.0.1")]
    outbox = Outbox(tmp_path / FILENAME, caps={d.id: OutboxCap(1 << 30) for d in dests})
    signer = Signer(Ed25519PrivateKey.generate())
    sealer = Sealer("gw", signer, outbox, dests, lambda _d: True,
                    unsignable=UnsignableRecords(lines, interval=60.0, clock=clock))
    log = structlog.get_logger()
    senders = [DestinationSender(d.id, None, outbox, log)  # type: ignore[arg-type]  # not run
               for d in dests]
    return outbox, sealer, Egress(sealer, senders, log, max_delay=10.0), signer


@pytest.mark.parametrize(("value", "reason"), [
    (2**60, "value: integer beyond 2**53 - 1"),
    (float("nan"), "value: not a finite number"),
    (Decimal("1.5"), "value: type Decimal is not JSON"),
    ("\ud800", "value: text that is not valid Unicode"),
    ([1, 2**60], "value: a list or object holding a value canonical JSON cannot carry"),
])
async def test_a_bad_value_is_replaced_and_its_neighbours_are_signed(
        tmp_path: Path, value: Any, reason: str) -> None:
    lines, clock = Lines(), Clock()
    outbox, sealer, egress, _ = make(tmp_path, lines, clock)
    with outbox:
        egress.add("t/telemetry", "m1", [rec("a", 1), rec("huge", value), rec("b", 2.5)],
                   complete=True)
        [body] = bodies(outbox)
        assert body["records"] == [
            rec("a", 1),
            {"signal": "huge", "value": None, "unit": None, "ts": TS, "quality": "bad",
             "reason": reason},
            rec("b", 2.5),
        ]
        assert egress.envelopes == 1 and egress.records == 3
        assert sealer.unsignable.replaced == 1 and sealer.unsignable.dropped == 0
        [line] = lines.lines
        assert line["event"] == "record_not_signable" and line["asset"] == "m1"
        assert line["signal"] == "huge" and line["action"] == "replaced"


async def test_logged_once_per_interval_per_machine_and_signal(tmp_path: Path) -> None:
    lines, clock = Lines(), Clock()
    outbox, sealer, egress, _ = make(tmp_path, lines, clock)
    with outbox:
        for poll in range(10):  # every poll carries the bad value again
            clock.now = poll * 5.0
            egress.add("t1/telemetry", "m1", [rec("huge", 2**60), rec("ok", poll)],
                       complete=True)
            egress.add("t2/telemetry", "m2", [rec("huge", 2**60)], complete=True)
        assert egress.envelopes == 20 and sealer.unsignable.replaced == 20
        assert sealer.unsignable.snapshot() == {  # what status, health and /metrics show
            "replaced": 20, "dropped": 0,
            "by_machine": {"m1": {"replaced": 10, "dropped": 0},
                           "m2": {"replaced": 10, "dropped": 0}}}
        assert [(x["asset"], x["records"]) for x in lines.lines] == [("m1", 1), ("m2", 1)]
        clock.now = 60.0
        egress.add("t1/telemetry", "m1", [rec("huge", 2**60)], complete=True)
        assert [(x["asset"], x["records"]) for x in lines.lines[2:]] == [("m1", 10)]
        assert [[r["value"] for r in b["records"] if r["signal"] == "ok"]
                for b in bodies(outbox)[::2][:10]] == [[i] for i in range(10)]


async def test_unreplaceable_records_are_dropped_and_counted_and_the_chain_holds(
        tmp_path: Path) -> None:
    lines, clock = Lines(), Clock()
    outbox, sealer, egress, signer = make(tmp_path, lines, clock)
    with outbox:
        egress.add("t/telemetry", "m1", [rec("\ud800bad", 2**60), rec("ok", 1)], complete=True)
        egress.emit("t/state", "m1", "state", [{"ts": TS, "execution": Decimal(1)}])
        egress.add("t/telemetry", "m1", [rec("ok", 2)], complete=True)
        assert sealer.unsignable.dropped == 2 and sealer.unsignable.replaced == 0
        assert sealer.unsignable.by_machine() == {"m1": {"replaced": 0, "dropped": 2}}
        assert [b["records"] for b in bodies(outbox)] == [[rec("ok", 1)], [rec("ok", 2)]]
        assert [x["action"] for x in lines.lines] == ["dropped", "dropped"]
        assert [b["seq"] for b in bodies(outbox)] == [1, 2]  # no state envelope, no gap
        report = verify_stream([bytes(r.payload).decode() for r in outbox.peek("a", None, 9)],
                               jwks([signer.public_key]))
        assert report.ok and report.total == 2, report.to_dict()


async def test_a_filtered_destination_gets_its_own_chain_signed_once(tmp_path: Path) -> None:
    lines, clock = Lines(), Clock()
    dests = [Destination(id="a", url="mqtt://127.0.0.1"),
             Destination.model_validate({"id": "b", "url": "mqtt://127.0.0.1",
                                         "signals": {"allow": ["huge", "ok"]}})]
    outbox, sealer, egress, _ = make(tmp_path, lines, clock, dests)
    with outbox:
        egress.add("t/telemetry", "m1", [rec("huge", 2**60), rec("ok", 1), rec("x", 3)],
                   complete=True)
        assert [r["signal"] for r in bodies(outbox, "a")[0]["records"]] == ["huge", "ok", "x"]
        [b] = bodies(outbox, "b")
        assert [(r["signal"], r["quality"]) for r in b["records"]] == [("huge", "bad"),
                                                                      ("ok", "good")]
        assert sealer.unsignable.replaced == 1 and len(lines.lines) == 1
