"""Changing the worker count loses nothing: `--workers 2`, then 1, then 3, against a real
Mosquitto that the gateway cannot reach until the last run, with simulated Modbus machines.

Why: a machine's worker is a hash of its id modulo the count, and each worker keeps its
machines' chains, pending envelopes and part sequence in its own files. When the count
changes, every machine whose worker changes must take all of that along (the parent moves
it before any worker starts); otherwise its chains restart at seq 1 and what waited in a
file no process opens any more is never sent. So: every envelope sealed in any of the three
runs arrives exactly once, every topic's chain runs from seq 1 without a gap, a reset or a
broken link (the platform kit's verifier judges), and each machine's part sequence runs
1, 2, 3... across the runs.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, proxied_plant, wait_for, wait_for_offline_status

from edge.config.workers import PINNED
from edge.egress.outbox import machine_of
from edge.platform_kit.verifier import ChainChecker, not_gateway_envelopes, verify_envelope

MACHINES = ("m1", "m2", "m3", "m4")  # crc32 % 2: m1-m3 on worker 1, m4 on 0; % 3: 0,0,1,2


def files(state: Path, name: str) -> list[Path]:
    return [p for p in [state / name, *sorted(state.glob(f"worker-*/{name}"))] if p.exists()]


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a store beside the running gateway (read-only; WAL lets us)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:  # deleted since it was listed (moved out)
        return []
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is being created, or the file deleted
        return []
    finally:
        conn.close()


def last_parts(state: Path) -> dict[str, int]:
    """Each machine's highest recorded part_seq, over every part store there is."""
    out: dict[str, int] = {}
    for path in files(state, "parts.sqlite3"):
        for asset, seq in read(path, "SELECT asset, max(part_seq) FROM parts GROUP BY asset"):
            out[str(asset)] = max(out.get(str(asset), 0), int(seq))  # type: ignore[call-overload]
    return out


def pending(state: Path) -> dict[tuple[str, bytes], Path]:
    """Every envelope waiting in any outbox, with the file it waits in."""
    return {(str(t), bytes(p)): path for path in files(state, "outbox.sqlite3")  # type: ignore[arg-type]
            for t, p in read(path, "SELECT topic, payload FROM envelopes")}


def run_until_parts(plant: Path, state: Path, workers: str, more: int) -> list[dict[str, Any]]:
    """A run with `--workers`, until every machine recorded `more` parts in it, then
    SIGTERM (flush, clean stop); its log lines."""
    before = last_parts(state)
    gw = GatewayProcess(plant, "--workers", workers).start()
    try:
        wait_for(lambda: all(last_parts(state).get(m, 0) >= before.get(m, 0) + more
                             for m in MACHINES), 90, f"{more} parts per machine ({workers})")
        gw.signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        gw.kill()
    logs = gw.logs()
    gw.log_path.unlink()  # the next run's lines alone in the file
    return logs


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == event]


