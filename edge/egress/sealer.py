"""The one place a body becomes signed bytes: seq/prev chains and egress policy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from edge.egress.loss import Gap
from edge.egress.outbox import AppendOp
from edge.egress.redaction import needs_own_envelope, redact
from edge.egress.unsignable import UnsignableRecords
from edge.signing.jws import ChainState, Signer, signing_input_hash
from models.envelope import RETAINED_STREAMS, Stream, envelope_body
from models.errors import EdgeError
from models.plant import Destination, PatternFilter
from models.sample import utc_now

SealedObserver = Callable[[str | None, list[dict[str, Any]], dict[str, Any]], None]
"""Told (asset, records, signed envelope) after an envelope of its stream is stored: the
part store keeps the envelope each part record was published in (edge/parts/)."""


class EnvelopeStore(Protocol):
    """Where sealed envelopes go: an `Outbox` (answers at once) or the gateway's
    `OutboxWriter` (answers on the event loop once its writer thread committed)."""

    def load_chain(self) -> ChainState: ...

    def submit(self, op: AppendOp, done: Callable[[dict[str, bool] | Exception], None]
               ) -> None: ...


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of one sealed envelope: `accepted` destinations hold it, or `error` says
    why nothing was stored (then `dests`, the destinations it was for, lost `records`)."""

    topic: str
    asset: str | None
    stream: Stream
    records: int
    dests: list[str]
    accepted: list[str]
    error: EdgeError | None = None


OnStored = Callable[[Stored], None]


def _ignore(_result: Stored) -> None:
    """The default `on_stored`: nobody waits for the outcome."""


