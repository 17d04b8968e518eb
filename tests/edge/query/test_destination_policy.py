"""Queries answered at a destination obey its egress policy on top of the platform's own
limits (edge/query/policy.py): a machine it hides is answered as an unknown one, a method
whose stream it does not take is `forbidden`, and answers lose the signals it denies."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_handler import Rig, Views, code

from edge.query.policy import METHOD_STREAMS, DestinationPolicy
from models.booking import ALONE, MachineSeen, OtherStores, every_machine
from models.plant import QUERY_METHODS, Platform

DESTINATIONS = """  - {id: local, url: "mqtt://127.0.0.1:1883"}
  - {id: narrow, url: "mqtt://127.0.0.1:1884", streams: [state, capacity, part, bookings],
     machines: {deny: [m2]}, signals: {deny: [program*]}}
"""


class StateViews(Views):
    """Views whose state records carry a program, as the twin's do, and that note which
    machines a bookings method was told the destination shows."""

    def __init__(self) -> None:
        self.shown: list[list[str]] = []

    async def query_booking(self, method: str, platform: Platform, params: Mapping[str, Any],
                            others: OtherStores = ALONE,
                            seen: MachineSeen = every_machine) -> dict[str, Any]:
        self.shown.append([m for m in self.machines if seen(m)])
        return {"bookings": []}

    def query_state(self, asset: str | None) -> dict[str, Any]:
        machines = self._all(asset)["machines"]
        return {"machines": {m: {"availability": "available", "program": "O1000",
                                 "execution": "active", "link": "up"} for m in machines}}

    def query_describe(self) -> dict[str, Any]:
        topics = {s: f"edge/{s}" for s in ("telemetry", "state", "oee", "capacity")}
        return {"gateway": "gw-1", "streams": ["telemetry", "state", "oee", "capacity"],
                "machines": {m: {"topics": topics} for m in self.machines}}

    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        self._all(asset)
        return {"asset": asset}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, views=StateViews(), destinations=DESTINATIONS,
               b_methods=", methods: [describe, aas, state, oee, capacity, health, parts,"
               " energy, bookings]")


def test_a_hidden_machine_is_answered_as_an_unknown_one(rig: Rig) -> None:
    for method in ("state", "capacity"):
        hidden = rig.ask(rig.request(rig.b, method, {"asset": "m2"}), destination="narrow")
        rig.clocks.advance(1)
        unknown = rig.ask(rig.request(rig.b, method, {"asset": "m9"}), destination="narrow")
        rig.clocks.advance(1)
        assert code(hidden) == "not_found" and hidden["error"]["message"] == unknown["error"][
            "message"].replace("m9", "m2"), method
        assert rig.ask(rig.request(rig.b, method, {"asset": "m2"}), destination="local")["ok"]
        rig.clocks.advance(1)
    # the platform's own limit is checked first: m2 is not shared with platform-a
    assert code(rig.ask(rig.request(rig.a, "state", {"asset": "m2"}),
                        destination="narrow")) == "forbidden"


def test_whole_plant_answers_leave_out_hidden_machines(rig: Rig) -> None:
    for method in ("describe", "state", "capacity"):
        narrow = rig.ask(rig.request(rig.b, method), destination="narrow")["result"]
        rig.clocks.advance(1)
        local = rig.ask(rig.request(rig.b, method), destination="local")["result"]
        rig.clocks.advance(1)
        assert set(narrow["machines"]) == {"m1"} and set(local["machines"]) == {"m1", "m2"}
    health = rig.ask(rig.request(rig.b, "health"), destination="narrow")["result"]
    assert health["devices"] == {"m1": "up"} and health["device_faults"] == {}
    assert health["losses"]["by_machine"] == {"m1": 3}


def test_a_method_whose_stream_the_destination_does_not_take_is_forbidden(rig: Rig) -> None:
    for method in ("oee", "energy", "aas"):
        record = rig.ask(rig.request(rig.b, method, {"asset": "m1"}), destination="narrow")
        rig.clocks.advance(1)
        assert code(record) == "forbidden", method
        assert "oee" in record["error"]["message"], "names the stream it does not take"
    # a hidden machine as well: the method's refusal, never a hint whether the machine exists
    assert rig.ask(rig.request(rig.b, "oee", {"asset": "m2"}), destination="narrow")[
        "error"] == rig.ask(rig.request(rig.b, "oee", {"asset": "m1"}, nonce="n2"),
                            destination="narrow")["error"]
    assert rig.ask(rig.request(rig.b, "oee", {"asset": "m1"}, nonce="n3"),
                   destination="local")["ok"]


def test_answers_lose_denied_signals_and_streams(rig: Rig) -> None:
    narrow = rig.ask(rig.request(rig.b, "state"), destination="narrow")["result"]
    assert narrow["machines"]["m1"] == {"availability": "available", "execution": "active",
                                        "link": "up"}
    rig.clocks.advance(1)
    local = rig.ask(rig.request(rig.b, "state"), destination="local")["result"]
    assert local["machines"]["m1"]["program"] == "O1000"
    rig.clocks.advance(1)
    described = rig.ask(rig.request(rig.b, "describe"), destination="narrow")["result"]
    assert described["streams"] == ["state", "capacity"]
    assert set(described["machines"]["m1"]["topics"]) == {"state", "capacity"}


def test_a_platform_is_narrowed_to_what_both_allow(rig: Rig) -> None:
    """What the method runs with: `reserve` by process never picks a hidden machine."""
    pa, pb = rig.plant.platforms
    narrow = DestinationPolicy.at(rig.plant, "narrow")
    assert narrow.visible(pb).machines == ["m1"] and narrow.visible(pa).machines == ["m1"]
    assert DestinationPolicy.at(rig.plant, "local").visible(pb) is pb
    assert DestinationPolicy.at(rig.plant, None).refusal("oee", {"asset": "m2"}) is None


def test_every_method_names_the_streams_it_reveals() -> None:
    assert set(METHOD_STREAMS) == set(QUERY_METHODS)


def test_bookings_are_answered_with_the_destinations_machines(rig: Rig) -> None:
    """The desk gets the destination's `sees` (tests/edge/bookings/test_desk_hidden_machines.py
    shows what it does with it); through no destination, every machine."""
    views = rig.handler.backend
    assert isinstance(views, StateViews)
    for destination, shown in (("narrow", ["m1"]), ("local", ["m1", "m2"]), (None, ["m1", "m2"])):
        record = rig.ask(rig.request(rig.b, "bookings"), destination=destination)
        rig.clocks.advance(1)
        assert record["ok"], record
        assert views.shown[-1] == shown, destination
    narrow = DestinationPolicy.at(rig.plant, "narrow")
    assert narrow.sees("m1") and not narrow.sees("m2") and narrow.sees("m9")
