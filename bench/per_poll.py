"""Issue 17, the per-poll path alone, in one process: CPU per poll without sockets.

The gateway's CPU per 1,000 samples on the shared bench host moves by 5-10 % from run to
run with the other engineers' load (bench/hotpath.py), more than one cut on the per-poll
path changes. So this drives the code a poll runs through in the gateway, in one process,
with no network and no sleeping: `ModbusAdapter.read_once` (replies canned from the bench
plant's 40 points, 2 requests, the process values changing every poll and a part counter
every 25th, so ~4 % of polls seal a `state` envelope too), `AssetTwin.apply`,
`telemetry_records`, `Sealer.seal` (RFC 8785, Ed25519) into an `OutboxWriter` (SQLite on
its writer thread, as in the gateway), and after each round of 50 machines what a sender
does with the rows (`peek`, `claim`, `ack`). CPU is the process's, both threads
(`time.process_time`), per poll of 40 points; what the network and the event loop's
wake-ups cost is not in it (bench/hotpath.py has those).

`python -m bench.per_poll [rounds of 50 polls per run] [runs]`: the before revision
(bench/hotpath.py's `before_revision`, exported with `git archive`) and this tree, each
in a process of its own importing its tree, alternating; prints a Markdown table.
`python -m bench.per_poll [transactions] [runs] --outbox`: the outbox's share alone
(`_appends`), CPU per append.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# absolute: the measured process loads this file beside another tree's `bench` (`_IN_TREE`)
from bench.hotpath import before_revision, export
from bench.processes import ROOT

MACHINES = 50
PART_EVERY = 25  # polls between part count changes: a state envelope on ~4 % of polls


async def _polls(rounds: int, root: Path) -> dict[str, float]:
    """The measured loop, in a process whose sys.path starts with the tree under test
    (`_run_tree`), so every import below is that tree's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    from adapters.base import AdapterContext  # noqa: PLC0415
    from adapters.modbus.adapter import ModbusAdapter  # noqa: PLC0415
    from adapters.modbus.codec import encode  # noqa: PLC0415
    from bench.gateway_load import LoadSpec, _settings  # noqa: PLC0415
    from edge.devices.twin import AssetTwin  # noqa: PLC0415
    from edge.egress.outbox import FILENAME, Outbox, OutboxCap  # noqa: PLC0415
    from edge.egress.sealer import Sealer  # noqa: PLC0415
    from edge.egress.writer import OutboxWriter  # noqa: PLC0415
    from edge.signing.jws import Signer  # noqa: PLC0415
    from models.envelope import telemetry_records  # noqa: PLC0415
    from models.plant import Destination  # noqa: PLC0415
    from models.sample import format_ts, utc_now  # noqa: PLC0415

    settings = _settings(LoadSpec(1))
    outbox = Outbox(root / FILENAME, caps={"a": OutboxCap(1 << 34)})
    writer = OutboxWriter(outbox)
    sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), writer,
                    [Destination(id="a", url="mqtt://127.0.0.1:1")], lambda _d: True)
    def values(point: Any, m: int, poll: int) -> Any:
        if point.name == "part_count":
            return poll // PART_EVERY + m
        if point.name in ("execution", "availability"):
            return 1
        if point.name == "program":
            return "O1234"
        if point.data_type == "float32":
            return 100.25 + (poll + m) % 50
        return 0 if point.address < 200 else (poll + m + point.address) % 1000

    def reply(m: int, poll: int, req: Any) -> tuple[list[int], str]:
        registers = [0] * req.count
        for slot in req.slots:
            words = encode(values(slot.point, m, poll), slot.point)
            registers[slot.offset:slot.offset + len(words)] = words
        return registers, ""

    class Connected:
        connected = True

    machines = []
    for m in range(MACHINES):
        adapter = ModbusAdapter(AdapterContext(asset=f"m{m:03d}"), settings)
        adapter._client = Connected()  # type: ignore[assignment]
        # one reply per request and poll, made before the clock starts
        canned: dict[int, tuple[list[int], str]] = {}

        async def replies(client: Any, req: Any, _c: dict[Any, Any] = canned) -> Any:
            return _c[id(req)]

        adapter._execute = replies  # type: ignore[method-assign]
        machines.append((m, adapter, AssetTwin(adapter.context.asset), canned))
    topic = "edge/bench/hall-1/line-1/{}/{}"
    stored = 0

    def on_stored(_result: Any) -> None:
        nonlocal stored
        stored += 1

    after: int | None = None
    cpu = 0.0
    for poll in range(rounds):
        for m, adapter, _, canned in machines:  # the device's reply, outside the clock
            canned.clear()
            for step in adapter._steps:
                canned[id(step.request)] = reply(m, poll, step.request)
        t0 = time.process_time()
        for _, adapter, twin, _ in machines:
            asset = adapter.context.asset
            samples = await adapter.read_once()
            state, _rejected = twin.apply(samples)
            sealer.seal(topic.format(asset, "telemetry"), asset, "telemetry",
                        telemetry_records(samples), on_stored)
            if state is not None:
                record = state.as_record()
                record["ts"] = format_ts(state.since or utc_now())
                sealer.seal(topic.format(asset, "state"), asset, "state", [record], on_stored)
        await writer.drain()
        rows = writer.peek("a", after, 1000)
        for row in rows:
            writer.claim("a", row.id)
        if rows:
            after = rows[-1].id
            writer.ack("a", [r.id for r in rows])
        cpu += time.process_time() - t0
    t0 = time.process_time()
    await writer.close()  # the last acks' commit
    cpu += time.process_time() - t0
    outbox.close()
    polls = rounds * MACHINES
    return {"polls": polls, "envelopes": stored, "cpu_us_per_poll": 1e6 * cpu / polls,
            "cpu_us_per_envelope": 1e6 * cpu / stored}


