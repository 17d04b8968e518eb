"""A full disk loses data visibly (issue 12, item 2).

Before: with ENOSPC every batch the outbox could not store was lost before sealing, so it
had no `seq`; the retained status showed no loss, the alarm cleared during the loss, and no
platform could learn of the hole. Now every lost record is counted per destination and per
machine in the retained status (and `health`), the alarm stays up while loss goes on, and a
signed `gap` envelope on the machine's `gap` topic tells the platform what was lost, once
storage recovers. A real tmpfs is filled to the last byte while the gateway publishes to a
real Mosquitto.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, fill_disk, plant_yaml, small_disk, verified_body, wait_for

from edge.platform_kit.verifier import verify_stream

GAP_TOPIC = "edge/plant-a/hall-1/line-1/m1/gap"


@pytest.mark.slow
def test_disk_full_losses_are_counted_alarmed_and_reported_signed(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")

    def statuses() -> list[dict[str, Any]]:
        found = [json.loads(m.payload) for m in col.snapshot() if m.topic.endswith("/status")]
        return [s for s in found if "losses" in s]

    with small_disk(tmp_path / "disk", 16) as disk:
        plant = tmp_path / "plant.yaml"
        plant.write_text(plant_yaml(disk / "state", [free_port()], mosquitto.port))
        gw = GatewayProcess(plant).start()
        try:
            wait_for(lambda: len(col.snapshot()) > 20, 30, "live data")
            filler = fill_disk(disk, 0)
            wait_for(lambda: bool(gw.events("egress_store_failed")), 20, "the disk-full loss")
            wait_for(
                lambda: any("outbox_full_losing_data:local" in s["alarms"] for s in statuses()),
                10,
                "the alarm in the retained status",
            )
            # the disk stays full until /metrics has shown the loss growing three times
            # over, with the alarm up all along (checked in the log below)
            url = gw.events("status_page_started")[0]["metrics"]
            seen: set[int] = set()

            def loss_goes_on() -> bool:
                seen.add(records_lost(url))
                return len(seen - {0}) >= 3

            wait_for(loss_goes_on, 30, "the loss growing in /metrics")
            filler.unlink()
            wait_for(lambda: any(m.topic == GAP_TOPIC for m in col.snapshot()), 20, "gap record")
            wait_for(lambda: not statuses()[-1]["alarms"], 10, "the alarm cleared")
            gw.signal(signal.SIGTERM)
            assert gw.wait() == 0
        finally:
            gw.kill()

    events = [e["event"] for e in gw.logs()]
    failed, recovered = events.index("egress_store_failed"), events.index("egress_store_recovered")
    assert "outbox_no_longer_losing_data" not in events[failed:recovered], "alarm cleared early"
    msgs = col.snapshot()
    jwks = json.loads(next(m for m in msgs if m.topic.endswith("/keys")).payload)
    gaps = [verified_body(m.payload, jwks, GAP_TOPIC) for m in msgs if m.topic == GAP_TOPIC]
    reported = sum(r["records"] for g in gaps for r in g["records"])
    final = statuses()[-1]
    lost = final["losses"]["by_machine"]["m1"]
    print(f"lost {lost} records, {reported} reported in signed gap records: {gaps[0]['records']}")
    assert lost > 0 and reported == lost == final["destinations"]["local"]["lost_records"]
    (record,) = gaps[0]["records"]
    assert record["from"] <= record["to"] and record["reason"] == "disk_full"
    assert gaps[0]["stream"] == "gap" and gaps[0]["asset"] == "m1"
    envelopes = [m for m in msgs if not m.topic.endswith(("/status", "/keys"))]
    lines = [json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)}) for m in envelopes]
    report = verify_stream(lines, jwks)
    assert report.counts.get("forgery", 0) == 0 and report.counts.get("broken_chain", 0) == 0


def records_lost(metrics_url: str) -> int:
    """`edge_gateway_records_lost_total` of the one destination, from the gateway's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith('edge_gateway_records_lost_total{destination="local"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no edge_gateway_records_lost_total in /metrics")
