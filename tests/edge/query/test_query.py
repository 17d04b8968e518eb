"""Platforms query a running gateway over a real broker (docs/protocol.md, "Queries").

Every refusal path answers with the contract's error code; replies are signed envelopes
that verify against the gateway's JWKS; a flood of requests does not stop telemetry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import ROOT, GatewayProcess, plant_yaml, wait_for
from query_platform import GATEWAY, Platform, key_files

from edge.platform_kit.client import new_request, sign_request
from edge.signing.jws import b64url_encode, jwk_public


@pytest.fixture
def running(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> Iterator[dict[str, Any]]:
    a_key, a_priv, a_pub = key_files(tmp_path, "platform-a")
    b_key, _, _ = key_files(tmp_path, "platform-b")
    (tmp_path / "b.jwks").write_text(json.dumps({"keys": [jwk_public(b_key)]}))
    plant = tmp_path / "plant.yaml"
    text = plant_yaml(tmp_path / "state", [free_port(), free_port()], mosquitto.port)
    text += f"""platforms:
  - {{id: platform-a, public_key_file: {a_pub.name}, machines: [m1]}}
  - {{id: platform-b, jwks_file: b.jwks, methods: [describe, health], rate_limit: 0.5, burst: 3}}
"""
    plant.write_text(text)
    gw = GatewayProcess(plant).start()
    # both: the test asks about m1 and checks that m1 and m2 are up
    wait_for(lambda: len(gw.events("device_connected")) >= 2, 20, "both machines connected")
    yield {"gw": gw, "a": a_key, "a_priv": a_priv, "b": b_key, "port": mosquitto.port}
    gw.kill()


@pytest.mark.slow
def test_queries_answer_refuse_and_never_starve_telemetry(
    running: dict[str, Any], mqtt_collector: Callable[..., Collector]
) -> None:
    a, b = running["a"], running["b"]
    v5, v311 = Platform(running["port"]), Platform(running["port"], v5=False)
    try:
        # answers, over v5 (Response Topic + Correlation Data) and v3.1.1 (reply_to + id)
        described = v5.ask(a, "describe")
        assert described["ok"] and described["result"]["gateway"] == "gw-1"
        assert set(described["result"]["machines"]) == {"m1"}, "only machines shared with A"
        state = v311.ask(a, "state", {"asset": "m1"})
        assert state["ok"] and state["result"]["machines"]["m1"]["availability"] == "available"
        wait_for(lambda: v5.ask(a, "oee", {"asset": "m1", "window": "today"})["ok"], 10, "oee")
        today = v5.ask(a, "oee", {"asset": "m1", "window": "today"})["result"]
        assert today["window"]["kind"] == "today" and "pbt" in today["time"]
        aas = v5.ask(a, "aas", {"asset": "m1"})
        from aas_core3 import jsonization, verification

        env = jsonization.environment_from_jsonable(aas["result"]["machines"]["m1"])
        assert list(verification.verify(env)) == []
        health = v5.ask(b, "health")
        assert health["ok"] and health["result"]["devices"] == {"m1": "up", "m2": "up"}

        # refusals, each with its code
        def code(record: dict[str, Any]) -> str:
            assert record["ok"] is False, record
            return str(record["error"]["code"])

        assert code(v5.ask(a, "state", {"asset": "m2"})) == "forbidden"
        assert code(v5.ask(b, "state")) == "forbidden"
        assert code(v5.ask(a, "state", {"asset": "m9"})) == "forbidden"
        assert (
            code(v5.ask(a, "oee", {"asset": "m1", "window": "range", "start": "yesterday"}))
            == "bad_request"
        )
        assert code(v5.ask(a, "teleport")) == "bad_request"
        assert code(v5.ask(a, "describe", ts="2020-01-01T00:00:00Z")) == "unauthorized"
        body = new_request("describe", {})
        signed = json.dumps(sign_request(a, body)).encode()
        v5.send(signed, corr=body["id"])
        assert v5.reply(body["id"])["ok"]
        v5.send(signed, corr=body["id"])  # the same request again: a replay
        assert code(v5.reply(body["id"])) == "unauthorized"
        stranger = Ed25519PrivateKey.generate()
        assert code(v5.ask(stranger, "describe")) == "unauthorized"
        forged = sign_request(a, new_request("describe", {}))
        forged["payload"] = b64url_encode(b'{"method":"health"}')
        v5.send(json.dumps(forged).encode(), corr="forged")
        assert code(v5.reply("forged")) == "unauthorized"
        v5.send(json.dumps(new_request("describe", {})).encode(), corr="unsigned")
        assert code(v5.reply("unsigned")) == "unauthorized"
        v5.send(b"{not json", corr="garbage")
        assert code(v5.reply("garbage")) == "bad_request"
        v5.send(b"x" * 70_000, corr="big")
        assert code(v5.reply("big")) == "too_large"
        codes = [v5.ask(b, "describe") for _ in range(5)]
        assert "rate_limited" in [c["error"]["code"] for c in codes if not c["ok"]]

        # a flood: telemetry keeps flowing, the gateway keeps answering
        col = mqtt_collector("127.0.0.1", running["port"], "edge/plant-a/hall-1/line-1/+/telemetry")
        flood = [json.dumps(sign_request(a, new_request("describe", {}))).encode()]
        flood += [json.dumps(new_request("describe", {})).encode()] * 2999  # unsigned
        t0 = time.monotonic()
        for payload in flood:
            v5.client.publish(f"{GATEWAY}/query", payload, qos=0)
        wait_for(
            lambda: len(col.snapshot()) >= 4,
            10,
            f"telemetry during the flood ({time.monotonic() - t0:.1f} s)",
        )
        assert v5.ask(a, "describe")["ok"]
        assert running["gw"].proc is not None and running["gw"].proc.poll() is None
    finally:
        v5.close()
        v311.close()


@pytest.mark.slow
def test_query_cli_prints_the_verified_reply(running: dict[str, Any]) -> None:
    def cli_state(asset: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge.cli", "query",
             "--broker", f"mqtt://127.0.0.1:{running['port']}",
             "--key", str(running["a_priv"]), "--gateway", GATEWAY, "state", f"asset={asset}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        )

    res = cli_state("m1")
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads(res.stdout)
    assert record["ok"] and "m1" in record["result"]["machines"]
    denied = cli_state("m2")
    assert denied.returncode == 1 and json.loads(denied.stdout)["error"]["code"] == "forbidden"