class Sealer:
    """The one place a body becomes signed bytes; owns the seq/prev chains.

    Egress policy (data sovereignty) is applied here, before signing: a destination gets a
    topic only if it takes the stream and the machine, and only the signals its `signals`
    filter allows: telemetry records by signal name, state fields by field name, and the
    keys of `part`, `bookings` and `capacity` records derived from a denied signal
    (edge/egress/redaction.py). What a destination may not see is never signed for it,
    stored for it or sent to it. Destinations without a signal filter share one envelope
    and the topic's chain; a destination whose filter may leave something out of the
    stream gets its own envelope and its own chain on that topic (chain key
    `dest:<id>:<topic>`), so each subscriber still sees one unbroken chain. Observers
    (the part store) hear of one envelope per call, one carrying the records unredacted.

    The signed `historical` is true when none of the envelope's destinations is connected
    at sealing time (`is_connected`), false as soon as one is; replays are marked later,
    unsigned, by the sender (docs/protocol.md, "Store-and-forward and `historical`").

    A record canonical JSON cannot carry (an integer beyond 2**53, a NaN, a non-JSON type
    from a plugin) is replaced by a `bad` record with a reason, or dropped and counted, by
    `unsignable` (edge/egress/unsignable.py); the rest of its batch is signed as usual.

    Storing is asynchronous with the gateway's `OutboxWriter`: the chain advances when an
    envelope is queued, so the next one links to it at once; when an append fails, the
    appends of that chain queued behind it fail too (their seq no longer follows), and the
    first failure rewinds the chain to the envelope before it, which is what the outbox
    holds, since its answers come in queue order. So the chain on disk never forks or
    skips, and each lost envelope is reported to `on_stored` (the batcher counts it).
    """

    def __init__(
        self,
        gateway: str,
        signer: Signer,
        outbox: EnvelopeStore,
        destinations: list[Destination],
        is_connected: Callable[[str], bool],
        *,
        unsignable: UnsignableRecords | None = None,
    ) -> None:
        self.gateway = gateway
        self.signer = signer
        self.outbox = outbox
        self.destinations = destinations
        self.is_connected = is_connected
        self.unsignable = unsignable or UnsignableRecords(
            structlog.get_logger().bind(component="sealer").warning
        )
        self.chain: ChainState = outbox.load_chain()
        self.observers: dict[str, list[SealedObserver]] = {}
        self._epoch: dict[str, int] = {}  # per chain: bumped by each rewind
        self._routes: dict[tuple[str | None, str],
                           tuple[list[str], list[tuple[str, PatternFilter]]]] = {}

    def seal(
        self,
        topic: str,
        asset: str | None,
        stream: Stream,
        records: list[dict[str, Any]],
        on_stored: OnStored = _ignore,
    ) -> None:
        """Sign and store; `on_stored` hears of each envelope once it is stored or failed
        (before this returns with an inline `Outbox`, later on the loop with a writer).

        Every envelope of the call is signed before any is stored, so a record canonical
        JSON cannot carry (edge/egress/unsignable.py) is replaced and the batch signed
        again without storing anything twice: one bad value never costs its neighbours."""
        try:
            signed = self._sign_all(topic, asset, stream, records)
        except ValueError:
            records = self.unsignable.screen(asset, stream, records)
            if not records:
                return
            signed = self._sign_all(topic, asset, stream, records)
        full = next((s for s in signed if s.records is records), None)
        for envelope in signed:
            self._store(envelope, on_stored, observed=envelope is full)

    def _sign_all(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> list[_Signed]:
        own: list[tuple[str, list[dict[str, Any]]]] = []
        shared, filtered = self._route(asset, stream)
        for dest, signals in filtered:
            mine = redact(records, stream, signals)
            if mine == records:
                own.append((dest, records))  # nothing left out: the part store may attach it
            elif mine:
                own.append((dest, mine))
        signed = (
            [self._sign(topic, topic, asset=asset, stream=stream, records=records,
                        dests=list(shared))]
            if shared
            else []
        )
        for dest, mine in own:
            signed.append(
                self._sign(
                    f"dest:{dest}:{topic}",
                    topic,
                    asset=asset,
                    stream=stream,
                    records=mine,
                    dests=[dest],
                )
            )
        return signed

    def _route(self, asset: str | None, stream: Stream
               ) -> tuple[list[str], list[tuple[str, PatternFilter]]]:
        """(destinations sharing one envelope, destinations with a signal filter) for a
        machine's stream: the same answer for every envelope of it, so worked out once
        (fnmatch per destination and per envelope was ~1 % of the gateway's CPU)."""
        key = (asset, stream)
        route = self._routes.get(key)
        if route is None:
            routed = set(self.routes(asset, stream))
            shared = [d.id for d in self.destinations
                      if d.id in routed and not needs_own_envelope(stream, d.signals)]
            filtered = [(d.id, d.signals) for d in self.destinations
                        if d.id in routed and d.id not in shared]
            route = self._routes[key] = (shared, filtered)
        return route

    def routes(self, asset: str | None, stream: Stream) -> list[str]:
        """Destinations that take `stream` of `asset` (before any signal filter)."""
        return [
            d.id
            for d in self.destinations
            if stream in d.streams and (asset is None or d.machines.allows(asset))
        ]

    def seal_gap(self, gap: Gap, on_stored: OnStored) -> None:
        """Sign and store the `gap` record of `gap` on its own topic, for every destination
        that may see the machine, whatever streams it takes: one chain per gap topic must
        reach every subscriber of it whole, and the record names streams, so a destination
        ignores counts of streams it does not take. Counts are before signal filters."""
        dests = [
            d.id for d in self.destinations if gap.asset is None or d.machines.allows(gap.asset)
        ]
        if not dests:
            on_stored(Stored(gap.topic, gap.asset, "gap", 1, [], []))
            return
        self._store(
            self._sign(
                gap.topic,
                gap.topic,
                asset=gap.asset,
                stream="gap",
                records=[gap.as_record()],
                dests=dests,
            ),
            on_stored,
        )

    def _sign(
        self,
        chain_key: str,
        topic: str,
        *,
        asset: str | None,
        stream: Stream,
        records: list[dict[str, Any]],
        dests: list[str],
    ) -> _Signed:
        """The next envelope of `chain_key`, signed; ValueError if a record is unsignable.
        Nothing is stored and the chain does not advance until `_store`."""
        seq, prev = self.chain.next(chain_key)
        judged_at = time.time()  # before the look at the links: see `AppendOp.created`
        live = [d for d in dests if self.is_connected(d)]
        body = envelope_body(
            gateway=self.gateway,
            topic=topic,
            asset=asset,
            stream=stream,
            seq=seq,
            prev=prev,
            created=utc_now(),
            records=records,
            historical=not live,
        )
        envelope = self.signer.sign_body(body)
        return _Signed(
            chain_key,
            topic,
            seq,
            signing_input_hash(envelope),
            # the bytes json.dumps(envelope, separators=(",", ":")) gives: three base64url
            # (ASCII) strings, nothing to escape
            orjson.dumps(envelope),
            stream in RETAINED_STREAMS,
            dests,
            live,
            judged_at,
            stream,
            asset,
            records,
            envelope,
        )

    def _store(self, s: _Signed, on_stored: OnStored, *, observed: bool = True) -> None:
        """Queue `s`, advancing its chain now; see the class docstring for failures.
        `observed`: whether the stream's observers hear of it once stored."""
        prior = self.chain.last(s.chain_key)
        epoch = self._epoch.get(s.chain_key, 0)
        self.chain.commit(s.chain_key, s.seq, s.link)

        def done(result: dict[str, bool] | Exception) -> None:
            if isinstance(result, dict):
                if observed:
                    for observer in self.observers.get(s.stream, ()):
                        observer(s.asset, s.records, s.envelope)
                on_stored(Stored(s.topic, s.asset, s.stream, len(s.records), s.dests,
                                 [d for d, ok in result.items() if ok]))
                return
            if self._epoch.get(s.chain_key, 0) == epoch:
                # The first failure since the chain last resumed: everything before it was
                # stored (answers come in queue order), so the outbox's head is `prior`.
                self._epoch[s.chain_key] = epoch + 1
                self.chain.rewind(s.chain_key, prior)
            error = result if isinstance(result, EdgeError) else EdgeError(str(result))
            on_stored(Stored(s.topic, s.asset, s.stream, len(s.records), s.dests, [], error))

        self.outbox.submit(
            AppendOp(s.topic, s.seq, s.link, s.payload, s.retain, tuple(s.dests), s.chain_key,
                     tuple(s.live), s.judged_at),
            done,
        )


@dataclass(frozen=True, slots=True)
class _Signed:
    """One signed envelope waiting to be stored for `dests` on chain `chain_key`."""

    chain_key: str
    topic: str
    seq: int
    link: str
    payload: bytes
    retain: bool
    dests: list[str]
    live: list[str]
    judged_at: float
    stream: Stream
    asset: str | None
    records: list[dict[str, Any]]
    envelope: dict[str, str]
