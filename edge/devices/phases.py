"""Which phase of its poll interval each machine reads in (`gateway.poll_slots`).

Why: at 1 s polls the gateway's CPU goes mostly to waking up (timers, socket syscalls, the
writer thread's hand-offs, PUBACK reads), once per device when each has its own random phase;
devices on one phase share each wake-up. 50 Modbus machines of 40 points cost 0.054 s of CPU
per 1,000 samples spread, 0.036 on 10 slots, 0.028 on 4 and 0.022 all together, while the
99th percentile latency grows from 16 ms to 28, 36-99 and 49-74 ms (bench/report-issue17.md,
section 2q). `auto` keeps at most about 25 machines in a slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from models.plant import Machine

MACHINES_PER_SLOT = 25
"""`auto`: one phase slot per this many machines served by the process."""

PollSlots = int | Literal["auto", "spread"]


def slot_count(setting: PollSlots, machines: int) -> int | None:
    """How many phase slots `machines` polled by one process share; None: `spread`."""
    if setting == "spread":
        return None
    if setting == "auto":
        return max(1, math.ceil(machines / MACHINES_PER_SLOT))
    return setting


def poll_phases(machines: Sequence[Machine], setting: PollSlots) -> dict[str, float | None]:
    """Each machine's `AdapterContext.poll_phase`: slots dealt round-robin in YAML order
    (even and the same at every start), slot `k` of `n` at `k / n` of the machine's own
    interval. `machines` are the ones this process serves (a worker counts its own)."""
    slots = slot_count(setting, len(machines))
    return {
        m.id: None if slots is None else (n % slots) * m.poll_interval / slots
        for n, m in enumerate(machines)
    }
