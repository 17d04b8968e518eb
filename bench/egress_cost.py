"""Issue 17, the per-envelope path alone: CPU per envelope from sealing to the deleted row.

The gateway's CPU per sample at 50 machines x 40 points / 1 s moves by 5-10 % from one run
to the next on the shared bench host, more than the changes measured here. So this runs
only the egress side in one process, as the gateway wires it: `Sealer` -> `OutboxWriter`
(SQLite on its writer thread) -> `DestinationSender` -> `MqttTransport` -> a real
Mosquitto, PUBACK -> delete. 50 "machines", polled out of phase once a second, each poll
one telemetry envelope of 40 records and, on 40 % of the polls, a `state` envelope (the
simulator's part counters). CPU is the process's (both threads) over the window.

* before: each delete handed to the writer thread on its own (`ack_linger=0`: queued in
  the next loop iteration), and every publish batch watched by the selector
  (`add_writer`/`remove_writer`), as before issue 17's per-envelope changes;
* after: deletes share the next append's commit (edge/egress/writer.py), publishes written
  at the end of the loop iteration (edge/transport/mqtt.py).

`python -m bench.egress_cost [seconds per run] [rounds]`; prints a Markdown table.

`python -m bench.egress_cost [seconds] [rounds] --revisions` compares code instead: the
"after" set-up above, run by the egress of the `before` revision (bench/hotpath.py's
`before_revision`, exported with `git archive`) and by this tree's, each in a process of
its own importing its tree, alternating.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.sealer import Sealer, Stored
from edge.egress.sender import DestinationSender
from edge.egress.writer import OutboxWriter
from edge.signing.jws import Signer
from edge.transport.mqtt import MqttTransport
from models.plant import Destination

from .hotpath import before_revision, export
from .processes import HOST, ROOT, ProcessGroup, start_mosquitto

MACHINES = 50
POINTS = 40
STATE_SHARE = 0.4


def _selector_per_batch(self: MqttTransport, client: Any, on: bool) -> None:
    """`MqttTransport._want_write` before issue 17: the selector watches every batch."""
    w = self._wiring
    if client is not self._client or w.fd < 0 or self._loop is None or on == w.writing:
        return
    if on:
        assert client is not None
        self._loop.add_writer(w.fd, client.loop_write)
    else:
        self._loop.remove_writer(w.fd)
    w.writing = on


def _records(i: int) -> list[dict[str, Any]]:
    ts = "2026-12-06T07:00:00.000Z"
    return [{"signal": f"pv_{j:03d}", "value": (i + j) % 1000 if j >= 15 else i * 0.25 + j,
             "unit": None if j >= 15 else "mm", "ts": ts, "quality": "good"}
            for j in range(POINTS)]


def _state(i: int) -> list[dict[str, Any]]:
    return [{"asset": "m", "availability": "available", "execution": "active",
             "controller_mode": "automatic", "program": "O1234", "part_count": i,
             "bad_part_count": 0, "emergency_stop": False, "alarms": [],
             "since": "2026-12-06T07:00:00.000Z", "ts": "2026-12-06T07:00:00.000Z"}]


async def _run(side: str, root: Path, port: int, seconds: float) -> dict[str, float]:
    log = structlog.get_logger()
    outbox = Outbox(root / FILENAME, caps={"a": OutboxCap(1 << 34)})
    writer = OutboxWriter(outbox, ack_linger=0.0 if side == "before" else 0.5)
    dest = Destination(id="a", url=f"mqtt://{HOST}:{port}")
    transport = MqttTransport(dest, f"egress-cost-{side}-{os.getpid()}", None)
    if side == "before":
        transport._want_write = _selector_per_batch.__get__(transport)  # type: ignore[method-assign]
    await transport.start()
    if not await transport.wait_connected(10):
        raise RuntimeError("no broker")
    sender = DestinationSender("a", transport, writer, log)
    sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), writer, [dest],
                    lambda _d: True)
    envelopes = 0

    def stored(result: Stored) -> None:
        nonlocal envelopes
        envelopes += 1
        sender.wake()

    stop = asyncio.Event()
    rng = random.Random(7)

    async def machine(m: int) -> None:
        i = 0
        await asyncio.sleep(m / MACHINES)  # out of phase, as the runners' polls are
        while not stop.is_set():
            topic = f"edge/bench/hall-1/line-1/m{m:03d}"
            sealer.seal(f"{topic}/telemetry", f"m{m:03d}", "telemetry", _records(i), stored)
            if rng.random() < STATE_SHARE:
                sealer.seal(f"{topic}/state", f"m{m:03d}", "state", _state(i), stored)
            i += 1
            await asyncio.sleep(1.0)

    run = asyncio.create_task(sender.run())
    tasks = [asyncio.create_task(machine(m)) for m in range(MACHINES)]
    await asyncio.sleep(2.0)  # settle: every machine has sealed once
    sent0, t0, c0 = sender.stats.sent, time.perf_counter(), os.times()
    await asyncio.sleep(seconds)
    c1, t1, sent1 = os.times(), time.perf_counter(), sender.stats.sent
    commits = writer.stats.commits
    stop.set()
    await asyncio.gather(*tasks)
    await sender.settle()
    run.cancel()
    await sender.close()
    await writer.close()
    await transport.stop()
    outbox.close()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    sent = sent1 - sent0
    return {"envelopes_per_s": sent / (t1 - t0), "cpu_us_per_envelope": 1e6 * cpu / sent,
            "cpu_pct_of_core": 100 * cpu / (t1 - t0), "commits_per_envelope": commits / envelopes}


_IN_TREE = ("import asyncio, json, sys; from pathlib import Path; "
            "from bench.egress_cost import _run; print(json.dumps(asyncio.run(_run("
            "'after', Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))))")


def _run_tree(tree: Path, root: Path, port: int, seconds: float) -> dict[str, float]:
    """`_run("after", ...)` with the egress of source tree `tree`, in a process of its own
    (found first from its directory and PYTHONPATH, as bench/gateway_load.py does)."""
    done = subprocess.run(
        [sys.executable, "-c", _IN_TREE, str(root), str(port), str(seconds)], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        timeout=seconds + 120, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    revisions = "--revisions" in argv
    argv = [a for a in argv if a != "--revisions"]
    seconds = float(argv[0]) if argv else 20.0
    rounds = int(argv[1]) if len(argv) > 1 else 4
    root = Path(tempfile.mkdtemp(prefix="egress-cost-"))
    group = ProcessGroup(root)
    rows: list[tuple[int, str, dict[str, float]]] = []
    try:
        _, port = start_mosquitto(group)
        trees = {"before": export(before_revision(), root), "after": ROOT} if revisions else {}
        for r in range(rounds):
            for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                d = root / f"{side}-{r}"
                d.mkdir()
                rows.append((r + 1, side, _run_tree(trees[side], d, port, seconds)
                             if revisions else asyncio.run(_run(side, d, port, seconds))))
                print(f"  r{r + 1} {side}: {rows[-1][2]}", file=sys.stderr, flush=True)
    finally:
        group.close()
    if revisions:
        print(f"before: {before_revision()}, after: this tree (both the 'after' set-up)")
    print("| run | envelopes/s | CPU us / envelope | CPU % core | commits / envelope |")
    print("|---|---|---|---|---|")
    for r, side, x in rows:
        print(f"| {side} (r{r}) | {x['envelopes_per_s']:.1f} | {x['cpu_us_per_envelope']:.0f} "
              f"| {x['cpu_pct_of_core']:.1f} | {x['commits_per_envelope']:.2f} |")
    ratio = statistics.median(
        a["cpu_us_per_envelope"] / b["cpu_us_per_envelope"]
        for (ra, sa, a) in rows for (rb, sb, b) in rows
        if ra == rb and sa == "after" and sb == "before")
    print(f"\nCPU per envelope after / before: {ratio:.2f}x (median over rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
