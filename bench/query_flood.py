"""Issue 17, section 2p: the event loop under a signed query flood, before/after the query,
booking and part stores moved off it.

`python -m bench.query_flood [seconds]` (`--report result.json`: the tables of a saved run,
`BENCH_OUT=result.json` saves one): one Mosquitto (`set_tcp_nodelay true`, so a
reply's latency is the gateway's, see bench/queries.py) and one simulator process (50
machines x 40 points, polled every second) shared by both sides. Each side's gateway
(before = `git merge-base HEAD main` or `BENCH_BEFORE`, exported with `git archive`; after =
this tree) runs as `bench/writes_gateway.py` (the real CLI with the loop-lag probe: a task
that asks to wake every 5 ms and records how late it woke, i.e. how long a poll due then
waited) and with the loop step timer (bench/loop_timer, steps over
`EDGE_LOOP_TIMER_SLOW_MS` = 5 ms kept with their task). Per side, after every machine's
first envelope: a quiet window, then a flood window in which the bench platform keeps
`OUTSTANDING` signed `state` requests of one machine in flight (each reply triggers the
next; rate limit and burst at the schema's maxima), so every request commits a nonce.
Sides alternate over `ROUNDS` rounds (before/after, then after/before) so a change of the
shared host's load hits both.

Figures per window: loop lag p50/p99/max (ms), steps over 5 ms (count, longest, the task
that took longest), replies/s and reply latency p50/p99 in the flood, the event loop's time
per reply in the serving task (`query-cli`: checks, nonce, method, sealing) and in the reply
tasks (`Task-N`), samples/s and read -> received p99 of the telemetry, the gateway's CPU
and the host's other load.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from .gateway_load import LoadSpec, loop_lags, plant_yaml, weighted_percentiles
from .hotpath import before_revision, export
from .processes import (
    HOST,
    ROOT,
    ProcessGroup,
    cpu_seconds,
    descendants,
    start_mosquitto,
    start_simulators,
    system_busy_seconds,
)
from .queries import Requesters, _polling, platforms_yaml, write_key
from .subscriber import TelemetrySubscriber

MACHINES, POINTS, INTERVAL = 50, 40, 1.0
OUTSTANDING = 16
ROUNDS = 3
SLOW_MS = 5
TIMER = Path(__file__).resolve().parent / "loop_timer"


def _lag(path: Path, t0: float, t1: float) -> dict[str, float]:
    lags = sorted(loop_lags(path, t0, t1))
    if not lags:
        return {"lag_ms_p50": float("nan"), "lag_ms_p99": float("nan"),
                "lag_ms_max": float("nan"), "lag_samples": 0}
    p50, p99 = (lags[min(len(lags) - 1, int(q * len(lags)))] for q in (0.5, 0.99))
    return {"lag_ms_p50": p50 * 1e3, "lag_ms_p99": p99 * 1e3, "lag_ms_max": lags[-1] * 1e3,
            "lag_samples": len(lags)}


def _steps(path: Path, t0: float, t1: float) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"steps_over_5ms": -1}
    inside = [(ms, task) for at, ms, task in data["slow"] if t0 <= at <= t1]
    longest = max(inside, default=(0.0, "-"))
    return {"steps_over_5ms": len(inside), "longest_step_ms": longest[0],
            "longest_step_task": longest[1],
            "slow_steps_by_task": dict(Counter(task for _, task in inside).most_common(4))}


def _totals(path: Path) -> dict[str, float]:
    """Seconds of loop steps per task so far (the timer rewrites its file every 2 s)."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text())["totals"]}
    except (OSError, ValueError, KeyError):
        return {}


