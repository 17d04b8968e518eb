"""`python -m bench [--quick]`: run every benchmark, print the table, write the report.

Full mode (a few minutes) measures 10, 50 and 200 machines and writes `bench/report.md`
(committed) and `bench/results/latest.json` (git-ignored). `--quick` (seconds; what CI's
smoke test runs) measures 10 machines with short windows and writes
`bench/results/latest.json` and `bench/results/report-quick.md`, leaving the committed
report alone. Exit status: 0 when every figure was measured, 1 otherwise (the processes'
logs are then kept and their directory printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import (
    ceilings,
    failover,
    hotpath,
    many_machines,
    modbus_plan,
    peer,
    plots,
    profiling,
    queries,
    rabbitmq_failover,
    report,
    s7_plan,
    scaling,
    scenarios,
    sealing,
    vs_peer,
    writer_stall,
)
from .gateway_load import LoadSpec, run_load
from .processes import (
    ProcessGroup,
    mosquitto_binary,
    mosquitto_version,
    start_mosquitto,
    terminate_on_sigterm,
)

HERE = Path(__file__).resolve().parent


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> str:
    """The commit measured (read-only git), `+dirty` when the work tree has changes."""
    import subprocess  # noqa: PLC0415

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                              capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=HERE.parent, capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def meta(mode: str) -> dict[str, Any]:
    return {
        "git": _git(),
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pymodbus": _version("pymodbus"),
        "paho": _version("paho-mqtt"),
        "cryptography": _version("cryptography"),
        "mosquitto": mosquitto_version(mosquitto_binary()),
        "gateway": _version("edge-gateway"),
    }


SWITCHES: tuple[tuple[str, bool | None, str], ...] = (
    ("peer", None, "ThingsBoard IoT Gateway on the headline Modbus scenario (default: in full "
     "mode; needs bench/.peer-venv, `python -m bench.peer --install`)"),
    ("opcua", True, "scenario (b), OPC UA 2,000 items x 10 Hz (bench/opcua_load.py)"),
    ("sealing", None, "issue 17 sealing before/after and batch sizes, 50 machines "
     "(bench/sealing.py; default: in full mode)"),
    ("failover", None, "issue 17 broker failover: two Mosquitto nodes, the gateway's killed "
     "(bench/failover.py; default: in full mode)"),
    ("rabbitmq", None, "the failover run on a three-node RabbitMQ cluster (bench/"
     "rabbitmq_failover.py; default: in full mode when installed)"),
    ("hotpath", False, "issue 17 per-sample path: a before revision's gateway alternating "
     "with this tree's, 3 rounds, ~12 min (bench/hotpath.py; default: off)"),
    ("writer", None, "issue 17 item 2: loop lag and CPU with the SQLite writes inline vs on "
     "their writer threads (bench/writer_stall.py; default: in full mode)"),
    ("workers", False, "issue 17 items 3/6: gateway.workers 1..cores at 50/200/500 machines "
     "with the pymodbus ceiling, ~5.5 min (bench/scaling.py; default: off)"),
    ("vspeer", False, "issue 17 CPU target: a before revision's gateway, this tree's and "
     "ThingsBoard's at 50 machines, 3 rotating rounds, ~10 min (bench/vs_peer.py; "
     "default: off)"),
    ("queries", False, "issue 17 item 3: health / one machine's state / whole-plant state "
     "queries at workers 1 and 2 while polling 50 machines, two brokers, ~6 min (bench/queries.py; "
     "default: off)"),
    ("permachine", False, "issue 17: 500 machines at 1 s against 50 at 100 ms, before/after, "
     "1 and 2 workers, ~20 min (bench/many_machines.py; default: off)"),
)
"""The sections a run may add or leave out (`--name` / `--no-name`): name, default (None:
decided by the mode, see `run`), help. One table, so the optional sections and their
defaults read in one place."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run (10 machines, short windows, no profile)")
    p.add_argument("--machines", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="gateway runs, e.g. 10,50,200 (default: 10,50,200; quick: 10)")
    p.add_argument("--window", type=float, default=None,
                   help="seconds measured per gateway run (default 20-30; quick 4)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="py-spy the gateway after the last (largest) run's window (default: in "
                        "full mode, when py-spy is installed)")
    p.add_argument("--results-dir", type=Path, default=HERE / "results",
                   help="where latest.json goes (default bench/results)")
    p.add_argument("--report", type=Path, default=None,
                   help="Markdown report (default: bench/report.md; quick: "
                        "<results-dir>/report-quick.md)")
    p.add_argument("--render", type=Path, metavar="JSON", default=None,
                   help="measure nothing: re-render the table and the Markdown report from a "
                        "results file (after editing report.py)")
    for name, default, text in SWITCHES:
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default,
                       help=text)
    p.add_argument("--only", choices=sorted(SECTIONS), action="append", default=None,
                   help="run only this section (repeatable); writes <results-dir>/"
                        "latest-only.json and report-only.md, leaving the report alone")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep configs and process logs (kept anyway on failure)")
    return p


