"""What the status page and /metrics cost a gateway polling 200 Modbus machines.

One process tree (one Mosquitto, one simulator process serving every machine), and a fresh
gateway per run against it, in three arms:

- `web off`: `gateway.web.enabled: false`, the baseline;
- `nobody looking`: the page served, no client at all;
- `one browser`: Debian's headless Chromium on the plant page (its live stream, Server-
  Sent Events every `refresh_seconds` = 2 s) plus one /metrics scrape every 15 s
  (Prometheus' default interval). Rendering costs the browser, not the gateway.

Why this shape: the host is shared, and its other load moves a gateway's CPU by more than
the figure sought. So the arms alternate within each round (the order reversed every other
round, so a drift of the host's load falls on every arm alike), every run waits until all
its machines publish (seen at the broker) and then the same settling time, and CPU is the
gateway process' own utime+stime from /proc over a fixed window. A starved gateway polls
less and so spends less: the telemetry envelopes the broker delivers (one per machine poll)
are counted, and CPU per poll is reported beside CPU %. Per arm the mean and the spread of
the runs are reported; each web arm's cost is the difference of its mean to the baseline's
with 95 % intervals (paired by round, and Welch), and as a share of the arm's mean. When
the interval holds zero, its upper end is the bound one can state. The host's total CPU
use during each window is printed beside it, as a measure of the contention.

The gateway also times its own event-loop thread per request (`Server-Timing: cpu;dur=`),
exact whatever else runs on the host: the last browser run reads it for /metrics and the
plant page, projected onto the 15 s scrape and the 2 s refresh.

    .venv/bin/python -m bench.bench_status_page [--machines 200] [--rounds 5] [--window 40]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .gateway_load import LoadSpec, plant_yaml
from .processes import (
    HOST,
    Child,
    ProcessGroup,
    cpu_seconds,
    free_port,
    start_mosquitto,
    start_simulators,
    system_busy_seconds,
    terminate_on_sigterm,
)

SCRAPE_EVERY = 15.0  # Prometheus' default scrape_interval
REFRESH = 2.0  # gateway.web.refresh_seconds default
OFF, NOBODY, BROWSER = "web off", "nobody looking", "one browser"
ARMS = (OFF, NOBODY, BROWSER)
STARTUP_LIMIT = 240.0  # s from spawn until every machine publishes
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,900"]
# two-sided 95 % quantiles of Student's t by degrees of freedom (df > 30: normal)
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
        10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04}


def t95(df: float) -> float:
    """The quantile for the largest tabled df not above `df` (conservative)."""
    usable = [k for k in _T95 if k <= max(df, 1.0)]
    return _T95[max(usable)] if df <= 30 else 1.96


class PollCounter:
    """Telemetry envelopes the broker delivers: one per machine poll (`polls_per_envelope`
    1), so the work the gateway did. A starved gateway polls less and spends less CPU; CPU
    per poll is the figure that contention does not bend. Counts only (QoS 0, no decoding):
    the bench's own CPU is the host's too."""

    def __init__(self, port: int) -> None:
        self.polls = 0
        self.machines: set[str] = set()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-polls-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe("+/+/+/+/+/telemetry", qos=0)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"cannot subscribe on {HOST}:{port}")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.polls += 1
        self.machines.add(msg.topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Scraper:
    """One GET /metrics now and every 15 s until stopped, as Prometheus does; a scrape that
    fails (a starved gateway answering late) is counted, not fatal."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    scrapes: int = 0
    failed: int = 0

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                try:
                    http.get(self.url + "metrics").raise_for_status()
                    self.scrapes += 1
                except httpx.HTTPError:
                    self.failed += 1
                self.stop.wait(SCRAPE_EVERY)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread


