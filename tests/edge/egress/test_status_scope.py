"""The gateway-wide status narrowed to what one destination may see (edge/egress/status_scope.py):
the machines its `machines` filter allows, its own entry, alarm and counters only; and the
retained status, its birth and its will built that way for each destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog
from e2e import plant_yaml

from edge.config.loader import parse_plant
from edge.egress.stack import prepare_egress, status_payload
from edge.egress.status_scope import loss_alarm, seen_by

DESTINATIONS = """  - {id: a, url: "mqtt://127.0.0.1:1883"}
  - {id: b, url: "mqtt://127.0.0.1:1884", machines: {deny: [m2]}}
"""


def counters(broker: str) -> dict[str, Any]:
    return {"connected": True, "broker": broker, "failovers": 1, "pending": 3,
            "pending_bytes": 300, "sent": 10, "replayed": 0, "dropped": 2, "rejected": 0,
            "lost_records": 5}


FULL: dict[str, Any] = {
    "state": "online", "gateway": "gw-1", "site": "plant-a", "ts": "2026-12-06T10:00:00.000Z",
    "version": "1.2.3",
    "machines": ["m1", "m2"],
    "destinations": {"a": counters("10.0.0.5:1883"), "b": counters("198.51.100.7:8883")},
    "alarms": [loss_alarm("a"), loss_alarm("b"), "some_gateway_alarm"],
    "devices": {"m1": "up", "m2": "down"},
    "losses": {"lost_records": 7, "by_machine": {"m1": 3, "m2": 4}, "unreported_gaps": 3,
               "unreported_by_machine": {"m1": 1, "m2": 2}},
    "unsignable": {"replaced": 9, "dropped": 2,
                   "by_machine": {"m1": {"replaced": 1, "dropped": 0},
                                  "m2": {"replaced": 6, "dropped": 2}}},
    "device_reasons": {"m2": "10.0.0.9:502: connection refused"},
    "device_faults": {"m2": {"status": "down", "reason": "10.0.0.9:502: connection refused"}},
    "workers": [{"index": 0, "pid": 11, "alive": True, "restarts": 0, "machines": ["m1"]},
                {"index": 1, "pid": 12, "alive": True, "restarts": 2, "machines": ["m2"]}],
    "queries": {"answered": 4},
}


def not_m2(machine: str) -> bool:
    return machine != "m2"


def test_a_destination_sees_its_machines_and_its_own_entry_only() -> None:
    seen = seen_by(FULL, "b", not_m2)
    assert seen == {
        "state": "online", "gateway": "gw-1", "site": "plant-a",
        "ts": "2026-12-06T10:00:00.000Z", "version": "1.2.3",
        "machines": ["m1"],
        "destinations": {"b": counters("198.51.100.7:8883")},
        "alarms": [loss_alarm("b"), "some_gateway_alarm"],
        "devices": {"m1": "up"},
        "losses": {"lost_records": 3, "by_machine": {"m1": 3}, "unreported_gaps": 1,
                   "unreported_by_machine": {"m1": 1}},
        "unsignable": {"replaced": 1, "dropped": 0,
                       "by_machine": {"m1": {"replaced": 1, "dropped": 0}}},
        "device_reasons": {}, "device_faults": {},
        "workers": [{"index": 0, "pid": 11, "alive": True, "restarts": 0, "machines": ["m1"]},
                    {"index": 1, "pid": 12, "alive": True, "restarts": 2, "machines": []}],
        "queries": {"answered": 4},
    }
    text = json.dumps(seen)
    assert "m2" not in text and "10.0.0.5" not in text and '"a"' not in text
    assert FULL["machines"] == ["m1", "m2"], "the gateway-wide status is left untouched"


def test_a_destination_seeing_everything_still_sees_no_other_destination() -> None:
    seen = seen_by(FULL, "a", lambda _m: True)
    assert set(seen["destinations"]) == {"a"}
    assert seen["alarms"] == [loss_alarm("a"), "some_gateway_alarm"]
    for key in ("machines", "devices", "device_reasons", "device_faults", "workers"):
        assert seen[key] == FULL[key], key
    assert seen["losses"] == FULL["losses"]
    assert seen["unsignable"]["by_machine"] == FULL["unsignable"]["by_machine"]


def test_no_destination_sees_no_destination_entry() -> None:
    """A message that came through no configured destination (`health` over a test's
    handler) names none."""
    seen = seen_by(FULL, None, lambda _m: True)
    assert seen["destinations"] == {} and seen["alarms"] == ["some_gateway_alarm"]


def test_birth_will_and_detailed_status_are_built_per_destination(tmp_path: Path) -> None:
    loaded = parse_plant(plant_yaml(tmp_path / "state", [1502, 1503], 0,
                                    destinations=DESTINATIONS), "plant.yaml")
    detail = {"destinations": {"a": counters("10.0.0.5:1883"), "b": counters("10.0.0.6:1883")},
              "alarms": [loss_alarm("a")], "devices": {"m1": "up", "m2": "down"}}
    a, b = loaded.plant.destinations
    at_a = json.loads(status_payload(loaded, "online", detail, a))
    at_b = json.loads(status_payload(loaded, "online", detail, b))
    assert at_a["machines"] == ["m1", "m2"] and set(at_a["destinations"]) == {"a"}
    assert at_b["machines"] == ["m1"] and set(at_b["destinations"]) == {"b"}
    assert at_b["alarms"] == [] and at_b["devices"] == {"m1": "up"}
    assert json.loads(status_payload(loaded, "online", detail))["machines"] == ["m1", "m2"]

    plan = prepare_egress(loaded, list(loaded.plant.destinations), structlog.get_logger())
    for dest, machines in (("a", ["m1", "m2"]), ("b", ["m1"])):
        transport = plan.transports[dest]
        for state, registered in (("offline", transport._will), ("online", transport._birth)):
            assert isinstance(registered, tuple)
            topic, payload, retain = registered
            body = json.loads(payload)
            assert topic.endswith("/status") and retain
            assert (body["state"], body["machines"]) == (state, machines), (dest, state)
