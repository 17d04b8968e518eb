"""A platform written in Node.js (tests/node/platform.mjs: npm `jose` and `mqtt`, nothing of
ours) verifies a live `json` destination's detached signatures and asks a signed query.
Runs when node and npm are installed (skips otherwise, saying why)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from e2e import ROOT, GatewayProcess, plant_yaml, wait_for

from edge.signing.jws import b64url_encode, jwk_public

NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def node_platform() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the Node.js platform example cannot run")
    if not (NODE_DIR / "node_modules" / "mqtt").is_dir():
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm install failed (offline?): {done.stderr.strip()[-300:]}")
    return NODE_DIR / "platform.mjs"


def node(script: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(["node", str(script), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_node_platform_verifies_json_and_queries(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int], node_platform: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p.pub.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    jwk_file = tmp_path / "platform.private.jwk.json"
    jwk_file.write_text(json.dumps({**jwk_public(key), "d": b64url_encode(raw)}))
    dests = (f'  - {{id: js, url: "mqtt://127.0.0.1:{mosquitto.port}", format: json}}\n'
             "platforms:\n  - {id: p, public_key_file: p.pub.pem}\n")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], 0, destinations=dests))
    gw = GatewayProcess(plant).start()
    try:
        wait_for(lambda: bool(gw.events("device_connected")), 30, "device connected")
        watched = node(node_platform, "watch", mosquitto.url, "edge/#", "10")
        reply = node(node_platform, "query", mosquitto.url, "edge/plant-a/gw-1",
                     str(jwk_file), "state", json.dumps({"asset": "m1"}))
    finally:
        gw.kill()
    assert watched["failed"] == [] and watched["verified"] == 10, watched
    assert watched["sample"]["v"] == 1
    assert reply["ok"] is True, reply
    assert reply["result"]["machines"]["m1"]["link"] in ("up", "connecting", "down")
