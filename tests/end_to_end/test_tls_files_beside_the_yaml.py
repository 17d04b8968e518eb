"""A gateway started from another working directory (systemd's is `/`) finds the TLS and
secret files its YAML names relative to itself, connects to a real Mosquitto over mutual
TLS and publishes; a SIGHUP reload reads the same files and restarts nothing.

The broker requires a client certificate (signed by the test CA) and the client key is
encrypted, so the CA, certificate, key and key-password files are all really used. The
MQTT password file is read at start (`run` refuses a missing one); this broker does not
check its value (it has no password file)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from e2e import GatewayProcess, plant_yaml, wait_for
from tls_pki import tls_listener, write_pki

KEY_PASSWORD = "key-password-4711"


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_relative_tls_and_secret_files_from_another_working_directory(
    workers: str,
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    for d in (site / "certs", site / "secrets", elsewhere):
        d.mkdir(parents=True)
    pki = write_pki(site / "certs", client_key_password=KEY_PASSWORD.encode())
    (site / "secrets" / "key-password").write_text(KEY_PASSWORD + "\n")
    (site / "secrets" / "mqtt-password").write_text("broker-secret\n")
    tls_port = free_port()
    broker = mosquitto_factory(tls_listener(tls_port, pki, require_certificate=True))
    col = mqtt_collector(broker.host, broker.port, "edge/#")  # the plain listener
    dest = (
        f'  - id: tls\n    url: "mqtts://127.0.0.1:{tls_port}"\n    username: gw\n'
        "    password: {file: secrets/mqtt-password}\n"
        "    tls: {ca_file: certs/ca.pem, cert_file: certs/client.pem,"
        " key_file: ./certs/client.key, key_password: {file: secrets/key-password}}\n"
    )
    plant = site / "plant.yaml"
    # state_dir relative as well: it must land beside the YAML, not in the working directory
    plant.write_text(plant_yaml(Path("state"), [free_port(), free_port()], 0, destinations=dest))
    gw = GatewayProcess(plant, "--workers", workers, cwd=elsewhere).start()
    try:
        def telemetry_of(machine: str) -> int:
            return sum(1 for m in col.snapshot() if m.topic.endswith(f"/{machine}/telemetry"))

        # with workers the JWKS goes out on the parent's own link, which may come up after
        # the workers' links: it is awaited beside their telemetry, not implied by it
        wait_for(lambda: telemetry_of("m1") >= 3 and telemetry_of("m2") >= 3
                 and any(m.topic == "edge/plant-a/gw-1/keys" for m in col.snapshot()), 60,
                 "telemetry of both machines and the JWKS over mutual TLS")
        # with 2, each worker process loads the YAML itself and has its own TLS link
        assert len(gw.events("worker_started")) == (2 if workers == "2" else 0)

        # each worker reloads (and re-reads the TLS files for its own link), or the one
        # process does. Worker 0 serves no machine here: the telemetry above says nothing
        # of its start, so wait for it too
        reloaders = {0, 1} if workers == "2" else {None}
        wait_for(lambda: reloaders <= {e.get("worker") for e in gw.events("gateway_started")},
                 60, "every process started")
        lines = len(gw.logs())

        def reloads() -> dict[int | None, dict[str, Any]]:
            return {e.get("worker"): e for e in gw.logs()[lines:] if e.get("event") == "reloaded"}

        gw.signal(signal.SIGHUP)
        try:
            wait_for(lambda: set(reloads()) == reloaders, 20, "the reload")
        except AssertionError as exc:  # once seen in CI only: say what the processes did
            said = [(e.get("event"), e.get("worker"), e.get("error") or e.get("line"))
                    for e in gw.logs()[lines:]]
            raise AssertionError(f"{exc}; logged since the SIGHUP: {said}") from None
        for reloaded in reloads().values():
            # anchored at the same directory again: the destinations compare equal
            assert not reloaded["egress_restarted"] and reloaded["devices_stopped"] == []
        assert not gw.events("worker_exited_restarting")
        assert not gw.events("reload_rejected_keeping_running_config")
        n = telemetry_of("m1")
        wait_for(lambda: telemetry_of("m1") > n + 2, 20, "telemetry after the reload")
    finally:
        gw.kill()
    assert (site / "state").is_dir()
    assert list(elsewhere.iterdir()) == [], "nothing is written to the working directory"
    assert not [e for e in gw.logs() if e.get("event") == "non-json"], "plain-text output"
