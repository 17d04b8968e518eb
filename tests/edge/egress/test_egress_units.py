"""The egress stages alone: the sealer (chains, per-destination policy, `historical`), the
batcher (records, bytes and age limits, driven by a test clock) and the destination sender
against an in-memory broker, all over a real SQLite outbox in tmp_path. Envelopes are
checked the way a platform checks them (edge.platform_kit.verifier)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import until

from edge.egress.batcher import Egress
from edge.egress.outbox import FILENAME, AppendOp, Outbox, OutboxCap
from edge.egress.sealer import Sealer
from edge.egress.sender import DestinationSender
from edge.platform_kit.verifier import verify_envelope, verify_stream
from edge.signing.jws import ChainState, Signer, jwks
from models.envelope import Stream
from models.errors import TransportError
from models.plant import Destination

TOPIC = "edge/s/a/l/m1/telemetry"
LOG = structlog.get_logger()


def dest(id: str, **kw: Any) -> Destination:
    return Destination.model_validate({"id": id, "url": "mqtt://127.0.0.1:1883", **kw})


def outbox(tmp_path: Path, *names: str) -> Outbox:
    return Outbox(tmp_path / FILENAME, caps={n: OutboxCap(10_000_000) for n in names})


def body_of(payload: bytes, signer: Signer, topic: str = TOPIC) -> dict[str, Any]:
    return verify_envelope(payload, jwks([signer.public_key]), topic=topic)


def rec(signal: str, value: Any = 1) -> dict[str, Any]:
    return {"signal": signal, "value": value, "unit": None, "quality": "good",
            "ts": "2026-03-02T10:00:00.000Z"}  # fmt: skip


def accepted_by(sealer: Sealer, topic: str, asset: str, stream: Stream,
                records: list[dict[str, Any]]) -> list[str]:
    """`Sealer.seal` over an inline outbox reports before it returns: who took it."""
    got: list[str] = []
    sealer.seal(topic, asset, stream, records, lambda stored: got.extend(stored.accepted))
    return got


class Rig:
    def __init__(self, tmp_path: Path, dests: list[Destination], connected: bool = True) -> None:
        self.signer = Signer(Ed25519PrivateKey.generate())
        self.connected = dict.fromkeys((d.id for d in dests), connected)
        self.outbox = outbox(tmp_path, *(d.id for d in dests))
        self.sealer = Sealer(
            "gw-1", self.signer, self.outbox, dests, is_connected=lambda d: self.connected[d]
        )

    def rows(self, name: str) -> list[dict[str, Any]]:
        return [
            body_of(r.payload, self.signer, r.topic) for r in self.outbox.peek(name, limit=1000)
        ]


# ---- sealer ------------------------------------------------------------------------------


def test_each_topic_has_one_unbroken_chain_that_survives_a_reopen(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [dest("a")])
    other = "edge/s/a/l/m2/telemetry"
    for i in range(3):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
    rig.sealer.seal(other, "m2", "telemetry", [rec("x")])
    rig.outbox.close()
    again = Rig.__new__(Rig)
    again.signer, again.connected = rig.signer, rig.connected
    again.outbox = outbox(tmp_path, "a")
    again.sealer = Sealer("gw-1", rig.signer, again.outbox, [dest("a")], lambda d: True)
    again.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", 3)])
    bodies = again.rows("a")
    assert [(b["topic"], b["seq"]) for b in bodies] == [
        (TOPIC, 1), (TOPIC, 2), (TOPIC, 3), (other, 1), (TOPIC, 4)
    ]  # fmt: skip
    lines = [
        json.dumps({"topic": r.topic, "envelope": json.loads(r.payload)})
        for r in again.outbox.peek("a", limit=100)
    ]
    report = verify_stream(lines, jwks([rig.signer.public_key]))
    assert report.counts.get("broken_chain", 0) == 0 and not report.missing, report.to_dict()
    assert bodies[0]["prev"] is None and bodies[1]["prev"] is not None
    for r in again.outbox.peek("a", limit=100):  # the wire form: compact JSON, key order kept
        assert r.payload == json.dumps(json.loads(r.payload), separators=(",", ":")).encode()
        assert list(json.loads(r.payload)) == ["protected", "payload", "signature"]


def test_destinations_get_only_their_streams_machines_and_signals(tmp_path: Path) -> None:
    dests = [
        dest("all"),
        dest("oee-only", streams=["oee"]),
        dest("m2-only", machines={"allow": ["m2"]}),
        dest("spindle", signals={"allow": ["spindle_*"]}),
    ]
    rig = Rig(tmp_path, dests)
    accepted = accepted_by(
        rig.sealer, TOPIC, "m1", "telemetry", [rec("spindle_speed", 900), rec("program", "O1")]
    )
    assert sorted(accepted) == ["all", "spindle"]
    assert rig.rows("oee-only") == [] and rig.rows("m2-only") == []
    [full] = rig.rows("all")
    [mine] = rig.rows("spindle")
    assert [r["signal"] for r in full["records"]] == ["spindle_speed", "program"]
    assert [r["signal"] for r in mine["records"]] == ["spindle_speed"], "program never signed"
    assert mine["seq"] == 1 and full["seq"] == 1, "a filtered destination has its own chain"
    # nothing the filter allows: nothing sealed for it at all
    assert accepted_by(rig.sealer, TOPIC, "m1", "telemetry", [rec("program", "O2")]) == ["all"]
    # state records keep `ts` and `availability` and the allowed fields only
    state = "edge/s/a/l/m1/state"
    rig.sealer.seal(state, "m1", "state",
                    [{"ts": "t", "availability": "available", "program": "O1",
                      "spindle_override": 100}])  # fmt: skip
    [s] = [r for r in rig.rows("spindle") if r["stream"] == "state"]
    assert s["records"] == [{"ts": "t", "availability": "available", "spindle_override": 100}]


def test_historical_is_signed_when_no_destination_of_the_envelope_is_connected(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, [dest("a"), dest("b")], connected=False)
    rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x")])
    rig.connected["b"] = True
    rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x")])
    assert [b["historical"] for b in rig.rows("a")] == [True, False]


# ---- batcher -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def egress(rig: Rig, clock: Clock, **limits: Any) -> Egress:
    idle = DestinationSender("a", MemoryBroker(), rig.outbox, LOG)  # woken, never run
    return Egress(rig.sealer, [idle], LOG, clock=clock, **limits)


def test_a_batch_is_sealed_at_max_records(tmp_path: Path) -> None:
    rig, clock = Rig(tmp_path, [dest("a")]), Clock()
    e = egress(rig, clock, max_records=3, max_bytes=10**9, max_delay=1.0)
    e.add(TOPIC, "m1", [rec("x", i) for i in range(7)])
    assert [len(b["records"]) for b in rig.rows("a")] == [3, 3]
    e.flush_all()
    assert [len(b["records"]) for b in rig.rows("a")] == [3, 3, 1]
    assert e.envelopes == 3 and e.records == 7


def test_a_batch_is_sealed_at_max_bytes(tmp_path: Path) -> None:
    rig, clock = Rig(tmp_path, [dest("a")]), Clock()
    e = egress(rig, clock, max_records=1000, max_bytes=64 + 100 + 64 + 100, max_delay=1.0)
    e.add(TOPIC, "m1", [rec("x", "v" * 100)])
    assert rig.rows("a") == []
    e.add(TOPIC, "m1", [rec("x", "v" * 100)])  # the estimate reaches the limit
    assert [len(b["records"]) for b in rig.rows("a")] == [2]


def test_a_batch_is_sealed_after_max_delay_by_the_clock(tmp_path: Path) -> None:
    rig, clock = Rig(tmp_path, [dest("a")]), Clock()
    e = egress(rig, clock, max_records=1000, max_bytes=10**9, max_delay=0.5)
    e.add(TOPIC, "m1", [rec("x")])
    clock.now += 0.499
    e.add(TOPIC, "m1", [rec("x")])
    e.flush_due()
    assert rig.rows("a") == [], "not yet: the batch opened 0.499 s ago"
    clock.now += 0.001
    e.flush_due()
    assert [len(b["records"]) for b in rig.rows("a")] == [2]


def test_a_complete_poll_is_sealed_at_once(tmp_path: Path) -> None:
    rig, clock = Rig(tmp_path, [dest("a")]), Clock()
    e = egress(rig, clock, max_records=1000, max_bytes=10**9, max_delay=60)
    e.add(TOPIC, "m1", [rec("x"), rec("y")], complete=True)
    assert [len(b["records"]) for b in rig.rows("a")] == [2]


def test_a_store_failure_counts_the_lost_records_and_logs_once(tmp_path: Path) -> None:
    rig, clock = Rig(tmp_path, [dest("a")]), Clock()
    e = egress(rig, clock)
    rig.outbox.close()  # every append now fails
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            e.emit(TOPIC, "m1", "telemetry", [rec("x"), rec("y")])
    assert e.lost_records == 6
    assert [x["event"] for x in logs] == ["egress_store_failed"]


# ---- destination sender ------------------------------------------------------------------


class MemoryBroker:
    """The Publisher protocol in memory: a link that can go down, and a gate that holds
    publishes (unacknowledged) until the test opens it."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.up.set()
        self.since = time.time()
        self.gate = asyncio.Event()
        self.gate.set()
        self.published: list[tuple[str, bytes, bool, dict[str, Any] | None]] = []
        self.attempts = 0
        self.waiters = 0  # calls of wait_connected: the sender parked for the link

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    @property
    def protocol_in_use(self) -> str:
        return "5"

    @property
    def connected_since(self) -> float:
        return self.since

    def link(self, up: bool) -> None:
        """The link goes up (a new session starts now) or down."""
        if up:
            self.since = time.time()
            self.up.set()
        else:
            self.up.clear()

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        self.waiters += 1
        async with asyncio.timeout(timeout):
            await self.up.wait()
        return True

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        payload_mqtt311: bytes | None = None,
        this_link_only: bool = False,
    ) -> None:
        self.attempts += 1
        if not self.connected:
            raise TransportError("not connected")
        await self.gate.wait()
        if not self.connected:
            raise TransportError("link lost before the PUBACK")
        self.published.append((topic, payload, retain, properties))

    def seqs(self) -> list[int]:
        return [json.loads(verify_payload(p))["seq"] for _, p, _, _ in self.published]


