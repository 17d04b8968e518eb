"""SIGHUP at a real broker, the gateway as a subprocess: what a reload changes takes effect
at once, what it cannot prepare leaves the running configuration publishing, a hostile file
cannot stall the loop, and only what changed restarts."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e import ALIAS_BOMB, GatewayProcess, huge_invalid_yaml, plant_yaml, wait_for
from test_workers_page import reloads_total, rows

from edge.egress.outbox import FILENAME as OUTBOX_FILE
from edge.platform_kit.client import query

GATEWAY = "edge/plant-a/gw-1"
PLATFORMS = """platforms:
  - {id: p1, public_key_file: p1.pub.pem}
  - {id: p2, public_key_file: p2.pub.pem}
"""


@dataclass
class Running:
    gw: GatewayProcess
    plant: Path
    broker: str
    keys: dict[str, Ed25519PrivateKey]
    telemetry: Collector

    def ask(self, platform: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(query(self.broker, self.keys[platform], GATEWAY, method, params))

    def edit(self, old: str, new: str) -> None:
        text = self.plant.read_text()
        assert old in text, old
        self.plant.write_text(text.replace(old, new, 1))

    def reload_and_wait(self, event: str) -> dict[str, Any]:
        before = len(self.gw.events(event))
        self.gw.signal(signal.SIGHUP)
        wait_for(lambda: len(self.gw.events(event)) > before, 15, event)
        return self.gw.events(event)[-1]

    def telemetry_keeps_arriving(self) -> None:
        n = len(self.telemetry.snapshot())
        wait_for(lambda: len(self.telemetry.snapshot()) > n + 3, 10, "telemetry keeps arriving")


@pytest.fixture
def running(
    tmp_path: Path,
    mosquitto: Mosquitto,
    free_port: Callable[[], int],
    mqtt_collector: Callable[..., Collector],
) -> Iterator[Running]:
    keys = {p: Ed25519PrivateKey.generate() for p in ("p1", "p2")}
    for name, key in keys.items():
        (tmp_path / f"{name}.pub.pem").write_bytes(
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port)
    plant.write_text(text.replace("machines:", PLATFORMS + "machines:", 1))
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/plant-a/+/+/+/telemetry")
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: len(gw.events("device_connected")) == 2, 20, "both machines up")
        r = Running(gw, plant, mosquitto.url, keys, col)
        r.telemetry_keeps_arriving()
        yield r
    finally:
        gw.kill()


def no_tracebacks(gw: GatewayProcess) -> None:
    assert not [e for e in gw.logs() if e.get("event") == "non-json"], "plain-text output"


@pytest.mark.slow
def test_one_sighup_is_one_reload_entry_and_one_count(running: Running) -> None:
    """One process: one SIGHUP, one row on the page and one count on `/metrics`, as with
    worker processes (tests/end_to_end/test_workers_page.py)."""
    url = running.gw.events("status_page_started")[0]["url"]
    assert reloads_total(url) == {"ok": 0, "partial": 0, "rejected": 0}
    running.reload_and_wait("reloaded")
    wait_for(lambda: reloads_total(url)["ok"] == 1, 15, "the reload on /metrics")
    running.edit("poll_interval: 0.2", "poll_interval: -1")
    running.reload_and_wait("reload_rejected_keeping_running_config")
    assert reloads_total(url) == {"ok": 1, "partial": 0, "rejected": 1}
    assert [r[2].split(":")[0] for r in rows(url, "reload")] == ["rejected", "ok"]


@pytest.mark.slow
def test_revoked_platform_and_narrowed_machines_take_effect_at_once(running: Running) -> None:
    assert running.ask("p1", "state", {})["ok"]
    assert running.ask("p2", "state", {"asset": "m1"})["ok"]
    running.edit("  - {id: p1, public_key_file: p1.pub.pem}\n", "")
    running.edit("{id: p2, public_key_file: p2.pub.pem}", "{id: p2, public_key_file: p2.pub.pem,"
                 " machines: [m2]}")
    reloaded = running.reload_and_wait("reloaded")
    assert reloaded["platforms"] == ["p2"]
    assert not reloaded["egress_restarted"] and reloaded["devices_stopped"] == []

    revoked = running.ask("p1", "state", {})
    assert not revoked["ok"] and revoked["error"]["code"] == "unauthorized"
    narrowed = running.ask("p2", "state", {"asset": "m1"})
    assert not narrowed["ok"] and narrowed["error"]["code"] == "forbidden"
    assert list(running.ask("p2", "state", {})["result"]["machines"]) == ["m2"]
    no_tracebacks(running.gw)


@pytest.mark.slow
def test_a_replaced_platform_key_takes_effect_at_once(running: Running) -> None:
    """The key file's content changes, its name does not (the YAML is the same): the reload
    reads it again, so the old key is refused from the next request."""
    assert running.ask("p1", "health", {})["ok"]
    new_key = Ed25519PrivateKey.generate()
    (running.plant.parent / "p1.pub.pem").write_bytes(
        new_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    reloaded = running.reload_and_wait("reloaded")
    assert not reloaded["egress_restarted"] and reloaded["devices_stopped"] == []
    refused = running.ask("p1", "health", {})  # still signed with the old key
    assert not refused["ok"] and refused["error"]["code"] == "unauthorized"
    running.keys["p1"] = new_key
    assert running.ask("p1", "health", {})["ok"]
    no_tracebacks(running.gw)


@pytest.mark.slow
def test_a_missing_platform_key_keeps_the_running_configuration(running: Running) -> None:
    running.edit("p2.pub.pem}", "missing.pem}")
    running.edit("time_scale: 60", "time_scale: 30")  # a change that would restart m1
    rejected = running.reload_and_wait("reload_rejected_keeping_running_config")
    assert any("missing.pem" in p and "platforms[1].public_key_file" in p
               for p in rejected["problems"]), rejected
    running.telemetry_keeps_arriving()
    assert running.ask("p2", "describe", {})["ok"]  # the old key still works
    assert not running.gw.events("reloaded") and len(running.gw.events("egress_ready")) == 1
    no_tracebacks(running.gw)


@pytest.mark.slow
def test_an_alias_bomb_is_refused_while_telemetry_flows_and_sigterm_still_stops(
    running: Running,
) -> None:
    running.plant.write_text(ALIAS_BOMB)
    rejected = running.reload_and_wait("reload_rejected_keeping_running_config")
    assert any("alias" in p for p in rejected["problems"]), rejected
    running.telemetry_keeps_arriving()
    took = running.gw.stop_timed(timeout=30)
    assert took < 5, f"stopped {took:.1f} s after SIGTERM"  # ~0.4 s measured


@pytest.mark.slow
def test_sigterm_during_the_parse_of_a_huge_file_stops_within_5_s(running: Running) -> None:
    """The parse of a reload runs in a thread the process does not wait for: a SIGTERM
    while it runs stops the gateway at once (it waited for the parse's end, 121 s, when the
    parse ran in asyncio's default executor), and telemetry flows meanwhile."""
    running.plant.write_text(huge_invalid_yaml())
    running.reload_and_wait("reload_started")
    running.telemetry_keeps_arriving()
    assert not running.gw.events("reload_rejected_keeping_running_config"), (
        "the file was parsed before the SIGTERM: it no longer tests a stop during a parse"
    )
    took = running.gw.stop_timed(timeout=30)  # a hang would be the parse's 121 s
    assert took < 5, f"stopped {took:.1f} s after SIGTERM"  # ~0.4 s measured
    assert running.gw.events("gateway_stopped")
    no_tracebacks(running.gw)


@pytest.mark.slow
def test_a_destination_change_restarts_egress_only(running: Running) -> None:
    running.edit("url: \"mqtt://", "keepalive: 20, url: \"mqtt://")
    reloaded = running.reload_and_wait("reloaded")
    assert reloaded["egress_restarted"] and reloaded["devices_stopped"] == []
    assert reloaded["devices_started"] == []
    assert reloaded["records_dropped_during_swap"] == 0  # held, then sealed by the new stack
    assert len(running.gw.events("egress_ready")) == 2
    assert len(running.gw.events("device_connected")) == 2, "devices were not restarted"
    running.telemetry_keeps_arriving()
    assert running.ask("p1", "health", {})["ok"]  # queries are served on the new connection
    no_tracebacks(running.gw)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("state_dir:", "oee: {publish_every: 5}, state_dir:"),
        # the page is read at start (README): a change restarted egress for nothing
        ("web: {port: 0}", "web: {port: 0, refresh_seconds: 3}"),
    ],
    ids=["oee", "web"],
)
def test_a_gateway_change_egress_does_not_read_restarts_nothing(
    running: Running, old: str, new: str
) -> None:
    running.edit(old, new)
    reloaded = running.reload_and_wait("reloaded")
    assert not reloaded["egress_restarted"]
    assert reloaded["devices_stopped"] == [] and reloaded["devices_started"] == []
    assert len(running.gw.events("egress_ready")) == 1
    assert len(running.gw.events("device_connected")) == 2
    running.telemetry_keeps_arriving()


