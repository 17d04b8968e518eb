"""OEE engine and KPI service: events/s, window query cost, restart from 30 days of history.

    .venv/bin/python bench/bench_oee.py [--quick] [--machines 50] [--days 30] [--dir DIR]

Prints figures, asserts nothing. Everything runs on simulated time (an injected clock): a
seeded generator plays each machine through a three-shift week (Europe/Berlin, breaks,
weekend off): a state change every 30-60 s (runs last 40-120 s) among active / ready /
interrupted / feed_hold / stopped (with alarms, setups in manual mode that change the
program, and the odd unavailable), and a part counter increment at every cycle while it
runs (programs of 2-9 s ideal cycle time; `--cycle-scale` stretches them). Count records
outnumber state records about 9 to 1, so the store and the restore scale with parts made.

1. Events/s on one core. One `OeeEngine` fed 8 days of one machine (state calls, counter
   calls, both mixed), then `window()` for the last hour, current shift, today and 7 days.
   `KpiService` with N machines fed `MachineState` updates over a shift change, without and
   with `tick()` every 5 s of simulated time (as the gateway's loop: SQLite save, shift
   closing, current-shift records every 60 s); the latter also as the share of one core
   the service needs in real time.
2. Restart. A store with `--days` of history for N machines is built through the engine and
   `OeeStore.save` (hourly saves, every shift window closed), closed, then a fresh process
   opens `OeeStore` + `KpiService` on it (the restore), so its RSS delta is not blurred by
   the builder's heap. If building would exceed `--build-budget` seconds, fewer machines are
   built and their rows are cloned in SQL to reach N (said so in the output): restore cost
   depends on row counts, not values. The file is in the page cache (warm restart). The
   restore is run a second time with the cyclic GC off during it, to show the GC's share.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import heapq
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

from edge.kpi.oee import OeeEngine
from edge.kpi.service import KpiService, oee_record
from edge.kpi.store import FILENAME, ClosedWindow, EngineDelta, OeeStore
from models.machine_state import Availability, ControllerMode, Execution, MachineState
from models.plant import Machine, Plant
from models.shift_calendar import planned_intervals, shift_at, shift_instances

BERLIN = ZoneInfo("Europe/Berlin")
US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_1US = timedelta(microseconds=1)
TICK = timedelta(seconds=5)  # the gateway's KPI loop sleeps at most 5 s
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
PROGRAMS = {"op10": 2.0, "op20": 3.0, "op30": 4.0, "op40": 6.0, "op50": 9.0}  # ideal s/part
_AUTO, _MANUAL = ControllerMode.AUTOMATIC, ControllerMode.MANUAL
# weight, execution, alarm, mode, available; after a stop the machine runs again w.p. 0.7
STATES: list[tuple[int, Execution | None, bool, ControllerMode | None, bool]] = [
    (0, Execution.ACTIVE, False, _AUTO, True),  # running
    (4, Execution.ACTIVE, True, _AUTO, True),  # running with a warning alarm (still APT)
    (12, Execution.READY, False, _AUTO, True),
    (8, Execution.INTERRUPTED, False, _AUTO, True),
    (8, Execution.FEED_HOLD, False, _AUTO, True),
    (8, Execution.STOPPED, False, _AUTO, True),
    (7, Execution.STOPPED, True, _AUTO, True),  # stopped by an alarm
    (6, Execution.READY, False, _MANUAL, True),  # setup: a program change
    (2, None, False, None, False),  # controller off / link lost
]
_STOPPED = 5
_WEIGHTS = [s[0] for s in STATES]
Event = tuple[int, bool, Execution | None, bool, str | None, bool, ControllerMode | None, int, int]
"""t (us since epoch), counter-only?, execution, available, program, alarm, mode, total, bad"""


class Quiet:
    """Logger that drops events: the bench prints figures, not restore/gap notices."""

    def info(self, event: str, *args: object, **kw: object) -> None: ...
    def warning(self, event: str, *args: object, **kw: object) -> None: ...
    def error(self, event: str, *args: object, **kw: object) -> None: ...


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def to_us(t: datetime) -> int:
    return (t - _EPOCH) // _1US


def from_us(us: int) -> datetime:
    return _EPOCH + us * _1US


def make_plant(machines: int, shifts: int) -> Plant:
    """N machines and a German 2- or 3-shift calendar (15 min breaks, weekend off)."""

    def brk(a: str, b: str) -> dict[str, str]:
        return {"start": a, "end": b}

    cal: list[dict[str, Any]] = [
        {"name": "early", "start": "06:00", "end": "14:00",
         "breaks": [brk("09:00", "09:15"), brk("12:00", "12:15")]},
        {"name": "late", "start": "14:00", "end": "22:00",
         "breaks": [brk("17:00", "17:15"), brk("20:00", "20:15")]},
        {"name": "night", "start": "22:00", "end": "06:00",
         "days": ["sun", "mon", "tue", "wed", "thu"],
         "breaks": [brk("01:00", "01:15"), brk("04:00", "04:15")]},
    ][:shifts]
    return Plant.model_validate({
        "gateway": {"id": "gw", "site": "s1"},
        "machines": [
            {"id": f"m{i:03d}", "area": "a", "line": f"l{i // 10}", "adapter": "modbus",
             "ideal_cycle_time": 10.0, "connection": {},
             "programs": {p: {"ideal_cycle_time": c} for p, c in PROGRAMS.items()}}
            for i in range(1, machines + 1)
        ],
        "shifts": {"timezone": "Europe/Berlin", "shifts": cal, "holidays": ["2024-10-03"]},
    })


def new_engine(plant: Plant, m: Machine) -> OeeEngine:
    ct = m.cycle_times  # wall-clock seconds, as the KPI service passes them
    return OeeEngine(m.id, plant.shifts, ct.machine, dict(ct.programs))


def plan_us(plant: Plant, start: datetime, end: datetime) -> list[tuple[int, int]]:
    plan = planned_intervals(plant.shifts, start - DAY, end + DAY)
    return [(to_us(a), to_us(b)) for a, b in plan]


def machine_events(seed: int, plan: list[tuple[int, int]], start: int, end: int) -> Iterator[Event]:
    """One machine's events in [start, end), time-ordered; see the module doc."""
    rng = Random(seed)
    starts = [a for a, _ in plan]
    program = rng.choice(list(PROGRAMS))
    speed = rng.uniform(1.0, 1.15)  # actual / ideal cycle time
    total = rng.randrange(100_000)
    bad = total // 50
    cur, t = -1, start
    while t < end:
        j = bisect_right(starts, t) - 1
        if j < 0 or t >= plan[j][1]:  # break, shift end, weekend: stopped until planned again
            if cur != _STOPPED:
                yield (t, False, Execution.STOPPED, True, program, False, _AUTO, total, bad)
                cur = _STOPPED
            nxt = plan[j + 1][0] if j + 1 < len(plan) else end
            if nxt - t > 4 * 3600 * US:  # a weekend: the controller is switched off
                yield (t + 1800 * US, False, None, False, None, False, None, total, bad)
                cur = -1
            t = nxt + rng.randrange(120 * US)
            continue
        if cur != 0 and rng.random() < 0.7:
            k = 0
        else:
            k = cur
            while k == cur:
                k = rng.choices(range(len(STATES)), _WEIGHTS)[0]
        _, ex, alarm, mode, avail = STATES[k]
        dwell = rng.randrange(40 * US, 120 * US) if k == 0 else rng.randrange(30 * US, 60 * US)
        seg_end = min(t + dwell, plan[j][1])
        cur = k
        if mode is _MANUAL:
            program = rng.choice(list(PROGRAMS))
        yield (t, False, ex, avail, program if avail else None, alarm, mode, total, bad)
        if ex is Execution.ACTIVE:
            cycle = int(PROGRAMS[program] * speed * US)
            c = t + cycle
            while c < seg_end:
                total += 1
                bad += rng.random() < 0.02
                yield (c, True, ex, avail, program, alarm, mode, total, bad)
                c += cycle
        t = seg_end