def verify_payload(payload: bytes) -> str:
    from edge.signing.jws import b64url_decode

    return b64url_decode(json.loads(payload)["payload"]).decode()


def historical_flags(broker: MemoryBroker) -> list[bool]:
    return [bool(p and ("historical", "true") in p["user_property"]) for *_, p in broker.published]


@pytest.fixture
async def running() -> Any:
    tasks: list[asyncio.Task[None]] = []

    def start(sender: DestinationSender) -> DestinationSender:
        tasks.append(asyncio.create_task(sender.run()))
        return sender

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_sender_publishes_in_order_and_deletes_after_the_ack(
    tmp_path: Path, running: Any
) -> None:
    rig, broker = Rig(tmp_path, [dest("a")]), MemoryBroker()
    sender = running(DestinationSender("a", broker, rig.outbox, LOG, max_inflight=4))
    for i in range(50):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
        sender.wake()
    await until(lambda: rig.outbox.pending("a")[0] == 0, 10, "the outbox to drain")
    assert broker.seqs() == list(range(1, 51))
    assert sender.stats.sent == 50 and sender.stats.replayed == 0
    assert not any(historical_flags(broker)), "live rows are not marked historical"


async def test_nothing_is_handed_over_while_the_link_is_down_and_the_backlog_is_marked(
    tmp_path: Path, running: Any
) -> None:
    rig, broker = Rig(tmp_path, [dest("a")]), MemoryBroker()
    broker.link(False)
    rig.connected["a"] = False
    sender = running(DestinationSender("a", broker, rig.outbox, LOG, backlog_rate=10_000))
    for i in range(5):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
        sender.wake()
    await until(lambda: broker.waiters > 0, 5, "the sender to wait for the link")
    assert broker.attempts == 0 and rig.outbox.pending("a")[0] == 5
    broker.link(True)
    rig.connected["a"] = True
    await until(lambda: rig.outbox.pending("a")[0] == 0, 10, "the backlog to drain")
    assert broker.seqs() == [1, 2, 3, 4, 5]
    assert historical_flags(broker) == [True] * 5
    assert sender.stats.replayed == 5
    rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", 5)])
    sender.wake()
    await until(lambda: len(broker.published) == 6, 10, "live data")
    assert historical_flags(broker)[-1] is False


