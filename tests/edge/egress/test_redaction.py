"""A destination's `signals` filter reaches the records derived from signals (`part`,
`bookings`, `capacity`): the keys made of a denied signal are absent from what is signed
for it, the unfiltered destinations' envelopes are unchanged, and each keeps its chain."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.redaction import needs_own_envelope, redact
from edge.egress.sealer import Sealer
from edge.platform_kit.verifier import verify_envelope, verify_stream
from edge.signing.jws import Signer, jwks
from models.booking import booking_record
from models.plant import Destination, PatternFilter

PART_TOPIC = "edge/s/a/l/m1/part"
HIDE = PatternFilter(deny=["program*", "alarm*", "part_count"])


def part() -> dict[str, Any]:
    return {
        "part_seq": 7, "parts": 1, "machine_count": 42, "counter_reset": False,
        "program": "O1000", "cycle_time": 8.0, "ideal_cycle_time": 7.5,
        "states": {"active": 8.0, "alarm": 0.0},
        "alarms": [{"code": "1001", "text": "spindle overload", "severity": "high"}],
        "signals": {"spindle_load": {"min": 1.0, "mean": 2.0, "max": 3.0, "n": 3},
                    "program_line": {"min": 1.0, "mean": 1.0, "max": 1.0, "n": 1}},
        "verdict": "good", "verdict_basis": "bad_part_count did not advance (still 3)",
        "booking": None, "ts": "2026-03-02T10:00:00.000Z",
    }  # fmt: skip


def test_a_part_record_leaves_out_what_is_made_of_denied_signals() -> None:
    full = part()
    [mine] = redact([full], "part", HIDE)
    assert "program" not in mine and "alarms" not in mine and "machine_count" not in mine
    assert mine["signals"] == {"spindle_load": full["signals"]["spindle_load"]}
    assert {k: v for k, v in mine.items() if k != "signals"} == {
        k: v for k, v in full.items() if k not in ("program", "alarms", "machine_count",
                                                   "signals")}
    assert full == part(), "the unfiltered destinations' record is not touched"


def test_the_verdict_basis_goes_with_the_bad_part_counter() -> None:
    """It names the counter's value; the verdict itself stays."""
    [mine] = redact([part()], "part", PatternFilter(deny=["bad_part_count"]))
    assert "verdict_basis" not in mine and mine["verdict"] == "good"
    assert redact([part()], "part", HIDE)[0]["verdict_basis"] == part()["verdict_basis"]


def test_an_alarm_detail_signal_alone_hides_the_alarm_list() -> None:
    """Alarm entries carry the text and severity signals' values."""
    for denied in ("alarm", "alarm_text", "alarm_severity"):
        [mine] = redact([part()], "part", PatternFilter(deny=[denied]))
        assert "alarms" not in mine and mine["program"] == "O1000", denied
    [state] = redact([{"ts": "t", "availability": "available", "alarms": ["1"]}], "state",
                     PatternFilter(deny=["alarm"]))
    assert state == {"ts": "t", "availability": "available"}


def test_bookings_and_capacity_leave_out_programs() -> None:
    owner = {"platform": None, "reference": None, "commitment": "c"}
    booking = booking_record(booking="b1", state="requested", owner=owner, machine="m1",
                             start=None, end=None, at=datetime(2026, 3, 2, 10, tzinfo=UTC),
                             by="platform", request={"program": "O1000"})
    [b] = redact([booking], "bookings", PatternFilter(deny=["program"]))
    assert "program" not in b and b["booking"] == "b1"
    offer = {"machine": "m1", "free_hours": 3.0, "ts": "t",
             "energy_per_part": {"7d": {"O1000": {"kwh_per_part": 0.1}}, "30d": None}}
    [c] = redact([offer], "capacity", PatternFilter(deny=["program*"]))
    assert c == {"machine": "m1", "free_hours": 3.0, "ts": "t"}
    # a filter that denies no program keeps the offer and shares its envelope
    keep = PatternFilter(deny=["spindle_*"])
    assert redact([offer], "capacity", keep) == [offer]
    assert not needs_own_envelope("capacity", keep) and not needs_own_envelope("bookings", keep)
    assert needs_own_envelope("part", keep), "a part record summarises any signal"
    assert not needs_own_envelope("oee", HIDE) and not needs_own_envelope("part",
                                                                          PatternFilter())


def dest(id: str, **kw: Any) -> Destination:
    return Destination.model_validate({"id": id, "url": "mqtt://127.0.0.1:1883", **kw})


def test_the_sealer_signs_a_redacted_part_on_its_own_chain(tmp_path: Path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    dests = [dest("all"), dest("hidden", signals={"deny": ["program*", "alarm*", "part_count"]}),
             dest("other", signals={"deny": ["temperature"]})]
    box = Outbox(tmp_path / FILENAME, caps={d.id: OutboxCap(10_000_000) for d in dests})
    sealer = Sealer("gw-1", signer, box, dests, lambda d: True)
    attached: list[dict[str, Any]] = []
    sealer.observers["part"] = [lambda _a, records, _e: attached.extend(records)]
    records = [part(), {**part(), "part_seq": 8}]
    sealer.seal(PART_TOPIC, "m1", "part", copy.deepcopy(records))
    sealer.seal(PART_TOPIC, "m1", "part", [{**part(), "part_seq": 9}])
    keys = jwks([signer.public_key])

    def bodies(name: str) -> list[dict[str, Any]]:
        return [verify_envelope(r.payload, keys, topic=r.topic) for r in box.peek(name, limit=100)]

    full, hidden, other = bodies("all"), bodies("hidden"), bodies("other")
    assert [r for b in full for r in b["records"]] == [*records, {**part(), "part_seq": 9}]
    assert [r for b in other for r in b["records"]] == [r for b in full for r in b["records"]]
    for r in (r for b in hidden for r in b["records"]):
        assert not {"program", "alarms", "machine_count"} & set(r)
        assert set(r["signals"]) == {"spindle_load"}
    assert [b["seq"] for b in hidden] == [1, 2] == [b["seq"] for b in full]
    assert box.peek("all", limit=100)[0].payload != box.peek("hidden", limit=100)[0].payload
    for name in ("all", "hidden", "other"):
        lines = [json.dumps({"topic": r.topic, "envelope": json.loads(r.payload)})
                 for r in box.peek(name, limit=100)]
        report = verify_stream(lines, keys)
        assert report.ok, report.to_dict()
    assert [r["part_seq"] for r in attached] == [7, 8, 9], "the store hears the full one once"
    assert all("program" in r for r in attached)


def test_an_unfiltered_destination_alone_is_sealed_as_before(tmp_path: Path) -> None:
    """No filtered destination: one shared envelope on the topic's own chain key."""
    signer = Signer(Ed25519PrivateKey.generate())
    box = Outbox(tmp_path / FILENAME, caps={"all": OutboxCap(10_000_000)})
    sealer = Sealer("gw-1", signer, box, [dest("all")], lambda d: True)
    sealer.seal(PART_TOPIC, "m1", "part", [part()])
    [row] = box.peek("all", limit=10)
    body = verify_envelope(row.payload, jwks([signer.public_key]), topic=row.topic)
    assert body["records"] == [part()] and sealer.chain.last(PART_TOPIC) is not None