def events_between(seed: int, plan: list[tuple[int, int]], start: datetime,
                   end: datetime) -> Iterator[Event]:
    e = to_us(end)
    return takewhile(lambda ev: ev[0] < e, machine_events(seed, plan, to_us(start), e))


def machine_state(asset: str, ev: Event) -> MachineState:
    """What the twin hands `KpiService.on_state` after this event."""
    _, _, ex, avail, prog, alarm, mode, total, bad = ev
    return MachineState(
        asset=asset, availability=Availability.AVAILABLE if avail else Availability.UNAVAILABLE,
        execution=ex, controller_mode=mode, alarms=("E1042",) if alarm else (), program=prog,
        part_count=total, bad_part_count=bad)


def feed(eng: OeeEngine, ev: Event) -> None:
    t, is_count, ex, avail, prog, alarm, mode, total, bad = ev
    if is_count:
        eng.on_counts(from_us(t), total, bad)
    else:
        eng.on_state(from_us(t), ex, avail, prog, alarm, mode)


def per_call(fn: Callable[[], object], min_time: float) -> float:
    """Seconds per call, averaged over at least `min_time` seconds (and 3 calls)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_time and n >= 3:
            return el / n


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def line(name: str, value: str) -> None:
    print(f"  {name:<52} {value}")


# -- 1. events/s and window queries ----------------------------------------------------------


def bench_engine(plant: Plant, days: int, repeats: int, min_time: float) -> dict[str, Any]:
    m = plant.machines[0]
    start = datetime(2024, 6, 3, tzinfo=BERLIN)  # a Monday, local midnight
    now = start + timedelta(days=days, hours=10, minutes=30)  # mid early shift
    evs = list(events_between(1, plan_us(plant, start, now), start, now))
    calls: list[tuple[bool, tuple[Any, ...]]] = [
        (True, (from_us(t), total, bad)) if c else (False, (from_us(t), ex, av, p, al, mo))
        for t, c, ex, av, p, al, mo, total, bad in evs]
    states = [c for c in calls if not c[0]]
    first_run = next(c for c in states if c[1][1] is Execution.ACTIVE)
    counts = [first_run] + [c for c in calls if c[0]]

    def run(stream: list[tuple[bool, tuple[Any, ...]]]) -> tuple[float, OeeEngine]:
        best, eng = float("inf"), new_engine(plant, m)
        for _ in range(repeats):
            eng = new_engine(plant, m)
            on_state, on_counts = eng.on_state, eng.on_counts
            t0 = time.perf_counter()
            for is_count, args in stream:
                if is_count:
                    on_counts(*args)
                else:
                    on_state(*args)
            eng.advance(now)
            best = min(best, time.perf_counter() - t0)
        return best, eng

    out: dict[str, Any] = {"days": days, "events": len(calls), "states": len(states),
                           "counts": len(counts) - 1}
    print(f"\n1a. one OeeEngine, {days} days of one machine: {len(states):,} state + "
          f"{len(counts) - 1:,} counter events (best of {repeats})")
    for key, stream in (("state", states), ("counts", counts), ("mixed", calls)):
        sec, eng = run(stream)
        out[f"{key}_per_s"] = len(stream) / sec
        line(f"{key} events/s", f"{len(stream) / sec:>10,.0f} /s   ({sec * 1e6 / len(stream):.2f} "
             "us/event)")
    sd = eng.state_dict()
    segs, cnts = sd["segments"], sd["counts"]
    out["records"] = len(segs) + len(cnts)
    line("engine records after the mixed feed", f"{len(segs):,} segments + {len(cnts):,} counts")

    print(f"\n    window() on that engine at {now.astimezone(BERLIN):%a %Y-%m-%d %H:%M} "
          f"{now.astimezone(BERLIN).tzname()}")
    shift = shift_at(plant.shifts, now)
    assert shift is not None
    queries: dict[str, tuple[datetime, Callable[[], object]]] = {
        "last hour": (now - HOUR, lambda: eng.last(now, HOUR)),
        "current shift": (shift.start, lambda: eng.current_shift(now)),
        "today": (datetime.combine(now.astimezone(BERLIN).date(), datetime.min.time(),
                                   tzinfo=BERLIN), lambda: eng.today(now)),
        "7 days": (now - 7 * DAY, lambda: eng.window(now - 7 * DAY, now, now=now)),
    }
    out["windows"] = {}
    for name, (ws, fn) in queries.items():
        a, b = to_us(ws), to_us(now)
        n = sum(1 for s in segs if s[1] > a and s[0] < b) + sum(1 for c in cnts if a < c[0] <= b)
        sec = per_call(fn, min_time)
        cal = per_call(lambda ws=ws: planned_intervals(plant.shifts, ws, now), min_time)
        out["windows"][name] = {"s": sec, "records": n, "calendar_s": cal}
        line(f"window {name}", f"{sec * 1e3:>8.3f} ms   {n:>6,} records   "
             f"(calendar alone {cal * 1e3:.3f} ms)")
    return out


def bench_kpi(plant: Plant, root: Path, minutes: int) -> dict[str, Any]:
    n = len(plant.machines)
    end = datetime(2024, 6, 11, 14, 10, tzinfo=BERLIN)  # Tuesday, just past the early shift
    start = end - timedelta(minutes=minutes)
    plan = plan_us(plant, start, end)
    streams = [[(from_us(ev[0]), m.id, machine_state(m.id, ev))
                for ev in events_between(100 + i, plan, start, end)]
               for i, m in enumerate(plant.machines)]
    merged = list(heapq.merge(*streams, key=lambda e: e[0]))
    del streams
    every = n * minutes * 60 / len(merged)
    print(f"\n1b. KpiService, {n} machines, {minutes} min of simulated time across the 14:00 "
          f"shift change: {len(merged):,} MachineState updates (one per {every:.1f} s per "
          "machine)")
    out: dict[str, Any] = {"machines": n, "minutes": minutes, "events": len(merged)}

    with OeeStore(root / "ingest" / FILENAME, logger=Quiet()) as store:
        kpi = KpiService(plant, store, Clock(start), logger=Quiet())
        on_state = kpi.on_state
        t0 = time.perf_counter()
        for dt, asset, st in merged:
            on_state(asset, st, dt)
        sec = time.perf_counter() - t0
    out["ingest_per_s"] = len(merged) / sec
    line("on_state only (no tick)", f"{len(merged) / sec:>10,.0f} /s   "
         f"({sec * 1e6 / len(merged):.2f} us/update)")

    path = root / "ticked" / FILENAME
    with OeeStore(path, logger=Quiet()) as store:
        clock = Clock(start)
        kpi = KpiService(plant, store, clock, publish_every=60, logger=Quiet())
        on_state = kpi.on_state
        ticks: list[tuple[float, int]] = []
        nxt = start + TICK
        t0 = time.perf_counter()
        for dt, asset, st in merged:
            while dt >= nxt:
                clock.t = nxt
                a = time.perf_counter()
                recs = kpi.tick(nxt)
                ticks.append((time.perf_counter() - a, len(recs)))
                nxt += TICK
            on_state(asset, st, dt)
        sec = time.perf_counter() - t0
        kpi.close(end)
    tick_s = sum(t for t, _ in ticks)
    plain = sorted(t for t, r in ticks if r == 0)
    publish = [t for t, r in ticks if r == n]
    closing = [t for t, r in ticks if r > n]
    q = statistics.quantiles(plain, n=100) if len(plain) > 1 else [plain[0]] * 99
    out.update(with_tick_per_s=len(merged) / sec, ticks=len(ticks), tick_share=tick_s / sec,
               core_share=sec / (minutes * 60),
               tick_p50=q[49], tick_p99=q[98], tick_max=max(t for t, _ in ticks),
               publish_tick=statistics.mean(publish) if publish else None,
               close_tick=max(closing) if closing else None,
               store_bytes=path.stat().st_size)
    line("on_state + tick() every 5 s simulated", f"{len(merged) / sec:>10,.0f} /s   "
         f"(ticks are {tick_s / sec:.0%} of the time)")
    line("  = share of one core in real time", f"{sec / (minutes * 60):.2%}")
    line(f"tick, save only ({len(plain):,} ticks)", f"p50 {q[49] * 1e3:.2f} ms   "
         f"p99 {q[98] * 1e3:.2f} ms")
    if publish:
        line(f"tick with {n} current-shift records ({len(publish)} ticks)",
             f"mean {statistics.mean(publish) * 1e3:.2f} ms   max {max(publish) * 1e3:.2f} ms")
    if closing:
        line("tick that closes the early shift", f"{max(closing) * 1e3:.2f} ms")
    line("store after the run", f"{path.stat().st_size / 1e6:.1f} MB")
    return out


# -- 2. restart from a store with weeks of history -------------------------------------------


def build_store(plant: Plant, path: Path, days: int, end: datetime,
                budget: float) -> dict[str, Any]:
    """Each machine through its own engine, saved hourly and at each shift end (as the
    KpiService's ticks would), with every ended shift stored as a closed window."""
    start = end - days * DAY
    plan = plan_us(plant, start, end)
    ends: dict[datetime, list[Any]] = {}
    for inst in shift_instances(plant.shifts, start, end):
        if start < inst.end <= end:
            ends.setdefault(inst.end, []).append(inst)
    marks = sorted({*ends, end, *(start + k * HOUR for k in range(1, days * 24))})
    machines = plant.machines
    built, t0 = 0, time.perf_counter()
    with OeeStore(path, logger=Quiet()) as store:
        for i, m in enumerate(machines):
            el = time.perf_counter() - t0
            if i and el / i * len(machines) > budget:
                break
            eng, cursor = new_engine(plant, m), None
            evs = events_between(1000 + i, plan, start, end)
            pending = next(evs, None)
            for mark in marks:
                mu = to_us(mark)
                while pending is not None and pending[0] <= mu:
                    feed(eng, pending)
                    pending = next(evs, None)
                eng.advance(mark)
                wins = [ClosedWindow(m.id, f"shift:{s.name}", s.start, s.end,
                                     oee_record(eng.window(s.start, s.end, now=mark), "shift",
                                                closed=True, at=mark, name=s.name, day=s.day))
                        for s in ends.get(mark, ())]
                state, nc = eng.export_since(cursor)
                store.save([EngineDelta(m.id, cursor, nc, state, mark)], wins, last_tick=mark)
                cursor = nc
            built = i + 1
    build_s = time.perf_counter() - t0
    if built < len(machines):
        clone(path, [m.id for m in machines], built)
    clone_s = time.perf_counter() - t0 - build_s
    conn = sqlite3.connect(path)
    rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("segments", "counts", "windows")}
    conn.close()
    return {"built": built, "build_s": build_s, "clone_s": clone_s, "rows": rows,
            "bytes": sum(p.stat().st_size for p in path.parent.glob(FILENAME + "*"))}


