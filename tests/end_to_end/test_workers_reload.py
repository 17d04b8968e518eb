"""`run --workers 2` refusals and reloads against a real Mosquitto (README "Every core").

Why: what a worker pool promises beyond one process is kept here: a plant that must run
as one process is refused at start with one clear line, not N Sparkplug sessions; SIGHUP
reaches every worker (a machine added to the YAML starts in the worker it hashes to,
the other worker's chains carry on without a restart); and `keys rotate` + SIGHUP makes the
parent republish the JWKS before the workers sign with the new key.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto, Received
from e2e import ROOT, GatewayProcess, huge_invalid_yaml, plant_yaml, verified_body, wait_for
from test_workers import chain

from edge.config.workers import worker_of

KEYS = "edge/plant-a/gw-1/keys"


def topic(machine: str) -> str:
    return f"edge/plant-a/hall-1/line-1/{machine}/telemetry"


@pytest.mark.parametrize("how", ["yaml", "flag"])
def test_sparkplug_with_two_workers_is_refused_at_start(tmp_path: Path, how: str) -> None:
    extra = ", workers: 2" if how == "yaml" else ""
    dest = ('  - {id: sp, url: "mqtt://127.0.0.1:1", format: sparkplug_b,'
            " sparkplug: {group_id: line-a}}\n")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [1502], 1, destinations=dest,
                                gateway_extra=extra))
    args = ["--workers", "2"] if how == "flag" else []
    run = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(plant), "--no-console", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert run.returncode == 2  # invalid input (README: exit codes)
    # the JSON log records aside (a warning that the machines are simulated): one line
    lines = [ln for ln in run.stderr.strip().splitlines() if not ln.startswith("{")]
    assert "Traceback" not in run.stderr + run.stdout
    if how == "yaml":  # the file is wrong: `validate` and `run` name the line (audit round 3)
        check = subprocess.run([sys.executable, "-m", "edge.cli", "validate", str(plant)],
                               capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert check.returncode == 2 and check.stderr.splitlines()[0] == lines[0]
        assert lines[0].startswith(f"{plant}:") and ": gateway.workers: 2 worker" in lines[0]
        assert "destination 'sp' is sparkplug_b" in lines[0] and lines[1:] == [
            "1 problem(s) found"], run.stderr
    else:
        assert len(lines) == 1, run.stderr
        assert "destination sp" in lines[0] and "sparkplug_b" in lines[0]
        assert "--workers 1" in lines[0]
    assert not (tmp_path / "state" / "worker-0").exists()  # no worker was started


def _jwks(col: Collector) -> dict[str, Any]:
    keys = [m for m in col.snapshot() if m.topic == KEYS]
    return json.loads(keys[-1].payload) if keys else {"keys": []}


def _kid(msg: Received) -> str:
    protected = json.loads(msg.payload)["protected"]
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    return str(header["kid"])


@pytest.mark.slow
def test_two_workers_sighup_adds_machine_and_rotates_key(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> None:
    state = tmp_path / "state"
    ports = [free_port() for _ in range(5)]
    # the simulators of all five machines run beside the gateway from the start (a
    # gateway's --with-simulators serves only the machines of its first configuration)
    sims = tmp_path / "simulators.yaml"
    sims.write_text(plant_yaml(state, ports, mosquitto.port))
    simulate = subprocess.Popen([sys.executable, "-m", "edge.cli", "simulate", str(sims)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(state, ports[:4], mosquitto.port))
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    gw = GatewayProcess(plant, "--workers", "2", simulators=False).start()

    def telemetry(machine: str) -> list[Received]:
        return [m for m in col.snapshot() if m.topic == topic(machine)]

    def last_seq(machine: str) -> int:
        msgs = telemetry(machine)
        return int(verified_body(msgs[-1].payload, _jwks(col), msgs[-1].topic)["seq"])

    try:
        running = ("m1", "m2", "m3", "m4")
        # the JWKS comes on the parent's own link, the telemetry on the workers': the
        # signatures below are checked against it, so it is awaited too
        wait_for(lambda: all(len(telemetry(m)) >= 3 for m in running)
                 and bool(_jwks(col)["keys"]), 60, "telemetry of every machine and the JWKS")
        joins = worker_of("m5", 2)  # m5 joins a worker that serves machines already
        assert {worker_of(m, 2) for m in running} == {0, 1}
        assert any(worker_of(m, 2) == joins for m in running)
        started = len(gw.events("worker_started"))
        assert started == 2

        # a machine added to the YAML: SIGHUP starts it in its worker, the rest go on
        before = {m: last_seq(m) for m in running}
        plant.write_text(plant_yaml(state, ports, mosquitto.port))
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len(telemetry("m5")) >= 3, 60, "telemetry of the added machine")
        body = verified_body(telemetry("m5")[0].payload, _jwks(col), topic("m5"))
        assert body["seq"] == 1 and body["gateway"] == "gw-1"
        wait_for(lambda: all(last_seq(m) >= before[m] + 3 for m in running), 30,
                 "the running machines' chains continuing")
        [reloaded] = [e for e in gw.events("reloaded") if e.get("worker") == joins]
        assert reloaded["devices_started"] == ["m5"] and not reloaded["devices_stopped"]
        assert len(gw.events("worker_started")) == started  # no worker was restarted
        assert not gw.events("worker_exited_restarting")

        # keys rotate + SIGHUP: the JWKS with the new kid, then envelopes signed with it
        old_kids = {k["kid"] for k in _jwks(col)["keys"]}
        assert len(old_kids) == 1
        rotate = subprocess.run(
            [sys.executable, "-m", "edge.cli", "keys", "rotate", "-c", str(plant)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
        assert "new kid" in rotate.stdout
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len({k["kid"] for k in _jwks(col)["keys"]} - old_kids) == 1, 30,
                 "the JWKS with the new kid")
        [new_kid] = {k["kid"] for k in _jwks(col)["keys"]} - old_kids
        assert new_kid in rotate.stdout
        wait_for(lambda: all(any(_kid(m) == new_kid for m in telemetry(machine))
                             for machine in (*running, "m5")), 30,
                 "every worker signing with the new key")
        # a verifier never meets the new kid before a JWKS that holds it
        msgs = col.snapshot()
        first_jwks = next(i for i, m in enumerate(msgs) if m.topic == KEYS
                          and new_kid in {k["kid"] for k in json.loads(m.payload)["keys"]})
        first_signed = next(i for i, m in enumerate(msgs)
                            if m.topic.endswith("/telemetry") and _kid(m) == new_kid)
        assert first_jwks < first_signed
        jwks = _jwks(col)
        for machine in (*running, "m5"):  # whole chains across reload and new key
            assert chain(telemetry(machine), jwks)[0]["seq"] == 1, machine
        assert len(gw.events("worker_started")) == started

        gw.signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        gw.kill()
        simulate.kill()
        simulate.wait()


@pytest.mark.slow
def test_sighup_while_the_workers_start_is_applied_by_each_not_fatal(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
) -> None:
    """A SIGHUP at the earliest moment: the parent has spawned its workers (and told
    systemd READY, so `systemctl reload` goes through) but they are still importing and
    loading the YAML, seconds on a busy box. SIGHUP's default action ended such a worker
    (restarted a second later, its reload lost with it). Each worker now starts with
    SIGHUP blocked and applies the one that waited once its handler is in place."""
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port))
    gw = GatewayProcess(plant, "--workers", "2").start()
    try:
        wait_for(lambda: len(gw.events("worker_started")) == 2, 60, "both workers spawned")
        gw.signal(signal.SIGHUP)
        # still starting: neither worker has got as far as its gateway yet
        assert not [e for e in gw.events("gateway_started") if "worker" in e]
        def reloaded_by() -> set[Any]:
            return {e.get("worker") for e in gw.events("reloaded")}

        # the parent's `reloaded` (no `worker`) waits for both workers' outcomes
        wait_for(lambda: None in reloaded_by() or bool(gw.events("worker_exited_restarting")),
                 90, "each worker's reload")
        assert not gw.events("worker_exited_restarting")
        assert reloaded_by() == {None, 0, 1}
        [pooled] = [e for e in gw.events("reloaded") if "worker" not in e]
        assert pooled["pool"] == ["applied by workers 0, 1"]
        assert len(gw.events("worker_started")) == 2  # no worker was restarted
        gw.stop()
    finally:
        gw.kill()


@pytest.mark.slow
def test_sigterm_during_the_parse_of_a_huge_file_stops_the_pool_within_5_s(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
) -> None:
    """The pool's parent parses a SIGHUP's file (before its workers do) in a thread it does
    not wait for at exit: it used to serve no SIGTERM until that parse ended (minutes for a
    4 MiB file of schema errors on a loaded host)."""
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port))
    gw = GatewayProcess(plant, "--workers", "2").start()
    try:
        wait_for(lambda: len(gw.events("device_connected")) == 2
                 and {e.get("worker") for e in gw.events("gateway_started")} >= {0, 1}, 60,
                 "both workers started, both machines up")
        plant.write_text(huge_invalid_yaml())
        gw.signal(signal.SIGHUP)  # the parent reads the file first, then signals its workers
        wait_for(lambda: bool(gw.events("reload_started")), 30, "the parent reading the file")
        assert not gw.events("reload_rejected_keeping_running_config"), (
            "the file was parsed before the SIGTERM: it no longer tests a stop during a parse"
        )
        took = gw.stop_timed(timeout=30)  # a hang would be the parse's 121 s
        assert took < 5, f"stopped {took:.1f} s after SIGTERM"  # ~1 s measured
        assert not gw.events("workers_not_stopped_killing")
    finally:
        gw.kill()
