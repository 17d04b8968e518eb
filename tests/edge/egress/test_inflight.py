"""The in-flight set both senders share (edge/egress/inflight.py): a bounded number of
publishes, a wait for a slot that gives up so the caller can look at its link, and a
withdrawal that frees every slot."""

from __future__ import annotations

import asyncio

from edge.egress.inflight import BacklogPace, InFlight


async def test_slots_are_bounded_and_withdraw_frees_them() -> None:
    inflight = InFlight(2, poll=0.01)
    gate = asyncio.Event()
    ended: list[str] = []

    async def publish(name: str) -> None:
        try:
            await gate.wait()
        finally:
            ended.append(name)
            inflight.release()

    for name in ("a", "b"):
        assert await inflight.acquire()
        inflight.track(publish(name))
    assert len(inflight) == 2
    assert not await inflight.acquire()  # full: gives up after `poll` instead of hanging
    await inflight.withdraw()
    assert sorted(ended) == ["a", "b"] and len(inflight) == 0
    assert await inflight.acquire() and await inflight.acquire()  # both slots back


async def test_settle_waits_for_every_publish() -> None:
    inflight = InFlight(4)
    done: list[int] = []
    acked = asyncio.Event()

    async def publish(n: int) -> None:
        try:
            await acked.wait()  # in flight until its PUBACK
            done.append(n)
        finally:
            inflight.release()

    for n in range(3):
        assert await inflight.acquire()
        inflight.track(publish(n))
    # the PUBACKs arrive only once settle has handed the loop over, i.e. is waiting
    asyncio.get_running_loop().call_soon(acked.set)
    await inflight.settle()
    assert sorted(done) == [0, 1, 2] and len(inflight) == 0


async def test_backlog_pace_holds_the_rate() -> None:
    """Slots are `1 / rate` apart on the loop's clock; a row served late (a loaded machine)
    lets the next ones catch up, so what holds is the average: n rows take at least
    (n - 1) / rate seconds, and without the pace they would take next to none."""
    loop = asyncio.get_running_loop()
    pace = BacklogPace(rate=200.0)
    start = loop.time()
    for _ in range(6):
        await pace.wait()
    assert loop.time() - start >= 5 / 200
