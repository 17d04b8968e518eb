"""Key management and verification from the command line, against a running gateway.

Rotation is checked the way a platform experiences it: after `keys rotate` and a reload,
new envelopes carry the new kid, the JWKS still lists the old key, the per-topic chain runs
on without a reset, and `edge-gateway verify` accepts the whole capture but flags a forgery.
"""

from __future__ import annotations

import base64
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto
from e2e import ROOT, GatewayProcess, plant_yaml, wait_for, wait_for_offline_status

TOPIC = "edge/plant-a/hall-1/line-1/m1/telemetry"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        input=stdin,
    )


def kid_of(payload: bytes) -> str:
    protected = json.loads(payload)["protected"]
    return json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))["kid"]


def test_keys_generate_show_and_refuse_overwrite(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [5020], 1883))
    res = cli("keys", "generate", "-c", str(plant))
    assert res.returncode == 0, res.stderr
    key = tmp_path / "state" / "keys" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    kid = res.stdout.split("kid ")[1].strip()
    again = cli("keys", "generate", "-c", str(plant))
    assert again.returncode == 2 and "exists" in again.stderr
    shown = json.loads(cli("keys", "show", "-c", str(plant)).stdout)
    assert [k["kid"] for k in shown["keys"]] == [kid]
    assert all("d" not in k for k in shown["keys"]), "never print the private key"


@pytest.mark.slow
def test_rotation_on_reload_and_verify_capture_and_live(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mqtt_collector: Callable[..., Collector],
    free_port: Callable[[], int],
) -> None:
    col = mqtt_collector(mosquitto.host, mosquitto.port, "edge/#")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port))
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: sum(m.topic == TOPIC for m in col.snapshot()) >= 5, 20, "telemetry")
        old_kid = kid_of(next(m for m in col.snapshot() if m.topic == TOPIC).payload)

        rotated = cli("keys", "rotate", "-c", str(plant))
        assert rotated.returncode == 0, rotated.stderr
        new_kid = rotated.stdout.split("new kid ")[1].split(";")[0]
        assert new_kid != old_kid
        gw.signal(signal.SIGHUP)
        wait_for(
            lambda: any(m.topic == TOPIC and kid_of(m.payload) == new_kid for m in col.snapshot()),
            15,
            "envelopes signed with the rotated key",
        )
        live = cli("verify", "--broker", mosquitto.url, "--topic", "edge/#", "--seconds", "2")
        assert live.returncode == 0, live.stdout + live.stderr
        assert live.stdout.startswith("OK:")
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
        wait_for_offline_status(col)
    finally:
        gw.kill()

    msgs = col.snapshot()
    jwks_msgs = [json.loads(m.payload) for m in msgs if m.topic.endswith("/keys")]
    assert [k["kid"] for k in jwks_msgs[-1]["keys"]] == [new_kid, old_kid]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_msgs[-1]))
    capture = [
        json.dumps({"topic": m.topic, "envelope": json.loads(m.payload)})
        for m in msgs
        if m.topic.endswith(("/telemetry", "/state"))
    ]
    seqs = [json.loads(c)["envelope"] for c in capture if json.loads(c)["topic"] == TOPIC]
    assert len(seqs) >= 6
    (tmp_path / "capture.jsonl").write_text("\n".join(capture) + "\n")
    ok = cli("verify", str(tmp_path / "capture.jsonl"), "--jwks", str(jwks), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["counts"]["ok"] == len(capture)
    assert report["counts"]["reset"] == 0

    # flip one byte of one signature: a forgery, and a non-zero exit
    env = json.loads(capture[3])
    sig = env["envelope"]["signature"]
    env["envelope"]["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    capture[3] = json.dumps(env)
    bad = cli("verify", "-", "--jwks", str(jwks), stdin="\n".join(capture))
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAILED:") and "forgery 1" in bad.stdout
