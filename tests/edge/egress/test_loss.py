"""LossLedger: exact counts per destination and machine, one open gap per machine topic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.egress.loss import LossLedger, gap_topic

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
TEL = "edge/p/a/l/m1/telemetry"


def test_counts_per_destination_and_machine_and_one_gap_per_machine() -> None:
    ledger = LossLedger()
    ledger.lost(
        topic=TEL,
        asset="m1",
        stream="telemetry",
        records=10,
        destinations=["a", "b"],
        at=T0,
        reason="disk_full",
    )
    ledger.lost(
        topic="edge/p/a/l/m1/state",
        asset="m1",
        stream="state",
        records=1,
        destinations=["a"],
        at=T0 + timedelta(seconds=2),
        reason="disk_full",
    )
    assert ledger.failing("a") and ledger.failing("b") and not ledger.failing("c")
    assert (ledger.lost_records("a"), ledger.lost_records("b")) == (11, 10)
    assert ledger.snapshot() == {"lost_records": 11, "by_machine": {"m1": 11}, "unreported_gaps": 1,
                                 "unreported_by_machine": {"m1": 1}}
    (gap,) = ledger.unreported()
    assert gap.topic == gap_topic(TEL) == "edge/p/a/l/m1/gap"
    assert gap.as_record() == {
        "ts": "2026-12-06T07:00:02.000Z",
        "from": "2026-12-06T07:00:00.000Z",
        "to": "2026-12-06T07:00:02.000Z",
        "records": 11,
        "envelopes": 2,
        "streams": {"state": 1, "telemetry": 10},
        "reason": "disk_full",
    }
    ledger.stored()
    assert not ledger.failing("a")
    ledger.reported(gap)
    assert ledger.unreported() == [] and ledger.lost_records("a") == 11  # totals stay
