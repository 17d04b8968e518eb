"""The one place a body becomes signed bytes: seq/prev chains and egress policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from edge.egress.loss import Gap
from edge.egress.outbox import Outbox
from edge.egress.unsignable import UnsignableRecords
from edge.signing.jws import ChainState, Signer, signing_input_hash
from models.envelope import RETAINED_STREAMS, Stream, envelope_body
from models.plant import Destination, PatternFilter
from models.sample import utc_now

SealedObserver = Callable[[str | None, list[dict[str, Any]], dict[str, Any]], None]
"""Told (asset, records, signed envelope) after an envelope of its stream is stored: the
part store keeps the envelope each part record was published in (edge/parts/)."""


class Sealer:
    """The one place a body becomes signed bytes; owns the seq/prev chains.

    Egress policy (data sovereignty) is applied here, before signing: a destination gets a
    topic only if it takes the stream and the machine, and only the signals its `signals`
    filter allows (telemetry records by signal name, state fields by field name). What a
    destination may not see is never signed for it, stored for it or sent to it.
    Destinations without a signal filter share one envelope and the topic's chain; a
    destination with a filter gets its own envelope and its own chain on that topic
    (chain key `dest:<id>:<topic>`), so each subscriber still sees one unbroken chain.

    The signed `historical` is true when none of the envelope's destinations is connected
    at sealing time (`is_connected`), false as soon as one is; replays are marked later,
    unsigned, by the sender (docs/protocol.md, "Store-and-forward and `historical`").

    A record canonical JSON cannot carry (an integer beyond 2**53, a NaN, a non-JSON type
    from a plugin) is replaced by a `bad` record with a reason, or dropped and counted, by
    `unsignable` (edge/egress/unsignable.py); the rest of its batch is signed as usual.
    """

    def __init__(
        self,
        gateway: str,
        signer: Signer,
        outbox: Outbox,
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

    def seal(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> list[str]:
        """Sign and store; returns the destinations that accepted an envelope.

        Every envelope of the call is signed before any is stored, so a record canonical
        JSON cannot carry (edge/egress/unsignable.py) is replaced and the batch signed
        again without storing anything twice: one bad value never costs its neighbours."""
        try:
            signed = self._sign_all(topic, asset, stream, records)
        except ValueError:
            records = self.unsignable.screen(asset, stream, records)
            if not records:
                return []
            signed = self._sign_all(topic, asset, stream, records)
        accepted: list[str] = []
        for envelope in signed:
            accepted += self._store(envelope)
        return accepted

    def _sign_all(
        self, topic: str, asset: str | None, stream: Stream, records: list[dict[str, Any]]
    ) -> list[_Signed]:
        shared: list[str] = []
        own: list[tuple[str, list[dict[str, Any]]]] = []
        routed = set(self.routes(asset, stream))
        for d in self.destinations:
            if d.id not in routed:
                continue
            if d.signals.everything or stream not in ("telemetry", "state"):
                shared.append(d.id)
                continue
            mine = _filter_signals(records, stream, d.signals)
            if mine:
                own.append((d.id, mine))
        signed = (
            [self._sign(topic, topic, asset=asset, stream=stream, records=records, dests=shared)]
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

    def routes(self, asset: str | None, stream: Stream) -> list[str]:
        """Destinations that take `stream` of `asset` (before any signal filter)."""
        return [
            d.id
            for d in self.destinations
            if stream in d.streams and (asset is None or d.machines.allows(asset))
        ]

    def seal_gap(self, gap: Gap) -> list[str]:
        """Sign and store the `gap` record of `gap` on its own topic, for every destination
        that may see the machine, whatever streams it takes: one chain per gap topic must
        reach every subscriber of it whole, and the record names streams, so a destination
        ignores counts of streams it does not take. Counts are before signal filters."""
        dests = [
            d.id for d in self.destinations if gap.asset is None or d.machines.allows(gap.asset)
        ]
        if not dests:
            return []
        return self._store(
            self._sign(
                gap.topic,
                gap.topic,
                asset=gap.asset,
                stream="gap",
                records=[gap.as_record()],
                dests=dests,
            )
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
            stream,
            asset,
            records,
            envelope,
        )

    def _store(self, s: _Signed) -> list[str]:
        accepted = self.outbox.append(
            s.topic,
            s.seq,
            s.link,
            s.payload,
            retain=s.retain,
            dests=s.dests,
            chain_key=s.chain_key,
            live=s.live,
        )
        self.chain.commit(s.chain_key, s.seq, s.link)
        for observer in self.observers.get(s.stream, ()):
            observer(s.asset, s.records, s.envelope)
        return [d for d, ok in accepted.items() if ok]


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
    stream: Stream
    asset: str | None
    records: list[dict[str, Any]]
    envelope: dict[str, str]


_ALWAYS_KEPT = frozenset({"ts", "availability"})  # what a state record means without the rest


def _filter_signals(
    records: list[dict[str, Any]], stream: str, allowed: PatternFilter
) -> list[dict[str, Any]]:
    if stream == "telemetry":
        return [r for r in records if allowed.allows(str(r.get("signal")))]
    return [{k: v for k, v in r.items() if k in _ALWAYS_KEPT or allowed.allows(k)} for r in records]