def _established(port: int) -> int:
    """TCP connections to `port` in state ESTABLISHED (/proc/net/tcp, IPv4 loopback): the
    browser's live stream is one, and must stay open for the whole window."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


@dataclass
class Bench:
    group: ProcessGroup
    spec: LoadSpec
    base: int
    broker: int
    warmup: float
    polls: PollCounter

    def run_arm(self, arm: str, tag: str, *, unit_costs: bool = False) -> dict[str, float]:
        state = self.group.workdir / f"state-{tag}"
        state.mkdir()
        port = free_port()
        plant = self.group.workdir / f"plant-{tag}.yaml"
        web = f"web: {{enabled: {str(arm != OFF).lower()}, port: {port}}}"
        plant.write_text(plant_yaml(self.spec, self.base, state).replace("web: {port: 0}", web, 1))
        spawned = time.monotonic()
        gw: Child = self.group.spawn(
            f"gateway-{tag}",
            [sys.executable, "-m", "edge.cli", "--log-level", "warning", "--log-format", "json",
             "run", "-c", str(plant), "--broker", f"mqtt://{HOST}:{self.broker}",
             "--no-console"])
        url = f"http://{HOST}:{port}/"
        self.polls.machines.clear()
        try:
            # every arm alike: all machines publishing (seen at the broker), then the same
            # settling time
            while len(self.polls.machines) < self.spec.machines:
                if not gw.alive() or time.monotonic() > spawned + STARTUP_LIMIT:
                    raise RuntimeError(
                        f"{tag}: {len(self.polls.machines)} of {self.spec.machines} machines "
                        f"publishing after {STARTUP_LIMIT:.0f} s:\n{gw.log_tail()}")
                time.sleep(0.5)
            ready = time.monotonic()
            browser: Child | None = None
            scraper: Scraper | None = None
            if arm == BROWSER:
                # niced: its rendering is not the gateway's cost, and must starve it no more
                # than necessary
                browser = self.group.spawn(
                    f"chromium-{tag}",
                    ["nice", "-n", "10", CHROMIUM, *CHROMIUM_ARGS,
                     f"--user-data-dir={self.group.workdir}/chr-{tag}", url])
                scraper = Scraper(url)
                scraper.start()
            time.sleep(max(0.0, ready + self.warmup - time.monotonic()))
            if not gw.alive():
                raise RuntimeError(f"{tag}: gateway exited:\n{gw.log_tail()}")
            streams0 = _established(port)
            polls0 = self.polls.polls
            cpu0, busy0, t0 = cpu_seconds(gw.pid), system_busy_seconds(), time.monotonic()
            time.sleep(self.spec.window)
            cpu1, busy1, t1 = cpu_seconds(gw.pid), system_busy_seconds(), time.monotonic()
            polls = self.polls.polls - polls0
            figures = {
                "startup_s": ready - spawned,
                "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "polls_per_s": polls / (t1 - t0),
                "cpu_ms_per_poll": 1000 * (cpu1 - cpu0) / max(polls, 1),
                "host_cores_busy": (busy1 - busy0) / (t1 - t0),
            }
            if arm == BROWSER:
                assert scraper is not None and browser is not None
                scraper.stop.set()
                streams = min(streams0, _established(port))
                if streams < 1 or not browser.alive():
                    raise RuntimeError(f"{tag}: the browser's live stream was not open "
                                       f"through the window:\n{browser.log_tail()}")
                figures["scrapes"] = scraper.scrapes
                figures["scrapes_failed"] = scraper.failed
                if unit_costs:
                    figures.update(_unit_costs(url))
                self.group.stop(browser)
            return figures
        finally:
            self.group.stop(gw)


def _unit_costs(url: str, n: int = 30) -> dict[str, float]:
    """CPU per request as the gateway measures it for its own event-loop thread
    (`Server-Timing: cpu;dur=ms`). The plant page builds every cell the live stream sends,
    plus the HTML, so it bounds one live update."""
    out = {}
    with httpx.Client(timeout=30) as http:
        for key, path in (("ms_per_scrape", "metrics"), ("ms_per_plant_page", "")):
            spent = []
            for _ in range(n):
                r = http.get(url + path)
                r.raise_for_status()
                spent.append(float(r.headers["Server-Timing"].split("dur=")[1]))
            out[key] = statistics.median(spent)
    return out


def _arm_summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def _difference(arm: list[float], base: list[float]) -> dict[str, object]:
    """The arm's mean minus the baseline's, with 95 % intervals two ways: paired by round
    (the runs of one round are minutes apart, so a slow drift of the host cancels) and
    Welch (no pairing assumed); and the paired figures as a share of the arm's mean."""
    n = len(arm)
    d = statistics.fmean(arm) - statistics.fmean(base)
    diffs = [a - b for a, b in zip(arm, base, strict=True)]
    paired_half = t95(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    va, vb = statistics.variance(arm) / n, statistics.variance(base) / len(base)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (len(base) - 1)) if se else 1e9
    welch_half = t95(df) * se
    mean_arm = statistics.fmean(arm)
    return {
        "diff": round(d, 4),
        "paired_ci95": [round(d - paired_half, 4), round(d + paired_half, 4)],
        "welch_ci95": [round(d - welch_half, 4), round(d + welch_half, 4)],
        "share_pct": round(100 * d / mean_arm, 1),
        "share_paired_ci95_pct": [round(100 * (d - paired_half) / mean_arm, 1),
                                  round(100 * (d + paired_half) / mean_arm, 1)],
    }


