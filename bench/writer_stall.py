"""Issue 17 item 2: event-loop stalls and CPU with the SQLite writes inline on the loop
(before) and on their writer threads (after), in one run.

Two measurements, both alternating before/after rounds so that load from other work on a
shared machine falls on both modes alike (the bench host is shared: read the figures as
a pair, not against another run):

* the gateway (`bench/writes_gateway.py`: the real `edge-gateway run` with a loop-lag
  probe, and with the outbox, OEE-store and WAL-truncation writes swapped back inline for
  "before"), 50 Modbus machines x 40 points: every 1 s (the headline scenario: CPU s per
  1,000 samples, loop lag) and, in full mode, every 100 ms (20,000 samples/s offered, the
  p99 target's load, where WAL checkpoints come every few seconds);
* one process, no network (`python -m bench.writer_stall`): the gateway's Sealer and a
  real outbox fed like the poll loop feeds it, `machines` envelopes of 40 records every
  100 ms, each acknowledged at once, and the real KpiService and OEE store saving each
  machine's part count once a second (a part per machine per second) and every engine
  on a tick every 5 s, both WALs truncated every second, so checkpoints are the common
  case; a ticker wakes every 5 ms and its lateness is the stall. "After" is the
  gateway's wiring: one writer thread for both stores.

The host's other load (whatever ran outside the bench meanwhile, in % of one core) is
printed and kept beside each row: the figures of a contended row are not the code's.

Loop lag: how late a task that asked to wake in 5 ms woke, i.e. what a poll due at that
moment waited for the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.egress.outbox import FILENAME, Outbox, OutboxCap
from edge.egress.sealer import Sealer, Stored
from edge.egress.writer import LINGER, OutboxWriter
from edge.kpi.service import KpiService, OeeWrites
from edge.kpi.store import FILENAME as OEE_FILE
from edge.kpi.store import OeeStore
from edge.signing.jws import Signer
from edge.storage.writer import StoreWriter, WriterThread
from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import Destination, Plant
from models.sample import utc_now

from .gateway_load import LoadSpec, run_load
from .processes import ProcessGroup, start_simulators, system_busy_seconds
from .writes_gateway import TICK, InlineOutbox

POINTS = 40
MACHINES = 50
MODES = {"inline": "inline on the loop (before)",
         "gateway": "one writer thread, outbox + OEE (after)"}
TICK_EVERY = 5.0  # the KPI service's tick (edge/kpi/publisher.py): every engine saved


def lag_figures(lags: list[float]) -> dict[str, float]:
    """p50/p99/p99.9/max of loop lateness in ms, and how many ticks were late > 10 ms."""
    if len(lags) < 2:
        return {"p50": float("nan"), "p99": float("nan"), "p99.9": float("nan"),
                "max": float("nan"), "over_10ms": 0, "ticks": len(lags)}
    q = statistics.quantiles(lags, n=1000, method="inclusive")
    return {"p50": q[499] * 1e3, "p99": q[989] * 1e3, "p99.9": q[998] * 1e3,
            "max": max(lags) * 1e3, "over_10ms": sum(1 for x in lags if x > 0.010),
            "ticks": len(lags)}


# --- the gateway, before/after ----------------------------------------------------------

GATEWAY_KEYS = ("samples_per_s", "achieved_over_offered", "gateway_cpu_s", "samples",
                "gateway_cpu_pct_of_core", "latency_ms_p50", "latency_ms_p99",
                "gateway_rss_mb_steady", "seq_gaps", "duplicates")


def gateway_rounds(group: ProcessGroup, broker_port: int, sims: Any, *, interval: float,
                   rounds: int, window: float) -> list[dict[str, Any]]:
    """`rounds` x (before, after) gateway runs at `interval`, pooled per mode."""
    raw: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode, label in MODES.items():
            spec = LoadSpec(MACHINES, interval=interval, window=window, writes=mode,
                            loop_lag=True, round=r + 1)
            print(f"  writer: {interval:g} s poll, {label}, round {r + 1}/{rounds} ...",
                  flush=True)
            res = run_load(group, broker_port, spec, simulators=sims)[0]
            raw[mode].append(res)
            lag = lag_figures(res["loop_lag_s"])
            print(f"    CPU {res['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, loop lag "
                  f"p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms; the host's other load "
                  f"{res['other_load_pct_of_core']:.0f} % of a core", flush=True)
    out = []
    for mode, runs in raw.items():
        samples = sum(r["samples"] for r in runs)
        cpu = sum(r["gateway_cpu_s"] for r in runs)
        out.append({
            "mode": MODES[mode], "poll_interval_s": interval, "rounds": len(runs),
            "offered_per_s": MACHINES * POINTS / interval,
            "samples_per_s": statistics.fmean(r["samples_per_s"] for r in runs),
            "cpu_per_1000": 1000 * cpu / samples if samples else float("nan"),
            "cpu_per_1000_by_round": [r["gateway_cpu_s_per_1000_samples"] for r in runs],
            "cpu_pct_of_core": statistics.fmean(r["gateway_cpu_pct_of_core"] for r in runs),
            "latency_ms_p99": statistics.fmean(r["latency_ms_p99"] for r in runs),
            "latency_ms_p99_by_round": [r["latency_ms_p99"] for r in runs],
            "lag_ms_p99_by_round": [lag_figures(r["loop_lag_s"])["p99"] for r in runs],
            "lag_ms": lag_figures([x for r in runs for x in r["loop_lag_s"]]),
            "other_load_pct_by_round": [r["other_load_pct_of_core"] for r in runs],
            "seq_gaps": sum(r["seq_gaps"] for r in runs),
            "duplicates": sum(r["duplicates"] for r in runs),
        })
    return out


# --- one process, the outbox and the OEE store -----------------------------------------

@dataclass
class _Raw:
    lags: list[float]
    stored: int
    cpu: float
    other: float  # CPU seconds the rest of the host used meanwhile
    elapsed: float
    commits: int
    saves: int


def _records(i: int) -> list[dict[str, object]]:
    ts = "2026-12-06T07:00:00.000Z"
    return [{"signal": f"p{j}", "value": i * 0.5 + j, "unit": "mm", "ts": ts, "quality": "good"}
            for j in range(POINTS)]


def _plant(machines: int) -> Plant:
    return Plant.model_validate({
        "gateway": {"id": "gw", "site": "s1"},
        "machines": [{"id": f"m{m}", "area": "a", "line": "l", "adapter": "modbus",
                      "ideal_cycle_time": 1.0, "connection": {}} for m in range(machines)],
        "shifts": {"timezone": "UTC", "shifts": [
            {"name": "day", "start": "00:00", "end": "23:59"}]},
    })


async def _run(mode: str, root: Path, seconds: float, machines: int) -> _Raw:
    loop = asyncio.get_running_loop()
    outbox = Outbox(root / FILENAME, caps={"a": OutboxCap(1 << 34)})  # (never full: quiet)
    oee = OeeStore(root / OEE_FILE)
    thread = WriterThread(name="store-writer", linger=LINGER)
    store = OutboxWriter(outbox, thread) if mode == "gateway" else InlineOutbox(outbox)
    oee_writes: OeeWrites = StoreWriter(oee, thread) if mode == "gateway" else oee
    kpi = KpiService(_plant(machines), oee, writes=oee_writes)
    sealer = Sealer("gw", Signer(Ed25519PrivateKey.generate()), store,
                    [Destination(id="a", url="mqtt://127.0.0.1")], lambda _d: True)
    stored = 0
    cursor: int | None = None  # each stored row is acknowledged exactly once
    appends = saves = 0

    def on_stored(result: Stored) -> None:
        nonlocal stored, cursor
        stored += result.records
        rows = store.peek("a", cursor, 1)
        if rows:
            cursor = rows[0].id
            store.ack("a", [rows[0].id])  # as if its PUBACK came back at once

    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            lags.append(max(0.0, loop.time() - due))

    async def poller(m: int) -> None:
        nonlocal appends, saves
        i = 0
        await asyncio.sleep(0.1 * m / machines)  # machines are polled out of phase
        while not stop.is_set():
            if i % 10 == 0:  # a part a second: its count saved before the envelope
                kpi.on_state(f"m{m}", MachineState(
                    f"m{m}", Availability.AVAILABLE, Execution.ACTIVE,
                    ControllerMode.AUTOMATIC, program="p1", part_count=i // 10,
                    bad_part_count=0), utc_now())
                saves += 1
            sealer.seal(f"edge/p/a/l/m{m}/telemetry", f"m{m}", "telemetry", _records(i),
                        on_stored)
            appends += 1
            i += 1
            await asyncio.sleep(0.1)

    async def stopped_within(seconds: float) -> bool:
        """Wait `seconds`, or less if the run ends meanwhile (then True)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    async def ticks() -> None:
        nonlocal saves
        while not await stopped_within(TICK_EVERY):
            kpi.tick()
            saves += 1

    async def checkpoints() -> None:
        while not await stopped_within(1.0):
            for wal in (outbox, oee):
                if mode == "gateway":
                    await asyncio.to_thread(wal.truncate_wal)
                else:
                    wal.truncate_wal()

    t0, c0, b0 = time.perf_counter(), os.times(), system_busy_seconds()
    tasks = [asyncio.create_task(ticker()), asyncio.create_task(checkpoints()),
             asyncio.create_task(ticks())]
    tasks += [asyncio.create_task(poller(m)) for m in range(machines)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    await store.close()
    await thread.close()
    c1, b1, elapsed = os.times(), system_busy_seconds(), time.perf_counter() - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    outbox.close()
    oee.close()
    if isinstance(store, OutboxWriter) and isinstance(oee_writes, StoreWriter):
        commits = store.stats.commits + oee_writes.stats.commits
    else:
        commits = appends * 2 + saves  # + acks
    return _Raw(lags, stored, cpu, max(0.0, (b1 - b0) - cpu), elapsed, commits, saves)


def measure(seconds: float, machines: int, root: Path, rounds: int = 4) -> list[dict[str, Any]]:
    """`rounds` alternating runs of each mode, `seconds / rounds` each, pooled."""
    raws: dict[str, list[_Raw]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode, done in raws.items():
            (root / f"{mode}-{r}").mkdir(parents=True)
            done.append(asyncio.run(_run(mode, root / f"{mode}-{r}", seconds / rounds,
                                         machines)))
            last = done[-1]
            print(f"  writer, one process: {MODES[mode]}, round {r + 1}/{rounds}: loop lag "
                  f"p99 {lag_figures(last.lags)['p99']:.2f} ms; the host's other load "
                  f"{100 * last.other / last.elapsed:.0f} % of a core", flush=True)
    out = []
    for mode, rs in raws.items():
        stored = sum(r.stored for r in rs)
        elapsed = sum(r.elapsed for r in rs)
        out.append({"mode": MODES[mode],
                    "samples_per_s": stored / elapsed,
                    "oee_saves_per_s": sum(r.saves for r in rs) / elapsed,
                    "cpu_per_1000": sum(r.cpu for r in rs) / stored * 1000,
                    "cpu_pct_of_core": 100 * sum(r.cpu for r in rs) / elapsed,
                    "other_load_pct_of_core": 100 * sum(r.other for r in rs) / elapsed,
                    "lag_ms": lag_figures([x for r in rs for x in r.lags]),
                    "transactions": sum(r.commits for r in rs)})
    return out


# --- the section -------------------------------------------------------------------------

def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    """The `writer` section of `python -m bench`."""
    window = 5.0 if quick else 20.0
    sims = start_simulators(group, MACHINES)
    try:
        gateway = gateway_rounds(group, broker_port, sims, interval=1.0,
                                 rounds=1 if quick else 3, window=window)
        if not quick:
            gateway += gateway_rounds(group, broker_port, sims, interval=0.1, rounds=2,
                                      window=window)
    finally:
        group.stop(sims[0])
    seconds = 8.0 if quick else 40.0
    root = group.workdir / "writer-stall"
    root.mkdir(exist_ok=True)
    in_process = measure(seconds, MACHINES, root)
    return {"machines": MACHINES, "points": POINTS, "window_s": window,
            "tick_ms": TICK * 1e3, "gateway": gateway,
            "in_process": {"seconds": seconds, "runs": in_process}}


def gateway_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| poll | writes | rounds | samples/s | CPU s / 1,000 | CPU s / 1,000 by round "
           "| CPU % core | loop lag p50 ms | p99 ms | p99 by round | p99.9 ms | max ms "
           "| ticks > 10 ms | p99 read->subscriber ms by round | gaps / dups "
           "| other load % core by round |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lag = r["lag_ms"]
        by_round = " / ".join(f"{x:.4f}" for x in r["cpu_per_1000_by_round"])
        lag_rounds = " / ".join(f"{x:.1f}" for x in r.get("lag_ms_p99_by_round", []))
        lat_rounds = " / ".join(f"{x:.0f}" for x in r.get("latency_ms_p99_by_round",
                                                          [r["latency_ms_p99"]]))
        out.append(f"| {r['poll_interval_s']:g} s | {r['mode']} | {r['rounds']} | "
                   f"{r['samples_per_s']:,.0f} | {r['cpu_per_1000']:.4f} | {by_round} | "
                   f"{r['cpu_pct_of_core']:.1f} | {lag['p50']:.2f} | {lag['p99']:.2f} | "
                   f"{lag_rounds} | {lag['p99.9']:.2f} | {lag['max']:.1f} | "
                   f"{lag['over_10ms']} / {lag['ticks']:,} | {lat_rounds} | "
                   f"{r['seq_gaps']} / {r['duplicates']} | "
                   f"{' / '.join(f'{x:.0f}' for x in r.get('other_load_pct_by_round', []))} |")
    return out


def stall_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| writes | samples/s | OEE saves/s | CPU s / 1,000 | CPU % core | loop lag p50 ms "
           "| p99 ms | p99.9 ms | max ms | ticks > 10 ms | transactions | other load % core |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lag = r["lag_ms"]
        out.append(f"| {r['mode']} | {r['samples_per_s']:,.0f} | "
                   f"{r.get('oee_saves_per_s', 0.0):.0f} | {r['cpu_per_1000']:.4f} | "
                   f"{r.get('cpu_pct_of_core', float('nan')):.1f} | "
                   f"{lag['p50']:.2f} | {lag['p99']:.2f} | {lag['p99.9']:.2f} | "
                   f"{lag['max']:.1f} | {lag['over_10ms']} / {lag['ticks']:,} | "
                   f"{r['transactions']:,} | "
                   f"{r.get('other_load_pct_of_core', float('nan')):.0f} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="the outbox and the OEE store, one process: loop "
                                            "lag with their writes inline vs on the writer "
                                            "thread")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--machines", type=int, default=MACHINES)
    p.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = measure(args.seconds, args.machines, Path(tmp))
    print("\n".join(stall_table(rows)))


if __name__ == "__main__":
    main()
