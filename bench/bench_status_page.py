"""What the status page and /metrics cost a gateway polling 200 Modbus machines.

One run, four gateways in turn against the same simulators and broker, CPU of the gateway
process alone (utime+stime from /proc) over the same window:

- `web off`: `gateway.web.enabled: false`, the baseline;
- `nobody looking`: the page served, no client at all;
- `prometheus`: a scrape of /metrics every 15 s (Prometheus' default interval), no page;
- `one browser`: the plant page's live stream (Server-Sent Events, every
  `refresh_seconds` = 2 s, what an open browser tab pulls; its rendering costs the browser,
  not the gateway) plus the 15 s scrape.

The cost is each scenario's CPU minus the baseline's, as a share of the scenario's CPU.
Machines share this host with other work, so the spread between runs is printed beside
the figures; it asserts nothing. Because that difference drowns in the noise of a shared
host, the run also takes unit costs from the last gateway: the CPU its event-loop thread
spent on each /metrics scrape and each plant page (the `Server-Timing` header the page
sends), projected onto the 15 s scrape and the 2 s refresh as a share of the gateway's CPU.

    .venv/bin/python -m bench.bench_status_page [--machines 200] [--window 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .gateway_load import LoadSpec, plant_yaml
from .processes import (
    HOST,
    Child,
    ProcessGroup,
    cpu_seconds,
    free_port,
    start_mosquitto,
    start_simulators,
    terminate_on_sigterm,
)

SCRAPE_EVERY = 15.0
REFRESH = 2.0  # gateway.web.refresh_seconds default
SCENARIOS = ("web off", "nobody looking", "prometheus", "one browser")


@dataclass
class Clients:
    """The scenario's HTTP clients, run in threads during the window."""

    url: str
    scrape: bool
    browse: bool
    stop: threading.Event = field(default_factory=threading.Event)
    events: int = 0
    scrapes: int = 0

    def _scraper(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                http.get(self.url + "metrics").raise_for_status()
                self.scrapes += 1
                self.stop.wait(SCRAPE_EVERY)

    def _browser(self) -> None:
        with (httpx.Client(timeout=None) as http,
              http.stream("GET", self.url + "events?page=plant") as r):
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.events += 1
                if self.stop.is_set():
                    return

    def start(self) -> list[threading.Thread]:
        threads = []
        if self.scrape:
            threads.append(threading.Thread(target=self._scraper, daemon=True))
        if self.browse:
            threads.append(threading.Thread(target=self._browser, daemon=True))
        for t in threads:
            t.start()
        return threads


def _up(url: str) -> int:
    try:
        text = httpx.get(url + "metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    return sum(1 for line in text.splitlines()
               if line.startswith("edge_gateway_device_up{") and line.endswith(" 1.0"))


def _run_one(group: ProcessGroup, name: str, spec: LoadSpec, base: int, broker: int, *,
             settle: float, round_no: int) -> dict[str, float]:
    tag = f"{name.replace(' ', '-')}-{round_no}"
    state = group.workdir / f"state-{tag}"
    state.mkdir()
    port = free_port()
    enabled = name != "web off"
    plant = group.workdir / f"plant-{tag}.yaml"
    text = plant_yaml(spec, base, state)
    web = f"web: {{enabled: {str(enabled).lower()}, port: {port}}}"
    plant.write_text(text.replace("web: {port: 0}", web, 1))
    gw: Child = group.spawn(
        f"gateway-{tag}",
        [sys.executable, "-m", "edge.cli", "--log-level", "warning", "--log-format", "json",
         "run", "-c", str(plant), "--broker", f"mqtt://{HOST}:{broker}", "--no-console"])
    url = f"http://{HOST}:{port}/"
    # the baseline has no page to ask: a sibling gateway with the page says when all are up
    deadline = time.monotonic() + 60 + spec.machines * 0.2
    while enabled and _up(url) < spec.machines:
        if not gw.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: machines not up:\n{gw.log_tail()}")
        time.sleep(0.2)
    time.sleep(settle if enabled else settle + 10.0)
    clients = Clients(url, scrape=name in ("prometheus", "one browser"),
                      browse=name == "one browser")
    threads = clients.start()
    cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
    time.sleep(spec.window)
    cpu1, t1 = cpu_seconds(gw.pid), time.monotonic()
    clients.stop.set()
    for t in threads:
        t.join(timeout=5)
    figures = {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "events": clients.events,
               "scrapes": clients.scrapes}
    if name == "one browser":
        figures.update(_unit_costs(gw.pid, url))
    group.stop(gw)
    return figures


def _unit_costs(pid: int, url: str, n: int = 30) -> dict[str, float]:
    """CPU per request as the gateway measures it for its own event-loop thread
    (`Server-Timing: cpu;dur=ms`): exact whatever else runs on the host. The plant page
    builds every cell the live stream sends, plus the HTML, so it bounds one live update.
    The gateway's idle CPU is measured over 5 s just before, for the share."""
    c0, w0 = cpu_seconds(pid), time.monotonic()
    time.sleep(5.0)
    out = {"idle_cpu_pct": 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - w0)}
    with httpx.Client(timeout=30) as http:
        for key, path in (("ms_per_scrape", "metrics"), ("ms_per_plant_page", "")):
            spent = []
            for _ in range(n):
                r = http.get(url + path)
                r.raise_for_status()
                spent.append(float(r.headers["Server-Timing"].split("dur=")[1]))
            out[key] = sum(spent) / n
    return out


