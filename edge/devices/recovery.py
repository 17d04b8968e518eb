"""The wait between two connection attempts: a backoff that ends early when the device is back.

Why: with capped exponential backoff a server that was down for 10 s was read again 6.7 to
13.8 s after it came back, and across repeated restarts the delay grew until the gateway sat
100 s unconnected while the server was up (issue 12 item 16). The backoff stays (it spares
a device that refuses us), but while it runs the adapter's `reachable()` is asked once a
second:

- a device that was unreachable when the wait began and becomes reachable ends the wait at
  once (the server is back);
- a device that is reachable (it answered, and refused, or came back before the first
  probe) waits at most `ANSWERING_CAP` seconds, not the full backoff: it is retried often
  enough to recover quickly and seldom enough not to be hammered.

Adapters that cannot tell (`reachable()` returns None) wait the full backoff as before.
"""

from __future__ import annotations

import asyncio

from adapters.base import Adapter

__all__ = ["ANSWERING_CAP", "pause"]

PROBE_EVERY = 1.0  # seconds between two reachability checks during a wait
ANSWERING_CAP = 5.0  # longest wait for a device whose port accepts connections


async def pause(adapter: Adapter, delay: float, probe_every: float = PROBE_EVERY,
                answering_cap: float = ANSWERING_CAP) -> bool:
    """Sleep `delay` seconds or until the device comes back; True when it came back early."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    if delay <= probe_every:
        await asyncio.sleep(delay)
        return False
    reachable = await adapter.reachable()
    if reachable:
        end = min(end, loop.time() + answering_cap)
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(probe_every, left))
        if reachable is False and end - loop.time() > 0 and await adapter.reachable():
            return True
    return reachable is True and delay > answering_cap