def run(machines: int, window: float, rounds: int, warmup: float,
        workdir: Path) -> dict[str, object]:
    spec = LoadSpec(machines=machines, window=window)
    group = ProcessGroup(workdir)
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    polls: PollCounter | None = None
    try:
        _, broker = start_mosquitto(group)
        _, base = start_simulators(group, machines)
        polls = PollCounter(broker)
        bench = Bench(group, spec, base, broker, warmup, polls)
        for r in range(rounds):
            order = ARMS if r % 2 == 0 else tuple(reversed(ARMS))
            for arm in order:
                last = r == rounds - 1 and arm == BROWSER
                figures = bench.run_arm(arm, f"{arm.replace(' ', '-')}-{r}", unit_costs=last)
                print(f"round {r + 1} {arm}: {json.dumps(figures)}", file=sys.stderr,
                      flush=True)
                runs[arm].append(figures)
    finally:
        if polls is not None:
            polls.close()
        group.close()
    cpu = {a: [f["cpu_pct"] for f in runs[a]] for a in ARMS}
    per_poll = {a: [f["cpu_ms_per_poll"] for f in runs[a]] for a in ARMS}
    result: dict[str, object] = {
        "machines": machines, "window_s": window, "warmup_s": warmup, "rounds": rounds,
        "gateway_cpu_pct_of_core": {a: _arm_summary(cpu[a]) for a in ARMS},
        "gateway_cpu_ms_per_poll": {a: _arm_summary(per_poll[a]) for a in ARMS},
        "polls_per_s": {a: _arm_summary([f["polls_per_s"] for f in runs[a]]) for a in ARMS},
        "host_cores_busy_of_2": {
            a: _arm_summary([f["host_cores_busy"] for f in runs[a]]) for a in ARMS},
        "runs": runs,
    }
    if rounds > 1:
        result["cost_vs_web_off"] = {
            "cpu_pct_of_core": {a: _difference(cpu[a], cpu[OFF]) for a in (NOBODY, BROWSER)},
            "cpu_ms_per_poll": {
                a: _difference(per_poll[a], per_poll[OFF]) for a in (NOBODY, BROWSER)},
        }
    units = runs[BROWSER][-1]
    if "ms_per_scrape" in units:
        idle = statistics.fmean(cpu[NOBODY])
        scrape_pct = units["ms_per_scrape"] / (SCRAPE_EVERY * 10)  # ms per 15 s, % of a core
        page_pct = units["ms_per_plant_page"] / (REFRESH * 10)
        result["unit_costs"] = {
            "ms_cpu_per_scrape": round(units["ms_per_scrape"], 2),
            "ms_cpu_per_plant_page": round(units["ms_per_plant_page"], 2),
            "scrape_every_15s_pct_of_core": round(scrape_pct, 3),
            "page_every_2s_pct_of_core": round(page_pct, 3),
            "browser_plus_scrape_share_pct": round(
                100 * (page_pct + scrape_pct) / (idle + page_pct + scrape_pct), 2),
        }
    return result


def main() -> int:
    terminate_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=200)
    ap.add_argument("--window", type=float, default=40.0, help="seconds of CPU measured")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds from every machine publishing to the window (all arms alike)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of every arm, alternating")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        result = run(args.machines, args.window, args.rounds, args.warmup, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