def _appends(batches: int, root: Path) -> dict[str, float]:
    """The outbox's share alone: `Outbox.apply` of what the writer thread commits at
    saturation, 20 appends (one per machine, 1.4 KiB, 20 chains) and the ack of the
    previous 20 rows per transaction; CPU per append, in the calling thread."""
    import hashlib  # noqa: PLC0415

    from edge.egress.outbox import FILENAME, AckOp, AppendOp, Outbox, OutboxCap  # noqa: PLC0415
    from edge.signing.jws import b64url_encode  # noqa: PLC0415

    outbox = Outbox(root / FILENAME, caps={"a": OutboxCap(1 << 34)})
    payload = b"x" * 1400
    links = [b64url_encode(hashlib.sha256(str(i).encode()).digest()) for i in range(64)]
    seq = dict.fromkeys(range(20), 0)
    last: tuple[int, ...] = ()
    cpu = 0.0
    for b in range(batches):
        ops: list[AppendOp | AckOp] = []
        for m in range(20):
            seq[m] += 1
            ops.append(AppendOp(f"edge/bench/hall-1/line-1/m{m:03d}/telemetry", seq[m],
                                links[(b + m) % 64], payload, False, ("a",)))
        if last:
            ops.append(AckOp("a", last))
        t0 = time.process_time()
        outbox.apply(ops)
        cpu += time.process_time() - t0
        last = tuple(r.id for r in outbox.peek("a", None, 100))
    outbox.close()
    return {"appends": 20 * batches, "cpu_us_per_append": 1e6 * cpu / (20 * batches)}


_IN_TREE = ("import asyncio, importlib.util, json, sys; from pathlib import Path; "
            "spec = importlib.util.spec_from_file_location('per_poll', sys.argv[3]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "run = m._appends if sys.argv[4] == 'outbox' else "
            "lambda n, root: asyncio.run(m._polls(n, root)); "
            "print(json.dumps(run(int(sys.argv[1]), Path(sys.argv[2]))))")


def _run_tree(tree: Path, rounds: int, root: Path, what: str) -> dict[str, float]:
    """`_polls` of this file with the code of source tree `tree` (found first from its
    directory and PYTHONPATH, as bench/gateway_load.py runs another tree's gateway)."""
    done = subprocess.run(
        [sys.executable, "-c", _IN_TREE, str(rounds), str(root), __file__, what], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        timeout=600, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _load() -> float:
    return os.getloadavg()[0]


def main(argv: Sequence[str]) -> int:
    what = "outbox" if "--outbox" in argv else "polls"
    argv = [a for a in argv if a != "--outbox"]
    rounds = int(argv[0]) if argv else 200
    runs = int(argv[1]) if len(argv) > 1 else 6
    work = Path(tempfile.mkdtemp(prefix="per-poll-"))
    rev = before_revision()
    trees = {"before": export(rev, work), "after": ROOT}
    rows: list[tuple[int, str, dict[str, float], float]] = []
    for r in range(runs):
        for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
            d = work / f"{side}-{r}"
            d.mkdir()
            result = _run_tree(trees[side], rounds, d, what)
            rows.append((r + 1, side, result, _load()))
            print(f"  r{r + 1} {side}: {result}", file=sys.stderr, flush=True)
    key = "cpu_us_per_append" if what == "outbox" else "cpu_us_per_poll"
    if what == "outbox":
        print(f"before: `{rev[:10]}`, after: this tree; {rounds} transactions of 20 appends "
              "and an ack per run")
        print("| run | appends | CPU us / append | load avg (1 min) |")
        print("|---|---|---|---|")
        for r, side, x, load in rows:
            print(f"| {side} (r{r}) | {x['appends']:,.0f} | {x[key]:.1f} | {load:.1f} |")
    else:
        print(f"before: `{rev[:10]}`, after: this tree; {rounds} rounds of {MACHINES} polls "
              "per run")
        print("| run | polls | envelopes | CPU us / poll | CPU us / envelope | "
              "load avg (1 min) |")
        print("|---|---|---|---|---|---|")
        for r, side, x, load in rows:
            print(f"| {side} (r{r}) | {x['polls']:,.0f} | {x['envelopes']:,.0f} | "
                  f"{x[key]:.0f} | {x['cpu_us_per_envelope']:.0f} | {load:.1f} |")
    med = {s: statistics.median(x[key] for _, side, x, _ in rows if side == s)
           for s in ("before", "after")}
    pairs = [a[key] / b[key] for (ra, sa, a, _) in rows for (rb, sb, b, _) in rows
             if ra == rb and sa == "after" and sb == "before"]
    unit = "append" if what == "outbox" else "poll"
    print(f"\nCPU per {unit}, median: before {med['before']:.1f} us, after "
          f"{med['after']:.1f} us; after / before {statistics.median(pairs):.2f}x (median of "
          "the runs' ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
