"""The egress slot: what the other stages hold, so an egress restart swaps the stack
behind it without touching them; records offered during the swap reach the new stack."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from edge.egress.stack import EgressSlot, EgressStack


class RecordingEgress:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str | None, str, list[dict[str, Any]]]] = []
        self.added: list[tuple[str, str, list[dict[str, Any]], bool]] = []

    def emit(
        self, topic: str, asset: str | None, stream: str, records: list[dict[str, Any]]
    ) -> None:
        self.emitted.append((topic, asset, stream, records))

    def add(
        self, topic: str, asset: str, records: list[dict[str, Any]], *, complete: bool = False
    ) -> None:
        self.added.append((topic, asset, records, complete))


class FakeStack:
    def __init__(self) -> None:
        self.egress = RecordingEgress()
        self.sealer = SimpleNamespace(observers={})


def stack() -> tuple[EgressStack, RecordingEgress]:
    fake = FakeStack()
    return cast(EgressStack, fake), fake.egress


def test_records_offered_during_a_swap_go_to_the_new_stack_in_order() -> None:
    slot = EgressSlot()
    old, old_egress = stack()
    slot.attach(old)
    slot.emit("t/state", "m1", "state", [{"n": 1}])
    assert slot.detach() is old
    slot.add("t/telemetry", "m1", [{"n": 2}], complete=True)
    slot.emit("t/state", "m1", "state", [{"n": 3}])
    new, new_egress = stack()
    assert slot.attach(new) == 2
    slot.emit("t/oee", "m1", "oee", [{"n": 4}])
    assert old_egress.emitted == [("t/state", "m1", "state", [{"n": 1}])]
    assert new_egress.added == [("t/telemetry", "m1", [{"n": 2}], True)]
    assert [e[3] for e in new_egress.emitted] == [[{"n": 3}], [{"n": 4}]]
    assert slot.dropped == 0


def test_holding_is_bounded_and_drops_are_counted() -> None:
    slot = EgressSlot(hold_limit=2)
    slot.emit("t", "m1", "state", [{}])  # before the first stack: nothing to hold for
    slot.detach()
    for _ in range(3):
        slot.emit("t", "m1", "state", [{}])
    new, egress = stack()
    slot.attach(new)
    assert len(egress.emitted) == 2 and slot.dropped == 2


def test_sealed_observers_follow_the_slot_to_every_later_stack() -> None:
    slot = EgressSlot()
    seen: list[object] = []
    slot.observe_sealed("part", lambda asset, records, envelope: seen.append(envelope))
    first, _ = stack()
    slot.attach(first)
    slot.detach()
    second, _ = stack()
    slot.attach(second)
    for s in (first, second):
        (observer,) = s.sealer.observers["part"]
        observer("m1", [], {"e": 1})
    assert seen == [{"e": 1}, {"e": 1}]
