"""Telemetry batching for polling adapters: one envelope per poll, or per N polls.

Why: `polls_per_envelope` trades latency for fewer signatures; the promise is that the
records of N complete polls go out in one signed envelope, in order, and no sooner.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import until

from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.sender import DestinationSender
from edge.signing.jws import Signer, b64url_decode
from models.plant import Destination


def record(i: int) -> dict[str, object]:
    return {"signal": "s", "value": i, "unit": None, "ts": "2026-12-06T07:00:00.000Z",
            "quality": "good"}


async def test_polls_per_envelope_groups_complete_polls(tmp_path: Path) -> None:
    log = structlog.get_logger()
    with Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(1 << 30)}) as outbox:
        sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), outbox,
                        [Destination(id="a", url="mqtt://127.0.0.1")], lambda _d: True)
        sender = DestinationSender("a", None, outbox, log)  # type: ignore[arg-type]  # never run
        egress = Egress(sealer, [sender], log, max_delay=10.0, polls_per_envelope=2)
        for poll in range(3):
            egress.add("t/telemetry", "m1", [record(2 * poll), record(2 * poll + 1)],
                       complete=True)
        assert egress.envelopes == 1  # polls 0 and 1 together; poll 2 waits for the next
        [row] = outbox.peek("a", None, 10)
        body = json.loads(b64url_decode(json.loads(row.payload)["payload"]))
        assert [r["value"] for r in body["records"]] == [0, 1, 2, 3]
        egress.flush_all()
        assert egress.envelopes == 2 and egress.records == 6


async def test_run_seals_an_open_batch_by_age_and_idles_without_one(tmp_path: Path) -> None:
    """`run` ticks only while a batch is open (issue 17: 40 idle wake-ups a second before):
    an incomplete batch is sealed after `max_delay`, and a later one too after the loop
    went back to sleep."""
    log = structlog.get_logger()
    with Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(1 << 30)}) as outbox:
        sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), outbox,
                        [Destination(id="a", url="mqtt://127.0.0.1")], lambda _d: True)
        sender = DestinationSender("a", None, outbox, log)  # type: ignore[arg-type]  # never run
        egress = Egress(sealer, [sender], log, max_delay=0.05)
        task = asyncio.create_task(egress.run())
        try:
            egress.add("t/telemetry", "m1", [record(1)])  # not complete: waits for its age
            assert egress.envelopes == 0
            await until(lambda: egress.envelopes == 1, what="the open batch sealed by age")
            await until(lambda: not egress._open.is_set(), what="the loop idle again")
            egress.add("t/telemetry", "m1", [record(2)], complete=True)  # sealed at once
            assert egress.envelopes == 2 and not egress._open.is_set()
            egress.add("t/telemetry", "m1", [record(3)])
            await until(lambda: egress.envelopes == 3, what="a later open batch sealed too")
        finally:
            task.cancel()