@pytest.mark.slow
def test_a_failing_egress_preparation_keeps_the_running_egress(running: Running) -> None:
    """The new file validates, but its signing key directory cannot be used: the old egress
    must not have been stopped for it."""
    blocker = running.plant.parent / "not-a-directory"
    blocker.write_text("a file where the keys directory should be\n")
    running.edit("state_dir:", f"keys_dir: {blocker}, state_dir:")
    failed = running.reload_and_wait("reload_preparation_failed_keeping_running_config")
    assert str(blocker) in failed["error"]
    running.telemetry_keeps_arriving()
    assert running.ask("p1", "health", {})["ok"]
    assert len(running.gw.events("egress_ready")) == 1 and not running.gw.events("reloaded")
    no_tracebacks(running.gw)


@pytest.mark.slow
def test_a_new_outbox_that_does_not_open_restores_the_running_egress_counted_rejected(
    running: Running,
) -> None:
    """Prepared, yet the new outbox does not open: the previous egress is started again.
    That was logged `reloaded` and counted `ok`, though the running configuration stayed."""
    url = running.gw.events("status_page_started")[0]["url"]
    moved = running.plant.parent / "moved"
    (moved / OUTBOX_FILE).mkdir(parents=True)  # a directory where the outbox file goes
    state = running.plant.parent / "state"  # the signing key stays where it is
    running.edit(f"state_dir: {state},", f"keys_dir: {state / 'keys'}, state_dir: {moved},")
    failed = running.reload_and_wait("reload_failed_restored_running_config")
    assert failed["error"], failed
    assert not running.gw.events("reloaded")
    assert reloads_total(url) == {"ok": 0, "partial": 0, "rejected": 1}
    [row] = rows(url, "reload")
    assert row[2].startswith("rejected: "), row
    running.telemetry_keeps_arriving()
