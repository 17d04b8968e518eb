"""The restart back-off of `run --workers N` (README "Every core": 1 s, doubling to 30 s
while a worker keeps failing, reset once it ran 60 s), driven by run lengths, not a clock."""

from __future__ import annotations

from edge.daemon.workers import RestartBackoff


def test_doubles_while_failing_and_stops_at_the_cap() -> None:
    backoff = RestartBackoff()
    delays = [backoff.delay(ran=0.5) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_healthy_run_resets_it() -> None:
    backoff = RestartBackoff()
    for _ in range(6):
        backoff.delay(ran=3.0)
    assert backoff.delay(ran=59.9) == 30.0  # not healthy yet: still capped
    assert backoff.delay(ran=60.0) == 1.0  # ran 60 s: comes back at once
    assert backoff.delay(ran=1.0) == 2.0  # and doubles again if it fails right away


def test_first_failure_after_a_long_run_waits_the_first_delay() -> None:
    assert RestartBackoff().delay(ran=3600.0) == 1.0
    assert RestartBackoff(first=0.5, cap=3.0).delay(ran=0.0) == 0.5