class HeldOutbox:
    """An outbox whose appends wait until `flush`, as they wait for the gateway's writer
    thread: the row is stored after the moment the sealer looked at the links."""

    def __init__(self, inner: Outbox) -> None:
        self.inner = inner
        self.held: list[tuple[AppendOp, Callable[[dict[str, bool] | Exception], None]]] = []

    def load_chain(self) -> ChainState:
        return self.inner.load_chain()

    def submit(self, op: AppendOp, done: Callable[[dict[str, bool] | Exception], None]) -> None:
        self.held.append((op, done))

    def flush(self) -> None:
        for op, done in self.held:
            self.inner.submit(op, done)
        self.held.clear()


async def test_a_row_sealed_in_an_outage_and_stored_after_the_reconnect_is_flagged(
    tmp_path: Path, running: Any
) -> None:
    """CI caught it: the row's `created` was the store time, so an envelope signed
    `historical` during the outage but stored just after the CONNACK went out unflagged."""
    rig, broker = Rig(tmp_path, [dest("a")]), MemoryBroker()
    held = HeldOutbox(rig.outbox)
    sealer = Sealer("gw-1", rig.signer, held, [dest("a")], is_connected=lambda d: broker.connected)
    broker.link(False)
    sealer.seal(TOPIC, "m1", "telemetry", [rec("x", 1)])
    clock_moves = time.time()
    await until(lambda: time.time() > clock_moves, 5, "the wall clock to move on")
    broker.link(True)  # the new session begins before the writer stores the row
    held.flush()
    running(DestinationSender("a", broker, rig.outbox, LOG, backlog_rate=10_000))
    await until(lambda: rig.outbox.pending("a")[0] == 0, 10, "the replay")
    [(_, payload, _, _)] = broker.published
    assert body_of(payload, rig.signer)["historical"] is True
    assert historical_flags(broker) == [True]