def side(group: ProcessGroup, broker: int, sim_base: int, name: str, *, source: Path | None,
         seconds: float, key: Any, public: Path) -> dict[str, Any]:
    spec = LoadSpec(MACHINES, points=POINTS, interval=INTERVAL, run_id=name, source=source)
    state = group.workdir / f"state-{name}"
    state.mkdir()
    plant = group.workdir / f"plant-{name}.yaml"
    plant.write_text(plant_yaml(spec, sim_base, state) + platforms_yaml(public))
    steps = group.workdir / f"steps-{name}.json"
    lag = group.workdir / f"lag-{name}.txt"
    path = str(TIMER) if source is None else f"{TIMER}:{source}"
    env = {"PYTHONPATH": path, "EDGE_LOOP_TIMER_FILE": str(steps),
           "EDGE_LOOP_TIMER_SLOW_MS": str(SLOW_MS), "EDGE_BENCH_LAG_FILE": str(lag)}
    sub = TelemetrySubscriber(HOST, broker)
    platform = Requesters(broker, key)
    gw = group.spawn(f"gateway-{name}",
                     [sys.executable, "-m", "bench.writes_gateway", "--log-level", "warning",
                      "--log-format", "json", "run", "-c", str(plant), "--broker",
                      f"mqtt://{HOST}:{broker}", "--no-console"],
                     env=env, cwd=source or ROOT)
    windows: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 60 + MACHINES * 0.2
        while sub.topics() < MACHINES:
            if not gw.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not start:\n{gw.log_tail()}")
            time.sleep(0.2)
        time.sleep(3.0)
        tree = [gw.pid, *descendants(gw.pid)]

        def cpu() -> tuple[float, float]:
            return sum(cpu_seconds(p) for p in tree), system_busy_seconds()

        c0, t0 = cpu(), time.time()
        time.sleep(seconds)
        t1, c1 = time.time(), cpu()
        windows["quiet"] = {"t0": t0, "t1": t1, "cpu": (c0, c1)}
        time.sleep(2.5)  # the timer's file rewritten: the loop's work before the flood
        before = _totals(steps)
        c0 = cpu()
        q0, q1, answers, lost = platform.run("state", {"asset": "m001"}, OUTSTANDING, seconds)
        c1 = cpu()
        codes = Counter(a.code for a in answers)
        p50, p99 = weighted_percentiles([(a.received - a.sent, 1) for a in answers], [0.5, 0.99])
        windows["flood"] = {"t0": q0, "t1": q1, "cpu": (c0, c1), "replies_per_s":
                            len(answers) / (q1 - q0), "ok": codes.get("ok", 0),
                            "refused": {c: n for c, n in codes.items() if c != "ok"},
                            "unanswered_after_10s": lost, "reply_ms_p50": p50 * 1e3,
                            "reply_ms_p99": p99 * 1e3}
        time.sleep(3.0)  # the timer rewrites its file every 2 s; the last telemetry arrives
        after = _totals(steps)
        tally = sub.take()
        replies = max(1, len(answers))
        # the serving task's steps (checks, nonce, method, sealing) and the reply tasks'
        # (`Task-N`: each hands its reply to the transport), in loop ms per reply
        for task, figure in (("query-cli", "query_task_ms_per_reply"),
                             ("Task-N", "reply_tasks_ms_per_reply")):
            windows["flood"][figure] = (
                1e3 * (after.get(task, 0.0) - before.get(task, 0.0)) / replies)
    finally:
        platform.close()
        sub.close()
        group.stop(gw, timeout=15.0)
    out: dict[str, Any] = {"side": name}
    for phase, w in windows.items():
        (cpu0, busy0), (cpu1, busy1) = w.pop("cpu")
        t0, t1 = w.pop("t0"), w.pop("t1")
        out[phase] = {**w, **_lag(lag, t0, t1), **_steps(steps, t0, t1),
                      **_polling(tally.arrivals, t0, t1),
                      "gateway_cpu_pct_of_core": 100 * (cpu1 - cpu0) / (t1 - t0),
                      "other_load_pct_of_core": 100 * max(0.0, (busy1 - busy0) - (cpu1 - cpu0))
                      / (t1 - t0)}
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per side and window, the median over rounds of each numeric figure."""
    values: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        for phase in ("quiet", "flood"):
            acc = values.setdefault(f"{r['side']}/{phase}", {})
            for k, v in r[phase].items():
                if isinstance(v, int | float):
                    acc.setdefault(k, []).append(float(v))
    return {k: {f: round(statistics.median(vs), 2) for f, vs in v.items()}
            for k, v in values.items()}


COLUMNS = (("lag_ms_p50", "loop lag p50 ms", ".2f"), ("lag_ms_p99", "p99 ms", ".1f"),
           ("lag_ms_max", "max ms", ".1f"), ("steps_over_5ms", "steps > 5 ms", ".0f"),
           ("longest_step_ms", "longest step ms", ".1f"),
           ("replies_per_s", "replies/s", ",.0f"), ("reply_ms_p50", "reply p50 ms", ".1f"),
           ("reply_ms_p99", "reply p99 ms", ".1f"),
           ("query_task_ms_per_reply", "query task loop ms/reply", ".3f"),
           ("reply_tasks_ms_per_reply", "reply tasks loop ms/reply", ".3f"),
           ("samples_per_s", "samples/s", ",.0f"),
           ("read_to_received_ms_p99", "read->recv p99 ms", ".1f"),
           ("gateway_cpu_pct_of_core", "gateway CPU %", ".0f"),
           ("other_load_pct_of_core", "other load %", ".0f"))


def markdown(result: dict[str, Any]) -> list[str]:
    """The section's tables: every round, then the median of the rounds per side."""
    head = "| round | side | window | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|" + "---|" * (3 + len(COLUMNS))

    def cell(w: dict[str, Any], k: str, f: str) -> str:
        if not isinstance(w.get(k), int | float):
            return "-"
        task = w.get("longest_step_task") if k == "longest_step_ms" else None
        return format(w[k], f) + (f" ({task})" if task and task != "-" else "")

    def cells(w: dict[str, Any]) -> str:
        return " | ".join(cell(w, k, f) for k, _, f in COLUMNS)

    lines = [head, rule]
    for r in result["rows"]:
        for phase in ("quiet", "flood"):
            lines.append(f"| {r['round']} | {r['side']} | {phase} | {cells(r[phase])} |")
    lines += ["", head.replace("| round ", "| ").replace("| window |", "| window (median) |"),
              "|" + "---|" * (2 + len(COLUMNS))]
    for side in ("before", "after"):
        for phase in ("quiet", "flood"):
            w = result["summary"].get(f"{side}/{phase}", {})
            lines.append(f"| {side} | {phase} | {cells(w)} |")
    slow = [f"{r['side']} r{r['round']}: {r['flood'].get('slow_steps_by_task')}"
            for r in result["rows"]]
    lines += ["", "Steps over 5 ms in the flood window, by task: " + "; ".join(slow) + "."]
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        print("\n".join(markdown(json.loads(Path(sys.argv[2]).read_text()))))
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    with TemporaryDirectory(prefix="query-flood-") as tmp:
        group = ProcessGroup(Path(tmp))
        rows: list[dict[str, Any]] = []
        try:
            before = export(before_revision(), Path(tmp))
            _, broker = start_mosquitto(group, name="mosquitto-nodelay",
                                        extra="set_tcp_nodelay true\n")
            _, base = start_simulators(group, MACHINES)
            key, public = write_key(Path(tmp))
            for n in range(1, ROUNDS + 1):
                order: list[tuple[str, Path | None]] = [("before", before), ("after", None)]
                if n % 2 == 0:
                    order.reverse()
                for name, source in order:
                    row = side(group, broker, base, name, source=source,
                               seconds=seconds, key=key, public=public)
                    row["round"] = n
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    for d in ("state-before", "state-after"):  # a fresh state per side
                        _rmtree(group.workdir / d)
        finally:
            group.close()
    result = {"rows": rows, "summary": summary(rows)}
    print("\n".join(markdown(result)), flush=True)
    if os.environ.get("BENCH_OUT"):
        Path(os.environ["BENCH_OUT"]).write_text(json.dumps(result))


def _rmtree(path: Path) -> None:
    import shutil  # noqa: PLC0415

    shutil.rmtree(path, ignore_errors=True)
    for f in path.parent.glob(f"{path.name.replace('state', 'steps')}.json"):
        f.unlink()
    for f in path.parent.glob(f"{path.name.replace('state', 'lag')}.txt"):
        f.unlink()


if __name__ == "__main__":
    main()
