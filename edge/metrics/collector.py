"""Prometheus metrics of a running gateway, read from its status at scrape time.

Why a custom collector instead of counters bumped in the data path: the figures already
exist (twin statistics, outbox counters, the KPI service), so exporting them costs nothing
until something scrapes `/metrics`, and the hot path (200 machines x every poll) gains no
lock or label lookup. Names and labels follow the Prometheus conventions: one `edge_gateway_`
prefix, base units (seconds, bytes), `_total` for counters, ratios 0..1 as `_ratio`, and
low-cardinality labels only (machine, adapter, destination, method, result, reason).
README.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from edge.status.log_tap import RELOAD_RESULTS
from edge.status.model import StatusSource

PREFIX = "edge_gateway_"
LINK_UP = frozenset({"up", "degraded"})


class GatewayCollector(Collector):
    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the gateway may not be running yet

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway()
        yield from self._machines()
        yield from self._destinations()
        yield from self._queries()

    def _gateway(self) -> Iterator[Metric]:
        g = self.source.gateway()
        info = InfoMetricFamily(PREFIX + "build", "Gateway identity and version")
        info.add_metric([], {"version": g.version, "gateway": g.id, "site": g.site,
                             "kid": g.kid or ""})
        yield info
        start = GaugeMetricFamily(PREFIX + "start_time_seconds", "Start time, Unix seconds")
        start.add_metric([], g.started.timestamp())
        yield start
        yield CounterMetricFamily(PREFIX + "envelopes_sealed", "Envelopes signed",
                                  value=g.envelopes_sealed)
        yield CounterMetricFamily(PREFIX + "records_sealed", "Records inside signed envelopes",
                                  value=g.records_sealed)
        reloads = CounterMetricFamily(PREFIX + "reloads", "SIGHUP reloads", labels=["result"])
        # a series per result from the start, not from the first reload
        outcomes = {**dict.fromkeys(RELOAD_RESULTS, 0), **g.reload_counts}
        for result, n in sorted(outcomes.items()):
            reloads.add_metric([result], n)
        yield reloads

    def _machines(self) -> Iterator[Metric]:
        labels = ["machine", "adapter"]
        up = GaugeMetricFamily(PREFIX + "device_up", "1 when the device link is up",
                               labels=labels)
        reconnects = CounterMetricFamily(
            PREFIX + "device_reconnects", "Times the device link came back", labels=["machine"])
        samples = CounterMetricFamily(PREFIX + "samples_read", "Samples read from the device",
                                      labels=["machine"])
        bad = CounterMetricFamily(PREFIX + "samples_bad", "Samples read with quality bad",
                                  labels=["machine"])
        unsignable = CounterMetricFamily(
            PREFIX + "records_unsignable",
            "Records the signer refused (NaN, infinity, integer beyond 2**53, invalid text, "
            "non-JSON type): replaced by a bad record, or dropped",
            labels=["machine", "action"])
        last = GaugeMetricFamily(PREFIX + "last_sample_timestamp_seconds",
                                 "When the device last sent a sample, Unix seconds",
                                 labels=["machine"])
        polls = HistogramMetricFamily(PREFIX + "poll_duration_seconds",
                                      "Time one poll of the device took", labels=["machine"])
        ratios = {
            name: GaugeMetricFamily(f"{PREFIX}oee_{name}_ratio",
                                    f"Running shift's OEE {name} (0..1)", labels=["machine"])
            for name in ("oee", "availability", "effectiveness", "quality")
        }
        ratios["observed"] = GaugeMetricFamily(
            PREFIX + "oee_observed_ratio",
            "Share of the running shift's planned time the gateway observed (0..1)",
            labels=["machine"])
        for m in self.source.machines():
            # degraded: connected, some points failing; still up as a link
            up.add_metric([m.id, m.adapter], 1.0 if m.link in LINK_UP else 0.0)
            reconnects.add_metric([m.id], m.reconnects)
            samples.add_metric([m.id], m.samples)
            bad.add_metric([m.id], m.bad_samples)
            unsignable.add_metric([m.id, "replaced"], m.unsignable_replaced)
            unsignable.add_metric([m.id, "dropped"], m.unsignable_dropped)
            if m.last_sample is not None:
                last.add_metric([m.id], m.last_sample.timestamp())
            hist = self.source.poll_durations(m.id)
            if hist is not None:
                buckets = [(_bound(b), c) for b, c in zip(hist.bounds, hist.counts, strict=True)]
                buckets.append(("+Inf", hist.count))
                polls.add_metric([m.id], buckets, hist.total)
            oee = self.source.oee(m.id)
            if oee is not None:
                for name, value in (("oee", oee.oee), ("availability", oee.availability),
                                    ("effectiveness", oee.effectiveness),
                                    ("quality", oee.quality), ("observed", oee.observed)):
                    if value is not None:
                        ratios[name].add_metric([m.id], value)
        yield from (up, reconnects, samples, bad, unsignable, last, polls, *ratios.values())

    def _destinations(self) -> Iterator[Metric]:
        d_label = ["destination"]
        connected = GaugeMetricFamily(PREFIX + "destination_connected",
                                      "1 when the MQTT link is up", labels=d_label)
        sent = CounterMetricFamily(PREFIX + "envelopes_sent", "Envelopes published",
                                   labels=d_label)
        acked = CounterMetricFamily(PREFIX + "envelopes_acked",
                                    "Envelopes acknowledged by the broker (PUBACK)",
                                    labels=d_label)
        pending = GaugeMetricFamily(PREFIX + "outbox_pending_records",
                                    "Envelopes waiting in the outbox", labels=d_label)
        pending_bytes = GaugeMetricFamily(PREFIX + "outbox_pending_bytes",
                                          "Bytes waiting in the outbox", labels=d_label)
        drops = CounterMetricFamily(PREFIX + "outbox_dropped_envelopes",
                                    "Envelopes lost to a full outbox",
                                    labels=["destination", "reason"])
        lost = CounterMetricFamily(PREFIX + "records_lost",
                                   "Records never stored for a destination (disk full, store "
                                   "error): no seq; a signed gap record reports them later",
                                   labels=d_label)
        last_ack = GaugeMetricFamily(PREFIX + "destination_last_ack_timestamp_seconds",
                                     "When the broker last acknowledged, Unix seconds",
                                     labels=d_label)
        for d in self.source.destinations():
            connected.add_metric([d.id], 1.0 if d.connected else 0.0)
            sent.add_metric([d.id], d.sent)
            acked.add_metric([d.id], d.acked)
            pending.add_metric([d.id], d.pending)
            pending_bytes.add_metric([d.id], d.pending_bytes)
            drops.add_metric([d.id, "drop_oldest"], d.dropped)
            drops.add_metric([d.id, "reject_new"], d.rejected)
            lost.add_metric([d.id], d.lost_records)
            if d.last_ack is not None:
                last_ack.add_metric([d.id], d.last_ack.timestamp())
        yield from (connected, sent, acked, pending, pending_bytes, drops, lost, last_ack)

    def _queries(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            PREFIX + "query_requests",
            "Platform query requests, answered (result ok) or refused (result: the error code)",
            labels=["method", "result"])
        for (method, result), n in sorted(self.source.queries().by_method_result.items()):
            requests.add_metric([method, result], n)
        yield requests


def _bound(b: float) -> str:
    return repr(float(b))


def registry_for(source: StatusSource) -> CollectorRegistry:
    """A registry of this gateway only (no process or GC collectors of the default one, so
    two gateways in one test process never mix)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(source))
    return registry