async def test_rows_of_an_earlier_process_are_replayed_as_historical(
    tmp_path: Path, running: Any
) -> None:
    rig = Rig(tmp_path, [dest("a")])
    for i in range(3):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
    rig.outbox.close()
    reopened = outbox(tmp_path, "a")
    broker = MemoryBroker()
    running(DestinationSender("a", broker, reopened, LOG, backlog_rate=10_000))
    await until(lambda: reopened.pending("a")[0] == 0, 10, "the replay")
    assert historical_flags(broker) == [True, True, True]


async def test_a_link_lost_with_publishes_in_flight_loses_and_duplicates_nothing(
    tmp_path: Path, running: Any
) -> None:
    rig, broker = Rig(tmp_path, [dest("a")]), MemoryBroker()
    broker.gate.clear()  # publishes wait for their PUBACK
    sender = running(DestinationSender("a", broker, rig.outbox, LOG, max_inflight=3))
    for i in range(6):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
    sender.wake()
    await until(lambda: broker.attempts == 3, 5, "three publishes in flight")
    assert rig.outbox.pending("a")[0] == 6
    broker.link(False)  # the link drops: the sender withdraws what is in flight
    await until(lambda: not sender.inflight, 5, "in-flight publishes withdrawn")
    assert broker.published == [] and rig.outbox.pending("a")[0] == 6
    broker.gate.set()
    broker.link(True)
    await until(lambda: rig.outbox.pending("a")[0] == 0, 10, "delivery after the reconnect")
    assert broker.seqs() == [1, 2, 3, 4, 5, 6], "in order, each once"


class RacingBroker(MemoryBroker):
    """Runs `hook` on the Nth read of `connected`: the sender reads it for the third time
    right before it starts the first publish task, after it peeked the rows."""

    def __init__(self, hook: Any, on_read: int) -> None:
        super().__init__()
        self.hook, self.on_read, self.reads = hook, on_read, 0

    @property
    def connected(self) -> bool:
        self.reads += 1
        if self.reads == self.on_read:
            self.hook()
        return self.up.is_set()


async def test_drop_oldest_never_evicts_a_row_the_sender_has_picked(
    tmp_path: Path, running: Any
) -> None:
    """The loaded-machine failure of test_full_outbox_drops_oldest_counts_exactly: a row
    evicted between the sender's peek and its publish was delivered *and* counted dropped.
    A peeked row may still be evicted (it was never handed to the broker: `dropped`), but
    then it is not published; a claimed one is never evicted."""
    probe = Rig(tmp_path / "probe", [dest("a")])
    probe.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", 0)])
    row_bytes = probe.outbox.pending("a")[1]
    rig = Rig(tmp_path, [dest("a")])
    rig.outbox.close()
    rig.outbox = Outbox(tmp_path / FILENAME, caps={"a": OutboxCap(int(row_bytes * 3.5))})
    rig.sealer = Sealer("gw-1", rig.signer, rig.outbox, [dest("a")], lambda d: True)
    for i in range(3):
        rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", i)])
    broker = RacingBroker(lambda: rig.sealer.seal(TOPIC, "m1", "telemetry", [rec("x", 3)]), 3)
    running(DestinationSender("a", broker, rig.outbox, LOG))
    await until(lambda: broker.reads >= 3 and rig.outbox.pending("a")[0] == 0, 10, "delivery")
    delivered = set(broker.seqs())
    dropped = rig.outbox.counters("a")["dropped"]
    assert len(delivered) + dropped == 4, (sorted(delivered), dropped)
    assert delivered <= {1, 2, 3, 4} and 4 in delivered  # the newest is never the one dropped