def run(machines: int, window: float, rounds: int, workdir: Path) -> dict[str, object]:
    spec = LoadSpec(machines=machines, window=window)
    group = ProcessGroup(workdir)
    try:
        _, broker = start_mosquitto(group)
        _, base = start_simulators(group, machines)
        samples: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
        for round_no in range(rounds):
            for name in SCENARIOS:
                figures = _run_one(group, name, spec, base, broker, settle=5.0,
                                   round_no=round_no)
                print(f"round {round_no + 1} {name}: {figures}", file=sys.stderr, flush=True)
                samples[name].append(figures)
    finally:
        group.close()
    result: dict[str, object] = {"machines": machines, "window_s": window, "rounds": rounds}
    base_cpu = sum(r["cpu_pct"] for r in samples["web off"]) / rounds
    rows = {}
    for name in SCENARIOS:
        cpus = [r["cpu_pct"] for r in samples[name]]
        cpu = sum(cpus) / rounds
        rows[name] = {
            "gateway_cpu_pct": round(cpu, 2),
            "spread_pct": round(max(cpus) - min(cpus), 2),
            "cost_share_pct": round(100 * (cpu - base_cpu) / cpu, 1) if cpu else None,
            "live_updates": sum(r["events"] for r in samples[name]),
            "scrapes": sum(r["scrapes"] for r in samples[name]),
        }
    result["scenarios"] = rows
    units = [r for r in samples["one browser"] if "ms_per_scrape" in r]
    if units:
        idle = sum(r["idle_cpu_pct"] for r in units) / len(units)
        scrape = sum(r["ms_per_scrape"] for r in units) / len(units)
        page = sum(r["ms_per_plant_page"] for r in units) / len(units)
        # % of one core: ms per request / interval in ms x 100
        scrape_pct, page_pct = scrape / (SCRAPE_EVERY * 10), page / (REFRESH * 10)
        result["unit_costs"] = {
            "gateway_idle_cpu_pct": round(idle, 2),
            "ms_cpu_per_scrape": round(scrape, 2),
            "ms_cpu_per_plant_page": round(page, 2),
            "scrape_every_15s_share_pct": round(100 * scrape_pct / (idle + scrape_pct), 2),
            "browser_every_2s_plus_scrape_share_pct": round(
                100 * (page_pct + scrape_pct) / (idle + page_pct + scrape_pct), 2),
        }
    return result


def main() -> int:
    terminate_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=200)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=1, help="repeat every scenario")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        result = run(args.machines, args.window, args.rounds, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