def _specs(args: argparse.Namespace) -> tuple[list[LoadSpec], int]:
    """Gateway runs and the headline run (whose simulator the ceilings read from)."""
    if args.quick:
        machines = args.machines or [10]
        window = args.window or 4.0
        specs = [LoadSpec(m, window=window, settle=1.0, grace=2.0) for m in machines]
    else:
        machines = args.machines or [10, 50, 125, 200]  # 125 x 40 = the 5,000 samples/s target
        specs = [LoadSpec(m, window=args.window or (20.0 if m <= 10 else 30.0))
                 for m in machines]
    headline = 50 if 50 in machines else machines[0]
    return specs, headline


def _ceilings(quick: bool, base_port: int, machines: int, broker_port: int,
              payload: bytes) -> dict[str, Any]:
    seconds = 0.5 if quick else 3.0
    result: dict[str, Any] = {"against_machines": machines}
    print(f"  ceilings: pymodbus against the {machines}-machine simulator ...", flush=True)
    result["modbus"] = ceilings.modbus(base_port, machines, seconds, clients=10)
    print("  ceilings: paho QoS 1 publishes ...", flush=True)
    result["mqtt"] = ceilings.mqtt_publish(broker_port, payload,
                                           messages=2_000 if quick else 20_000)
    print("  ceilings: Ed25519 / RFC 8785 ...", flush=True)
    result["signing"] = ceilings.signing(0.3 if quick else 2.0)
    print("  ceilings: outbox ...", flush=True)
    try:
        result["outbox"] = ceilings.outbox(payload, 0.3 if quick else 2.0)
    except Exception as exc:  # the outbox API is young; its figure is optional
        result["outbox"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def _guarded(what: str, fn: Any, *a: Any, **kw: Any) -> dict[str, Any]:
    """Run one optional figure; a failure is recorded in the results, never fatal."""
    t = time.monotonic()
    try:
        out = fn(*a, **kw)
    except Exception as exc:
        traceback.print_exc()
        print(f"  {what} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    if not isinstance(out, dict):
        return {"error": f"{what} returned {type(out).__name__}, not a dict"}
    result: dict[str, Any] = out
    result.setdefault("bench_seconds", round(time.monotonic() - t, 1))
    return result


def _opcua(quick: bool) -> dict[str, Any]:
    try:
        from . import opcua_load  # noqa: PLC0415 - written separately; may be absent
    except ImportError as exc:
        return {"error": f"bench/opcua_load.py not importable: {exc}"}
    return dict(opcua_load.run(quick))


def _sealing(group: ProcessGroup, broker_port: int, quick: bool) -> dict[str, Any]:
    return sealing.run(group, broker_port, quick)


SECTIONS: dict[str, Any] = {"sealing": _sealing, "failover": failover.run,
                             "rabbitmq": rabbitmq_failover.run, "hotpath": hotpath.run,
                             "writer": writer_stall.run, "workers": scaling.run,
                             "vspeer": vs_peer.run, "queries": queries.run,
                             "permachine": many_machines.run}


def run_only(args: argparse.Namespace, group: ProcessGroup) -> dict[str, Any]:
    """Just the named sections, e.g. to measure one change without the whole bench."""
    mode = "quick" if args.quick else "full"
    results: dict[str, Any] = {"schema": 2, "mode": mode, "meta": meta(mode)}
    _, broker_port = start_mosquitto(group)
    for name in args.only:
        print(f"{name} ...", flush=True)
        results[name] = _guarded(name, SECTIONS[name], group, broker_port, args.quick)
    return results


def run(args: argparse.Namespace, group: ProcessGroup) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    t_start = time.monotonic()
    results: dict[str, Any] = {"schema": 2, "mode": mode, "meta": meta(mode)}

    print("1. Modbus read plan, 500 points ...", flush=True)
    results["modbus_plan"] = modbus_plan.run(args.quick)
    print("1b. S7 read plan, 500 points, and python-snap7's bare client ...", flush=True)
    results["s7_plan"] = _guarded("s7_plan", s7_plan.run, args.quick)

    _, broker_port = start_mosquitto(group)
    specs, headline = _specs(args)
    profile = (not args.quick) if args.profile is None else args.profile
    with_peer = (not args.quick) if args.peer is None else args.peer
    results["peer"] = {"ran": False, "reason": "not run (--quick; `--peer` includes it)"}
    runs: list[dict[str, Any]] = []
    for spec in specs:
        print(f"2a. gateway, {spec.machines} Modbus machines x {spec.points} points, "
              f"{spec.window:.0f} s window ...", flush=True)
        is_headline = spec.machines == headline and "ceilings" not in results
        result, (sim, base), payload = run_load(
            group, broker_port, spec,
            profile_seconds=10.0 if (profile and spec is specs[-1]) else 0.0)
        runs.append(result)
        print(f"  {result['samples_per_s']:,.0f} samples/s "
              f"({100 * result['achieved_over_offered']:.1f} % of offered), "
              f"CPU {result['gateway_cpu_pct_of_core']:.1f} % of a core, "
              f"RSS {result['gateway_rss_mb_steady']:.0f} MB, "
              f"p99 {result['latency_ms_p99']:.0f} ms", flush=True)
        if is_headline:
            print("3. raw ceilings ...", flush=True)
            results["ceilings"] = _ceilings(args.quick, base, spec.machines, broker_port,
                                            payload)
            if not args.quick:
                sat = LoadSpec(spec.machines, interval=0.05, window=15.0)
                print(f"2a'. saturation: {spec.machines} machines polled every "
                      f"{sat.interval} s (offered {sat.offered:,.0f} samples/s) ...", flush=True)
                results["saturation"] = _guarded(
                    "saturation", lambda s, sims: run_load(group, broker_port, s,
                                                           simulators=sims)[0],
                    sat, (sim, base))
                s_ = results["saturation"]
                if "samples_per_s" in s_:
                    print(f"  {s_['samples_per_s']:,.0f} samples/s "
                          f"({100 * s_['achieved_over_offered']:.1f} % of offered), CPU "
                          f"{s_['gateway_cpu_pct_of_core']:.0f} % of a core", flush=True)
            if with_peer:
                print(f"4. peer: ThingsBoard IoT Gateway, {spec.machines} machines x "
                      f"{spec.points} points, same simulator and broker ...", flush=True)
                results["peer"] = _guarded(
                    "peer", peer.run, group, broker_port, sim.pid, base, machines=spec.machines,
                    window=4.0 if args.quick else 30.0, settle=1.0 if args.quick else 3.0,
                    points=spec.points)
                p = results["peer"]
                print("  " + (f"{p['samples_per_s']:,.0f} points/s, "
                              f"CPU {p['cpu_s_per_1000_samples']:.3f} s / 1,000, "
                              f"RSS {p['rss_mb_steady']:.0f} MB" if p.get("ran")
                              else f"not measured: {p.get('reason') or p.get('error')}"),
                      flush=True)
        group.stop(sim)
    results["gateway_runs"] = runs

    quick = args.quick
    n_mt = 3 if quick else 50
    print(f"2c. MTConnect agent stream, {n_mt} devices on one simulated agent ...", flush=True)
    results["scenarios"] = {
        "mtconnect": _guarded("mtconnect", scenarios.mtconnect, group, broker_port, n_mt,
                              window=2.0 if quick else 20.0, settle=0.5 if quick else 3.0),
    }
    print("2d. mixed demo plant (config/demo-plant.yaml, every simulator) ...", flush=True)
    results["scenarios"]["mixed"] = _guarded(
        "mixed", scenarios.mixed, group, broker_port, window=2.0 if quick else 20.0,
        settle=0.5 if quick else 3.0)
    for name, sc in results["scenarios"].items():
        if "error" not in sc:
            print(f"  {name}: {sc['samples_per_s']:,.0f} samples/s, "
                  f"CPU {sc['gateway_cpu_s_per_1000_samples']:.3f} s / 1,000, "
                  f"RSS {sc['gateway_rss_mb_steady']:.0f} MB, p99 {sc['latency_ms_p99']:.0f} ms",
                  flush=True)
    if args.opcua:
        print("2b. OPC UA subscription load (bench/opcua_load.py) ...", flush=True)
        results["opcua"] = _guarded("opcua", _opcua, quick)
    else:
        results["opcua"] = {"error": "not run (--no-opcua)"}
    for name, section in SECTIONS.items():
        if getattr(args, name) or (getattr(args, name) is None and not args.quick):
            print(f"2e. {name} (issue 17) ...", flush=True)
            results[name] = _guarded(name, section, group, broker_port, args.quick)
    results["ratios"] = report.compute_ratios(results)
    results["duration_s"] = time.monotonic() - t_start
    results["targets"] = report.targets(results)
    return results


def _keep_profile(results: dict[str, Any], results_dir: Path) -> None:
    """Copy py-spy's raw stacks out of the work dir (it is deleted) into results/."""
    for g in results["gateway_runs"]:
        prof = g.get("profile") or {}
        raw = Path(prof.get("raw", ""))
        if prof.get("available") and raw.is_file():
            results_dir.mkdir(parents=True, exist_ok=True)
            dest = results_dir / raw.name
            shutil.copyfile(raw, dest)
            prof["raw"] = str(dest)


def _close(group: ProcessGroup, workdir: Path, *, keep: bool) -> None:
    """Stop everything the run started; its configs and logs stay when asked or when it
    failed, since they are what explains a failure."""
    group.close()
    if keep:
        print(f"configs and process logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render is not None:
        import json  # noqa: PLC0415 - only this path reads JSON

        results = json.loads(args.render.read_text())
        for g in results["gateway_runs"]:  # re-summarize a kept py-spy capture
            raw = Path(g.get("profile", {}).get("raw", ""))
            if g.get("profile", {}).get("available") and raw.is_file():
                g["profile"] = profiling.summarize(raw, g["profile"]["seconds"])
        results["ratios"] = report.compute_ratios(results)
        results["targets"] = report.targets(results)
        md = args.report or (args.results_dir / "report-quick.md"
                             if results.get("mode") == "quick" else HERE / "report.md")
        results["plots"] = plots.render(results, md.parent / "plots", relative_to=md.parent)
        report.write(results, args.render, md)
        print(report.console_table(results))
        print(f"\nrewrote {md} from {args.render}")
        return 0
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    group = ProcessGroup(workdir)
    ok = False
    if args.only:
        try:
            results = run_only(args, group)
            out = args.report or args.results_dir / "report-only.md"
            report.write_sections(results, args.results_dir / "latest-only.json", out)
            print(f"wrote {args.results_dir / 'latest-only.json'} and {out}")
            ok = not any("error" in results[n] for n in args.only)
            return 0 if ok else 1
        finally:
            _close(group, workdir, keep=args.keep_workdir or not ok)
    try:
        results = run(args, group)
        _keep_profile(results, args.results_dir)
        md = args.report or (args.results_dir / "report-quick.md" if args.quick
                             else HERE / "report.md")
        results["plots"] = plots.render(results, md.parent / "plots"
                                        if not args.quick else args.results_dir / "plots",
                                        relative_to=md.parent)
        report.write(results, args.results_dir / "latest.json", md)
        print()
        print(report.console_table(results))
        print(f"\nwrote {args.results_dir / 'latest.json'} and {md}")
        ok = True
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        _close(group, workdir, keep=args.keep_workdir or not ok)


if __name__ == "__main__":
    sys.exit(main())
