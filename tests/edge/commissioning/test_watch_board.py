"""`watch`'s table shows, beside the shift's OEE, how much of its planned time the gateway
observed, computed from the verified `oee` record (no field of its own on the wire)."""

from __future__ import annotations

from typing import Any

from edge.commissioning.watch import StreamBoard


def oee_body(time: Any, losses: Any) -> dict[str, Any]:
    return {"asset": "m1", "stream": "oee", "created": "t", "records": [{
        "window": {"kind": "shift", "closed": False},
        "availability": 0.2, "effectiveness": 0.95, "quality": 1.0, "oee": 0.19,
        "time": time, "losses": losses,
    }]}


def test_observed_share_of_the_shift_in_the_overview() -> None:
    board = StreamBoard()
    # 8 h planned, the gateway started after 6 h and was down 24 min since: 96 min observed
    board.add("t", oee_body({"pbt": 28800.0, "apt": 5760.0,
                             "downtime": {"no_data": 21600.0, "unavailable": 1440.0}},
                            {"gap": 1440.0}))
    head, row = board.overview()[1], board.overview()[3]
    assert head.split()[9] == "observed"
    assert row.split()[9] == "20%"
    board.add("t", oee_body({"pbt": "?"}, None))  # another producer's body: no figure
    assert board.overview()[3].split()[9] == "-"


def test_a_machine_no_envelope_came_from_is_named_as_unseen() -> None:
    """`watch --machine nosuch` said "nothing verified yet" while other machines' envelopes
    verified, and exited 0: a mistyped id read as a gateway that had not spoken yet."""
    board = StreamBoard("nosuch")
    assert board.signals("nosuch") == ["nosuch: nothing verified yet"]  # nothing at all yet
    board.add("t", {"asset": "m1", "stream": "state", "records": [{"execution": "active"}]})
    board.add("t", {"asset": "m2", "stream": "state", "records": []})
    said = "nosuch: no such machine seen on the gateway's topics (seen: m1, m2)"
    assert board.signals("nosuch") == [said]
    assert board.unseen("nosuch") == said and board.unseen("m1") is None
    assert board.machines == {}  # the others are still not shown
