"""/metrics text parses with Prometheus' own parser; names, labels and values as documented."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics.collector import registry_for
from edge.status.log_tap import KEEP, RecentLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from plant_status import T0, FixedStatus, machine


def _families() -> dict[str, object]:
    text = generate_latest(registry_for(FixedStatus())).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, object], name: str, **labels: str) -> float:
    fam = families[name]
    for s in fam.samples:  # type: ignore[attr-defined]
        if s.name.startswith(name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_unsignable_records_are_a_counter_per_machine_and_action() -> None:
    status = FixedStatus(rows=[machine("mill-01", unsignable_replaced=7, unsignable_dropped=1),
                               machine("lathe-01")])
    text = generate_latest(registry_for(status)).decode()
    f = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert f["edge_gateway_records_unsignable"].type == "counter"  # type: ignore[attr-defined]
    name = "edge_gateway_records_unsignable"
    assert _value(f, name, machine="mill-01", action="replaced") == 7
    assert _value(f, name, machine="mill-01", action="dropped") == 1
    assert _value(f, name, machine="lathe-01", action="replaced") == 0


def test_every_family_parses_with_per_machine_series() -> None:
    f = _families()
    assert _value(f, "edge_gateway_device_up", machine="mill-01", adapter="modbus") == 1
    assert _value(f, "edge_gateway_device_up", machine="lathe-01") == 0
    assert _value(f, "edge_gateway_samples_read", machine="mill-01") == 100
    assert _value(f, "edge_gateway_samples_bad", machine="mill-01") == 1
    assert _value(f, "edge_gateway_oee_oee_ratio", machine="mill-01") == 0.684
    assert _value(f, "edge_gateway_oee_availability_ratio", machine="mill-01") == 0.9
    assert _value(f, "edge_gateway_oee_observed_ratio", machine="mill-01") == 1.0
    assert _value(f, "edge_gateway_outbox_pending_bytes", destination="local") == 4096
    assert _value(f, "edge_gateway_outbox_dropped_envelopes", reason="drop_oldest") == 1
    assert _value(f, "edge_gateway_query_requests", method="oee", result="ok") == 4
    assert _value(f, "edge_gateway_reloads", result="rejected") == 1
    hist = f["edge_gateway_poll_duration_seconds"]
    buckets = {s.labels["le"]: s.value for s in hist.samples  # type: ignore[attr-defined]
               if s.name.endswith("_bucket") and s.labels["machine"] == "mill-01"}
    assert buckets == {"0.01": 3, "0.1": 9, "+Inf": 10}
    assert f["edge_gateway_samples_read"].type == "counter"  # type: ignore[attr-defined]
    assert _value(f, "edge_gateway_build_info", version="0.1.0", kid="kid-1") == 1


def test_reloads_have_a_sample_per_result_before_the_first_reload() -> None:
    """`edge_gateway_reloads_total` had no sample until a reload: an alert on its increase
    missed the first rejected one (Prometheus: initialize known label values to 0)."""
    text = generate_latest(registry_for(FixedStatus(reloads=()))).decode()
    assert 'edge_gateway_reloads_total{result="ok"} 0.0' in text
    assert 'edge_gateway_reloads_total{result="rejected"} 0.0' in text
    assert 'edge_gateway_reloads_total{result="partial"} 0.0' in text


def test_query_requests_help_says_refusals_count_too() -> None:
    f = _families()
    assert _value(f, "edge_gateway_query_requests", method="unknown",
                  result="unauthorized") == 1
    doc = f["edge_gateway_query_requests"].documentation  # type: ignore[attr-defined]
    assert "refused" in doc and doc != "Platform queries answered"



def test_the_reload_counter_never_goes_down_when_the_recent_list_is_full() -> None:
    """The page keeps the last `KEEP` reloads per process; the counter counted that list,
    so it stopped at 50. Counted as they happen, it only grows; a worker's report adds
    none (its parent logs one outcome per SIGHUP for the pool)."""
    own, worker = RecentLog(), RecentLog()
    for _ in range(KEEP + 10):
        own.add_reload(T0, "ok")
    for _ in range(KEEP + 5):
        own.add_reload(T0, "rejected", "bad")
    own.add_reload(T0, "partial", "applied by worker 0; worker 1: rejected: bad")
    worker.absorb({"reloads": [[T0.isoformat(), "rejected: bad"]]})
    assert len(own.reloads) == KEEP and not len(worker.reloads)
    assert own.reload_counts == {"ok": KEEP + 10, "rejected": KEEP + 5, "partial": 1}
    assert worker.reload_counts == {"ok": 0, "rejected": 0, "partial": 0}
