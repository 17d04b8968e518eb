"""`python -m bench.writes_gateway ...`: the gateway CLI with an event-loop lag probe, and with
its SQLite writes either on their writer threads (as shipped) or inline on the event loop,
as before issue 17 item 2.

Why: the writer section (bench/writer_stall.py) compares before and after in one run, on
the same simulator, broker and machine load; a switch for this in the production code
would be a knob nobody should turn, so the bench swaps the classes here instead.

Environment:
- `EDGE_BENCH_WRITES=inline`: outbox appends/acks, OEE saves/prunes, the query nonce,
  bookings and part stores' writes and the periodic WAL truncation run on the event loop
  (the code before); anything else: as shipped (all of them on the gateway's one writer
  thread).
- `EDGE_BENCH_LAG_FILE=<path>`: a task asks to wake every `TICK` s and appends
  "<unix time> <lateness s>" lines to the file once a second; that lateness is how long a
  poll due at that moment would have waited for the loop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge.daemon import gateway
from edge.egress import stack
from edge.egress.outbox import Outbox
from edge.kpi.store import OeeOp, OeeStore, OeeStoreResult
from edge.storage.wal import CHECKPOINT_EVERY, WalStore
from edge.storage.writer import WriterThread

TICK = 0.005


class InlineOutbox:
    """`OutboxWriter`'s surface over an `Outbox` called on the loop (the code before)."""

    def __init__(self, outbox: Outbox, _thread: WriterThread | None = None) -> None:
        self.outbox = outbox
        self.last_id_at_open = outbox.last_id_at_open
        self.load_chain, self.submit, self.peek = outbox.load_chain, outbox.submit, outbox.peek
        self.claim, self.release, self.ack = outbox.claim, outbox.release, outbox.ack
        self.pending, self.counters = outbox.pending, outbox.counters

    async def drain(self) -> None:
        return

    async def close(self) -> None:
        return


class InlineOee:
    """`StoreWriter`'s surface over an `OeeStore` applied on the loop (the code before)."""

    def __init__(self, store: OeeStore, _thread: WriterThread) -> None:
        self.store = store

    def submit(self, op: OeeOp, done: Callable[[OeeStoreResult | Exception], None]) -> None:
        self.store.submit(op, done)

    async def close(self) -> None:
        return


async def inline_checkpoints(stores: Callable[[], Iterable[WalStore]],
                             every: float = CHECKPOINT_EVERY) -> None:
    """`checkpoint_loop` as before: the truncation on the event loop."""
    while True:
        await asyncio.sleep(every)
        for store in stores():
            store.truncate_wal()


async def probe(path: Path) -> None:
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    flushed = loop.time()
    while True:
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        now = loop.time()
        lines.append(f"{time.time():.4f} {max(0.0, now - due):.6f}\n")
        if now - flushed >= 1.0:
            with path.open("a") as fh:
                fh.writelines(lines)
            lines.clear()
            flushed = now


def without_thread(store: Callable[..., WalStore]) -> Callable[..., WalStore]:
    """A store class whose writes run inline: built without the gateway's writer thread."""

    def build(*args: Any, writes: WriterThread | None = None, **kw: Any) -> WalStore:
        return store(*args, **kw)

    return build


def install() -> None:
    if os.environ.get("EDGE_BENCH_WRITES") == "inline":
        # the names as the gateway's modules look them up when they run
        vars(stack)["OutboxWriter"] = InlineOutbox
        vars(gateway)["StoreWriter"] = InlineOee
        vars(gateway)["checkpoint_loop"] = inline_checkpoints
        for name in ("NonceStore", "BookingStore", "PartStore"):
            vars(gateway)[name] = without_thread(vars(gateway)[name])
    lag_file = os.environ.get("EDGE_BENCH_LAG_FILE")
    if lag_file:
        run = gateway.Gateway.run

        async def run_with_probe(self: gateway.Gateway) -> int:
            task = asyncio.create_task(probe(Path(lag_file)), name="bench-lag-probe")
            try:
                return await run(self)
            finally:
                task.cancel()

        gateway.Gateway.run = run_with_probe  # type: ignore[method-assign]


install()

from edge.cli import main  # noqa: E402 - after the swap, on purpose

if __name__ == "__main__":
    sys.exit(main())