def clone(path: Path, assets: list[str], built: int) -> None:
    """Give assets[built:] copies of the rows of the first `built` machines."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for k in range(built, len(assets)):
        dst, src = assets[k], assets[k % built]
        conn.execute("INSERT INTO segments(asset, end_us, start_us, class, program) SELECT ?, "
                     "end_us, start_us, class, program FROM segments WHERE asset = ?", (dst, src))
        conn.execute("INSERT INTO counts(asset, t_us, program, total, bad) SELECT ?, t_us, "
                     "program, total, bad FROM counts WHERE asset = ? ORDER BY t_us, rowid",
                     (dst, src))
        conn.execute("INSERT INTO windows(asset, kind, start_us, end_us, record, closed_at) "
                     "SELECT ?, kind, start_us, end_us, record, closed_at FROM windows "
                     "WHERE asset = ?", (dst, src))
        conn.execute("INSERT INTO engines(asset, head, cursor, alive, saved) SELECT ?, "
                     "json_set(head, '$.asset', ?), cursor, alive, saved FROM engines "
                     "WHERE asset = ?", (dst, dst, src))
    conn.execute("COMMIT")
    conn.close()


def restore_child(path: Path, machines: int, shifts: int, now_us: int, *, min_time: float,
                  no_gc: bool) -> None:
    """In a fresh process: open the store, restore every engine, report as one JSON line.
    With `no_gc` the cyclic GC is off during the restore, and only the restore is measured."""
    plant = make_plant(machines, shifts)
    now = from_us(now_us)
    gc.collect()
    out: dict[str, Any] = {"rss0": rss_kb()}
    if no_gc:
        gc.disable()
    t0 = time.perf_counter()
    store = OeeStore(path, logger=Quiet())
    t1 = time.perf_counter()
    kpi = KpiService(plant, store, Clock(now), logger=Quiet())
    t2 = time.perf_counter()
    gc.enable()
    out.update(open_s=t1 - t0, restore_s=t2 - t1, rss1=rss_kb(), hwm=rss_kb("VmHWM"))
    if no_gc:
        print(json.dumps(out))
        return
    gc.collect()
    try:  # hand freed heap back to the OS: what the restored state really keeps
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        out["rss_trim"] = rss_kb()
    except (OSError, AttributeError):
        out["rss_trim"] = None
    a = time.perf_counter()
    first = kpi.tick(now)
    b = time.perf_counter()
    kpi.tick(now + TICK)
    c = time.perf_counter()
    out.update(first_tick_s=b - a, first_tick_records=len(first), second_tick_s=c - b)
    asset, later = plant.machines[0].id, now + TICK
    shift = shift_at(plant.shifts, later)
    queries: dict[str, Callable[[], object]] = {
        "last hour": lambda: kpi.window(asset, "last_hour", now=later),
        "current shift": lambda: kpi.window(asset, "shift", now=later),
        "today": lambda: kpi.window(asset, "today", now=later),
        "7 days": lambda: kpi.window(asset, "range", later - 7 * DAY, later, now=later),
        "30 days": lambda: kpi.window(asset, "range", later - 30 * DAY, later, now=later),
    }
    if shift is not None:
        prev = shift.start - DAY
        queries["yesterday's shift (stored)"] = lambda: kpi.window(asset, "shift", prev, now=later)
    out["windows"] = {k: per_call(fn, min_time) for k, fn in queries.items()}
    # One machine's restore, step by step (x machines ~ the whole restore).
    m = plant.machines[0]
    a = time.perf_counter()
    saved = store.load(m.id)
    b = time.perf_counter()
    assert saved is not None
    ct = m.cycle_times
    eng = OeeEngine.from_state_dict(saved.state, plant.shifts, ct.machine, dict(ct.programs))
    c = time.perf_counter()
    eng.prune(now - timedelta(days=35))
    d = time.perf_counter()
    out.update(load_one_s=b - a, from_state_one_s=c - b, prune_one_s=d - c)
    store.close()
    print(json.dumps(out))


def bench_restore(plant: Plant, root: Path, *, days: int, shifts: int, budget: float,
                  min_time: float, cycle_scale: float) -> dict[str, Any]:
    n = len(plant.machines)
    end = datetime(2024, 7, 3, 10, tzinfo=BERLIN)  # a Wednesday, mid early shift
    path = root / "restore" / FILENAME
    print(f"\n2. restart: {days} days of history for {n} machines, {shifts} shifts/day "
          f"(building...)", flush=True)
    b = build_store(plant, path, days, end, budget)
    if b["built"] < n:
        line("built through the engine", f"{b['built']} machine(s) in {b['build_s']:.1f} s (over "
             f"the {budget:g} s budget at {n}), cloned in SQL to {n} in {b['clone_s']:.1f} s")
    else:
        line("built through the engine", f"{n} machines in {b['build_s']:.1f} s")
    rows = b["rows"]
    line("store", f"{b['bytes'] / 1e6:.1f} MB   {rows['segments']:,} segments  "
         f"{rows['counts']:,} counts  {rows['windows']:,} closed windows")
    now = end + timedelta(minutes=2)  # the gateway was down 2 min
    def child(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, __file__, "--restore-child", str(path), "--machines", str(n),
             "--shifts", str(shifts), "--now-us", str(to_us(now)), "--min-time", str(min_time),
             "--cycle-scale", str(cycle_scale), *extra],
            capture_output=True, text=True, check=True)
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    r = child()
    r["no_gc_restore_s"] = child("--child-no-gc")["restore_s"]
    r.update(b)
    r["machines"] = n
    line("open OeeStore (incl. PRAGMA quick_check)", f"{r['open_s']:.2f} s")
    line(f"KpiService restore of {n} engines", f"{r['restore_s']:.2f} s   "
         f"({(rows['segments'] + rows['counts']) / r['restore_s']:,.0f} records/s)")
    line("  the same with the cyclic GC off during it", f"{r['no_gc_restore_s']:.2f} s")
    line("RSS delta after restore", f"{(r['rss1'] - r['rss0']) / 1024:.0f} MB   "
         f"(peak {(r['hwm'] - r['rss0']) / 1024:.0f} MB, after malloc_trim "
         + (f"{(r['rss_trim'] - r['rss0']) / 1024:.0f} MB)" if r["rss_trim"] else "n/a)"))
    line("  per restored record", f"{(r['rss1'] - r['rss0']) * 1024 / (rows['segments'] + rows['counts']):.0f} B")  # noqa: E501
    line("  one machine: load / from_state_dict / prune",
         f"{r['load_one_s'] * 1e3:.0f} / {r['from_state_one_s'] * 1e3:.0f} / "
         f"{r['prune_one_s'] * 1e3:.0f} ms")
    line("first tick after restart (hourly prune, publish)",
         f"{r['first_tick_s'] * 1e3:.0f} ms   ({r['first_tick_records']} records)")
    line("second tick (save only)", f"{r['second_tick_s'] * 1e3:.1f} ms")
    for k, v in r["windows"].items():
        line(f"KpiService.window {k}", f"{v * 1e3:>8.3f} ms")
    return r


# -- main ------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(e: dict[str, Any], k: dict[str, Any], r: dict[str, Any]) -> None:
    n = r["machines"]
    scaled = (f" (built {r['built']}, cloned to {n})" if r["built"] < n else "")
    rows = [
        ("OeeEngine state events/s (1 core)", f"{e['state_per_s']:,.0f}"),
        ("OeeEngine counter events/s", f"{e['counts_per_s']:,.0f}"),
        ("OeeEngine mixed events/s", f"{e['mixed_per_s']:,.0f}"),
        *((f"engine window(): {w} ({v['records']:,} records)", f"{v['s'] * 1e3:.2f} ms")
          for w, v in e["windows"].items()),
        (f"KpiService on_state/s, {k['machines']} machines", f"{k['ingest_per_s']:,.0f}"),
        ("KpiService on_state/s incl. tick every 5 s simulated", f"{k['with_tick_per_s']:,.0f}"),
        (f"KpiService share of 1 core, {k['machines']} machines, real time",
         f"{k['core_share']:.2%}"),
        ("tick (save) p50 / p99", f"{k['tick_p50'] * 1e3:.2f} / {k['tick_p99'] * 1e3:.2f} ms"),
        (f"tick publishing {k['machines']} shift records",
         f"{k['publish_tick'] * 1e3:.1f} ms" if k["publish_tick"] else "-"),
        (f"restore {n} machines x {r['days']} days{scaled}", f"{r['restore_s']:.2f} s"),
        ("restore, cyclic GC off during it", f"{r['no_gc_restore_s']:.2f} s"),
        ("open store (quick_check)", f"{r['open_s']:.2f} s"),
        ("store file size", f"{r['bytes'] / 1e6:.0f} MB"),
        ("RSS delta after restore / peak", f"{(r['rss1'] - r['rss0']) / 1024:.0f} / "
         f"{(r['hwm'] - r['rss0']) / 1024:.0f} MB"),
        ("first tick after restart", f"{r['first_tick_s'] * 1e3:.0f} ms"),
        *((f"KpiService.window {w} (restored)", f"{v * 1e3:.2f} ms")
          for w, v in r["windows"].items()),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"\n| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|------:|")
    for a, b in rows:
        print(f"| {a:<{width}} | {b} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    ap.add_argument("--machines", type=int, default=None, help="default 50 (quick: 10)")
    ap.add_argument("--days", type=int, default=None, help="store history, default 30 (quick: 3)")
    ap.add_argument("--shifts", type=int, choices=(2, 3), default=3)
    ap.add_argument("--cycle-scale", type=float, default=1.0,
                    help="multiply the programs' cycle times (fewer counter events)")
    ap.add_argument("--build-budget", type=float, default=180.0,
                    help="seconds for building the store before cloning rows instead")
    ap.add_argument("--dir", type=Path, default=None, help="directory to test in")
    ap.add_argument("--restore-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--now-us", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--min-time", type=float, default=0.2, help=argparse.SUPPRESS)
    ap.add_argument("--child-no-gc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    machines = args.machines or (10 if args.quick else 50)
    for p in PROGRAMS:
        PROGRAMS[p] *= args.cycle_scale
    if args.restore_child:
        restore_child(args.restore_child, machines, args.shifts, args.now_us,
                      min_time=args.min_time, no_gc=args.child_no_gc)
        return
    days = args.days or (3 if args.quick else 30)
    min_time = 0.05 if args.quick else 0.2
    print(f"OEE bench ({'quick' if args.quick else 'full'}): {cpu_model()}, {os.cpu_count()} "
          f"cores, {platform.system()} {platform.release()}, Python "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    plant = make_plant(machines, args.shifts)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"in {root}; calendar Europe/Berlin, {args.shifts} shifts mon-fri")
        e = bench_engine(plant, 2 if args.quick else 8, 1 if args.quick else 3, min_time)
        k = bench_kpi(plant, root, 50 if args.quick else 500)
        r = bench_restore(plant, root, days=days, shifts=args.shifts, budget=args.build_budget,
                          min_time=min_time, cycle_scale=args.cycle_scale)
        r["days"] = days
    print(f"load average {os.getloadavg()[0]:.2f} at the end (the bench itself uses one core)")
    table(e, k, r)


if __name__ == "__main__":
    main()
