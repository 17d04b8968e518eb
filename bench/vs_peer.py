"""Issue 17's CPU target, side by side in one run: this tree's gateway, a `before` revision's
and ThingsBoard IoT Gateway on the same 50 machines x 40 points polled every second.

The target ("CPU per 1,000 samples <= 0.25x ThingsBoard IoT Gateway on the same scenario")
was so far judged from figures of different runs on a shared 2-core host, where the load
of other processes moves CPU per sample by 20-40 % from one run to the next. Here all
three run against one simulator process and one broker, in rounds whose order rotates
(before / after / peer, then after / peer / before, ...), so a change of the host's load
hits every side; each row records what else ran meanwhile ("other load").

* before: `BENCH_BEFORE` or `git merge-base HEAD main`, exported with `git archive` and run
  from its own directory (bench/hotpath.py);
* after: this tree;
* peer: ThingsBoard IoT Gateway from `bench/.peer-venv` (bench/peer.py); when it is absent
  the rows are the two gateways alone and the ratio to the peer is reported as not measured;
* after, real-time machines: this tree against a second simulator process whose machines
  run at real time (`--time-scale 1`) instead of 60 times faster: part counters change
  every 30-60 s as on a shop floor, so almost no `state` envelopes; the difference to
  `after` is what the simulator's part rate costs the gateway;
* after, poll_slots 1: this tree with every machine polled at one phase of the second
  (`gateway.poll_slots: 1`, as Telegraf's `round_interval`); `after` (and `after, real-time
  machines`) set `auto`, which is 2 slots at 50 machines, and `before` (from main before
  it) has a random phase per machine, which is `spread`, the default.

What "samples" means for each side is bench/peer.py's: telemetry values read in the window
and received by the bench's subscriber. The gateway also seals, stores and sends one
`state` envelope per part-count change (about 40 % of its envelopes on this simulator);
ThingsBoard sends no such thing, no signature and keeps no durable outbox.
"""

from __future__ import annotations

import statistics
from typing import Any

from . import peer
from .gateway_load import LoadSpec, run_load
from .hotpath import before_revision, export
from .processes import ProcessGroup, start_simulators

MACHINES = 50
SIDES = ("before", "after", "peer", "after, real-time machines", "after, poll_slots 1")
REAL_TIME, ONE_SLOT = SIDES[3], SIDES[4]
PAIRS = (("after", "before"), ("after", "peer"), ("before", "peer"), (REAL_TIME, "peer"),
         (REAL_TIME, "after"), (ONE_SLOT, "peer"), (ONE_SLOT, "after"))
KEYS = ("samples_per_s", "achieved_over_offered", "gateway_cpu_s_per_1000_samples",
        "gateway_cpu_pct_of_core", "latency_ms_p50", "latency_ms_p99", "envelopes_per_s",
        "state_and_other_envelopes", "gateway_rss_mb_steady", "seq_gaps", "duplicates",
        "other_load_pct_of_core", "simulators_cpu_pct_of_core")


def order(rounds: int) -> list[tuple[int, str]]:
    """(round, side): each round rotates the order by one, so no side always goes first."""
    out = []
    for n in range(rounds):
        k = n % len(SIDES)
        out += [(n + 1, side) for side in SIDES[k:] + SIDES[:k]]
    return out