@pytest.mark.slow
def test_two_then_one_then_three_workers_lose_nothing(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> None:
    state = tmp_path / "state"
    plant, proxy = proxied_plant(tmp_path, free_port, mosquitto.port,
                                 "max_bytes: 1073741824", machines=len(MACHINES))
    plant.write_text(plant.read_text().replace("    poll_interval: 0.2\n",
                                               "    poll_interval: 0.2\n    part_record: {}\n"))
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")

    logs = run_until_parts(plant, state, "2", 2)  # the broker unreachable: all stays pending
    first = pending(state)
    assert {p.parent.name for p in first.values()} == {"worker-0", "worker-1"}
    assert not named(logs, "machine_state_moved")

    logs = run_until_parts(plant, state, "1", 2)  # 2 -> 1: everything into <state_dir>
    moved = named(logs, "machine_state_moved")
    assert {m for e in moved for m in e["machines"]} == set(MACHINES)
    second = pending(state)
    assert set(first) <= set(second)  # nothing pending was lost in the move
    assert set(second.values()) == {state / "outbox.sqlite3"}
    assert not list(state.glob("worker-*"))  # the old workers' files are gone
    assert (state / PINNED).read_text() == "1\n"

    gw = GatewayProcess(plant, "--workers", "3").start()  # 1 -> 3, then the broker is back
    try:
        wait_for(lambda: len(gw.events("worker_started")) >= 3, 30, "three workers")
        assert {m for e in gw.events("machine_state_moved") for m in e["machines"]} == set(
            MACHINES)
        proxy.start()
        payloads = lambda: {(m.topic, m.payload) for m in col.snapshot()}  # noqa: E731
        wait_for(lambda: set(second) <= payloads(), 90, "every pending envelope delivered")
        # the parent's own link (status, will, keys) backs off on its own: the `offline`
        # awaited below goes out only once it is up too (the workers' links may come first)
        wait_for(lambda: any(m.topic.endswith("/status")
                             and json.loads(m.payload).get("state") == "online"
                             for m in col.snapshot()), 60, "the parent's status online")
        gw.signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
        wait_for_offline_status(col)
    finally:
        gw.kill()
        proxy.stop()
    assert sorted(p.name for p in state.glob("worker-*")) == ["worker-0", "worker-1",
                                                               "worker-2"]

    parts = judge(col)  # once each, chains whole from seq 1, part sequence continued
    assert all(len(parts[m]) >= 4 for m in MACHINES)


def judge(col: Collector) -> dict[str, list[int]]:
    """Every gateway envelope at the collector verified once each, every chain from seq 1
    without a gap, reset or broken link; returns each machine's part_seq values."""
    msgs = [m for m in col.snapshot() if not not_gateway_envelopes(m.topic)]
    jwks = json.loads(next(m for m in col.snapshot() if m.topic.endswith("/keys")).payload)
    checker = ChainChecker()
    for m in msgs:
        checker.feed(m.payload, jwks, topic=m.topic)
    report = checker.report()
    assert report.ok and report.counts["ok"] == len(msgs), report.to_dict()
    first_seq: dict[str, int] = {}
    parts: dict[str, list[int]] = {}
    for m in msgs:
        body = verify_envelope(m.payload, jwks, topic=m.topic)
        first_seq.setdefault(m.topic, body["seq"])
        if m.topic.endswith("/part"):
            parts.setdefault(str(machine_of(m.topic)), []).extend(
                r["part_seq"] for r in body["records"])
    assert set(first_seq.values()) == {1}  # every chain from its start, none restarted
    assert {machine_of(t) for t in first_seq} == set(MACHINES)
    for machine in MACHINES:
        assert parts[machine] == list(range(1, len(parts[machine]) + 1)), machine
    return parts


@pytest.mark.slow
def test_sighup_with_another_worker_count_restarts_the_pool(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> None:
    """`gateway.workers` 2 -> 3 -> 1 -> 2 by SIGHUP, the broker reachable throughout: the
    same process stops its workers, or itself (flush), moves the machines and starts the
    new pool (or the one process)."""
    state = tmp_path / "state"
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(state, [free_port() for _ in MACHINES], mosquitto.port,
                      gateway_extra=", workers: 2").replace(
        "    poll_interval: 0.2\n", "    poll_interval: 0.2\n    part_record: {}\n")
    plant.write_text(text)
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")

    def status() -> dict[str, Any]:
        found = [json.loads(m.payload) for m in col.snapshot() if m.topic.endswith("/status")]
        return found[-1] if found else {}

    def telemetry(machine: str) -> int:
        return sum(m.topic.endswith(f"/{machine}/telemetry") for m in col.snapshot())

    def more_telemetry(what: str) -> None:
        seen = {m: telemetry(m) for m in MACHINES}
        wait_for(lambda: all(telemetry(m) >= seen[m] + 5 for m in MACHINES), 60, what)

    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: len(status().get("workers", [])) == 2, 30, "two workers")
        more_telemetry("telemetry from two workers")
        before = last_parts(state)
        wait_for(lambda: all(last_parts(state).get(m, 0) >= 1 for m in MACHINES), 60,
                 "a part per machine")

        plant.write_text(text.replace("workers: 2", "workers: 3"))
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len(gw.events("workers_changed_restarting")) == 1, 30, "the change")
        wait_for(lambda: len(status().get("workers", [])) == 3
                 and all(w["alive"] for w in status()["workers"]), 60, "three workers")
        more_telemetry("telemetry from three workers")
        assert (state / "workers").read_text() == "3\n"

        plant.write_text(text.replace("workers: 2", "workers: 1"))
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len(gw.events("workers_changed_restarting")) == 2, 30, "the change")
        wait_for(lambda: not list(state.glob("worker-*")), 60, "one process")
        more_telemetry("telemetry from one process")

        plant.write_text(text)  # and back to two: the one process becomes a pool
        gw.signal(signal.SIGHUP)
        wait_for(lambda: len(gw.events("workers_changed_restarting")) == 3, 30, "the change")
        wait_for(lambda: len(status().get("workers", [])) == 2
                 and all(w["alive"] for w in status()["workers"]), 60, "two workers again")
        more_telemetry("telemetry from two workers again")
        assert gw.proc is not None and gw.proc.poll() is None  # one process all along
        changes = [(e["running"], e["workers"]) for e in gw.events("workers_changed_restarting")]
        assert changes == [(2, 3), (3, 1), (1, 2)]
        assert {m for e in gw.events("machine_state_moved") for m in e["machines"]} == set(
            MACHINES)
        gw.signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
        wait_for_offline_status(col)
    finally:
        gw.kill()
    parts = judge(col)
    assert all(len(parts[m]) >= max(before.get(m, 0), 1) for m in MACHINES)