def run(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    rev = before_revision()
    before = export(rev, group.workdir)
    window = 4.0 if quick else 20.0
    settle, grace = (1.0, 2.0) if quick else (3.0, 3.0)
    rounds = 1 if quick else 3
    sim, base = sims = start_simulators(group, MACHINES)
    slow = start_simulators(group, MACHINES, time_scale=1.0)
    rows: list[dict[str, Any]] = []
    try:
        for n, side in order(rounds):
            print(f"  vs peer: round {n}, {side} ...", flush=True)
            if side == "peer":
                p = peer.run(group, broker_port, sim.pid, base, machines=MACHINES,
                             window=window, settle=settle)
                if not p.get("ran"):
                    rows.append({"side": side, "round": n, "ran": False,
                                 "reason": p.get("reason", "?")})
                    print(f"    not measured: {p.get('reason')}", flush=True)
                    continue
                row = {"side": side, "round": n, "ran": True, "version": p["version"],
                       "samples_per_s": p["samples_per_s"],
                       "achieved_over_offered": p["achieved_over_offered"],
                       "gateway_cpu_s_per_1000_samples": p["cpu_s_per_1000_samples"],
                       "gateway_cpu_pct_of_core": p["cpu_pct_of_core"],
                       "latency_ms_p50": p["latency_ms_p50"],
                       "latency_ms_p99": p["latency_ms_p99"],
                       "envelopes_per_s": p["messages"] / window, "state_per_s": 0.0,
                       "gateway_rss_mb_steady": p["rss_mb_steady"],
                       "other_load_pct_of_core": p["other_load_pct_of_core"],
                       "simulators_cpu_pct_of_core": p["simulators_cpu_pct_of_core"]}
            else:
                spec = LoadSpec(MACHINES, interval=1.0, window=window, settle=settle,
                                grace=grace, source=before if side == "before" else None,
                                run_id=f"v{n}{'rt' if side == REAL_TIME else ''}",
                                poll_slots=1 if side == ONE_SLOT else
                                None if side == "before" else "auto")
                result = run_load(group, broker_port, spec,
                                  simulators=slow if side == REAL_TIME else sims)[0]
                row = {"side": side, "round": n, "ran": True, **{k: result[k] for k in KEYS},
                       "state_per_s": result["state_envelopes_per_s"]}
            rows.append(row)
            print(f"    {row['samples_per_s']:,.0f} samples/s, CPU "
                  f"{row['gateway_cpu_s_per_1000_samples']:.4f} s / 1,000, other load "
                  f"{row['other_load_pct_of_core']:.0f} % core", flush=True)
    finally:
        group.stop(slow[0])
        group.stop(sim)
    return {"machines": MACHINES, "before": rev, "window_s": window, "runs": rows,
            "ratios": ratios(rows)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per round and as the median over rounds: after / before, after / peer, before / peer
    (CPU per 1,000 samples), plus each side's CPU per 1,000 pooled as a median."""
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.get("ran"):
            by_round.setdefault(r["round"], {})[r["side"]] = r["gateway_cpu_s_per_1000_samples"]
    out: dict[str, Any] = {"per_round": {}}
    for a, b in PAIRS:
        values = [s[a] / s[b] for s in by_round.values() if a in s and b in s]
        for n, s in by_round.items():
            if a in s and b in s:
                out["per_round"].setdefault(str(n), {})[f"{a}_over_{b}"] = s[a] / s[b]
        if values:
            out[f"{a}_over_{b}"] = statistics.median(values)
    for side in SIDES:
        values = [s[side] for s in by_round.values() if side in s]
        if values:
            out[f"{side}_cpu_per_1000_median"] = statistics.median(values)
    return out


def markdown(v: dict[str, Any]) -> list[str]:
    title = ("## 2l. CPU per sample against ThingsBoard IoT Gateway (issue 17 target), "
             "one run")
    if "error" in v:
        return [title, "", f"Failed: `{v['error']}`", ""]
    body = []
    for r in v["runs"]:
        label = f"{r['side']} (r{r['round']})"
        if not r.get("ran"):
            body.append([label, f"not measured: {r['reason']}", *[""] * 9])
            continue
        body.append([label, f"{r['samples_per_s']:,.0f}",
                     f"{100 * r['achieved_over_offered']:.1f} %",
                     f"{r['gateway_cpu_s_per_1000_samples']:.4f}",
                     f"{r['gateway_cpu_pct_of_core']:.1f}", f"{r['latency_ms_p50']:.1f}",
                     f"{r['latency_ms_p99']:.1f}", f"{r['envelopes_per_s']:.1f}",
                     f"{r['state_per_s']:.1f}",
                     f"{r['gateway_rss_mb_steady']:.1f}", f"{r['other_load_pct_of_core']:.0f}"])
    out = [title, "",
           f"bench/vs_peer.py: before = `{v['before'][:10]}` (exported with `git archive`), "
           f"after = this tree, peer = ThingsBoard IoT Gateway (bench/peer.py); "
           f"{v['machines']} Modbus machines x 40 points every 1 s, {v['window_s']:.0f} s "
           "window per row, one simulator process and broker, the order rotating per round. "
           "Messages/s: the gateway's telemetry envelopes (its state envelopes in the next "
           "column come on top), the peer's MQTT messages. `after, real-time machines`: this "
           "tree against a second simulator whose machines run at real time, so part "
           "counters (and `state` envelopes) change every 30-60 s, not every second. "
           "`after` polls on `gateway.poll_slots: auto` (2 phase slots at 50 machines), "
           "`after, poll_slots 1` all machines at one phase.", "",
           "| run | samples/s | achieved | CPU s / 1,000 | CPU % core | p50 ms | p99 ms | "
           "messages/s | state env/s | RSS MB | other load % core |",
           "|---|---|---|---|---|---|---|---|---|---|---|",
           *("| " + " | ".join(str(c) for c in row) + " |" for row in body), ""]
    ra = v.get("ratios", {})
    for n, per in sorted(ra.get("per_round", {}).items()):
        out.append(f"- round {n}: " + ", ".join(f"{k.replace('_over_', ' / ')} {x:.2f}x"
                                                for k, x in per.items()))
    for key in [f"{a}_over_{b}" for a, b in PAIRS]:
        if key in ra:
            out.append(f"- **{key.replace('_over_', ' / ')}: {ra[key]:.2f}x** (median over "
                       "rounds)")
    return [*out, ""]
