"""Nonces committed on the store writer thread, not on the event loop (issue 17, item 2).

Why these tests: the nonce rows moved off the loop, and what must not move with them is the
promise of docs/protocol.md: a request that was answered is refused when replayed after a
SIGKILL. So the reply may leave only once its nonce is committed. Here a real Mosquitto
carries a burst of signed requests to a `QueryHandler` serving on a real `MqttTransport`;
at the moment each reply is handed to the transport the nonce file is read by another
connection, as a restarted process would read it, and every answered request's nonce must
be there. The burst also shows the point of the writer: the nonces share transactions. A
gateway process killed with SIGKILL right after answering refuses the replay after its
restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import GatewayProcess, plant_yaml, until, wait_for
from query_platform import Platform, key_files

from edge.config.loader import parse_plant
from edge.platform_kit.client import new_request, sign_request
from edge.platform_kit.verifier import verify_envelope
from edge.query.handler import QueryHandler
from edge.query.nonces import NONCE_FILE, NonceStore
from edge.signing.jws import Signer, b64url_decode, jwk_public, jwks
from edge.storage.writer import WriterThread
from edge.transport.mqtt import MqttTransport
from models.plant import Destination


def stored_nonces(path: Path) -> set[str]:
    """The nonces committed in the file, as another process would read them."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        return {str(n) for (n,) in conn.execute("SELECT nonce FROM nonces")}
    finally:
        conn.close()


class CheckingTransport(MqttTransport):
    """The gateway's transport, noting at each publish which nonces are committed."""

    def __init__(self, nonce_file: Path, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.nonce_file = nonce_file
        self.committed_at_publish: dict[str, set[str]] = {}
        """reply id -> the nonces in the file when the reply was handed over."""

    async def publish(self, topic: str, payload: bytes, *args: Any, **kw: Any) -> None:
        body = json.loads(b64url_decode(json.loads(payload)["payload"]))
        self.committed_at_publish[body["records"][0]["id"]] = stored_nonces(self.nonce_file)
        await super().publish(topic, payload, *args, **kw)


async def test_a_reply_leaves_only_after_its_nonce_is_committed_and_nonces_share_commits(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "p1.pem").write_bytes(b"")  # the YAML names a file; the key is given below
    text = plant_yaml(tmp_path / "state", [1502], mosquitto.port)
    text += "platforms:\n  - {id: p1, public_key_file: p1.pem, rate_limit: 1000, burst: 1000}\n"
    plant = parse_plant(text, "plant.yaml").plant
    nonce_file = tmp_path / "state" / NONCE_FILE
    writes = WriterThread(name="store-writer", linger=0.005)
    store = NonceStore(nonce_file, writes=writes)
    signer = Signer(Ed25519PrivateKey.generate())

    class Views:
        def query_describe(self) -> dict[str, Any]:
            return {"gateway": "gw-1"}

    handler = QueryHandler(
        plant, Views(),  # type: ignore[arg-type]  # `describe` is all this test asks
        signer=lambda: signer,
        keys={jwk_public(key)["kid"]: (plant.platforms[0], key.public_key())},
        logger=structlog.get_logger(), nonces=store)
    dest = Destination(id="local", url=f"mqtt://{mosquitto.host}:{mosquitto.port}")
    transport = CheckingTransport(nonce_file, dest, "gw-query-test", backoff_min=0.1)
    await transport.start()
    assert await transport.wait_connected(10)
    serving = asyncio.create_task(handler.serve(transport, "local"))
    platform = Platform(mosquitto.port)
    try:
        # the subscription is in place once a probe is answered (each probe a fresh request)
        probe = new_request("describe", {})

        def answered_probe() -> bool:
            if not platform.replies.get(probe["id"]):
                fresh = dict(probe, nonce=new_request("describe", {})["nonce"])
                platform.send(json.dumps(sign_request(key, fresh)).encode(), corr=probe["id"],
                              wait=False)
            return bool(platform.replies.get(probe["id"]))

        await until(answered_probe, 20, "the query subscription")
        bodies = [new_request("describe", {}) for _ in range(60)]
        await asyncio.to_thread(lambda: [
            platform.send(json.dumps(sign_request(key, b)).encode(), corr=b["id"], wait=False)
            for b in bodies])
        await until(lambda: all(platform.replies.get(b["id"]) for b in bodies), 30,
                    "every reply of the burst")

        keys = jwks([signer.public_key])
        for b in bodies:
            [msg] = platform.replies[b["id"]]
            record = verify_envelope(msg.payload, keys, topic=platform.topic)["records"][0]
            assert record["ok"] and record["id"] == b["id"], record
        # each reply's nonce was in the file when the reply was handed to the transport
        for body in bodies:
            committed = transport.committed_at_publish[body["id"]]
            assert body["nonce"] in committed, "a reply left before its nonce was committed"
        stats = store.writer_stats
        assert stats is not None and stats.ops >= len(bodies)
        assert stats.commits < stats.ops, "under a burst, nonces share transactions"
    finally:
        platform.client.loop_stop()
        platform.client.disconnect()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await transport.stop()
        await writes.close()
        store.close()


@pytest.mark.slow
def test_an_answered_request_is_refused_when_replayed_after_sigkill(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    key, _, public = key_files(tmp_path, "p1")
    plant = tmp_path / "plant.yaml"
    plant.write_text(plant_yaml(tmp_path / "state", [free_port()], mosquitto.port)
                     + f"platforms:\n  - {{id: p1, public_key_file: {public}}}\n")
    gw = GatewayProcess(plant).start()
    p = Platform(mosquitto.port)
    try:
        body = new_request("describe", {})
        captured = json.dumps(sign_request(key, body)).encode()

        def answered() -> bool:
            if not p.replies.get(body["id"]):
                again = new_request("describe", {})
                p.send(json.dumps(sign_request(key, again)).encode(), corr=again["id"])
            return p.jwks is not None
        wait_for(answered, 60, "queries served")
        p.send(captured, corr=body["id"])
        assert p.reply(body["id"])["ok"]
        gw.signal(signal.SIGKILL)  # at once: whatever was not committed is lost
        gw.wait(10)
        gw = GatewayProcess(plant).start()
        p.jwks = None

        def refused() -> bool:
            p.send(captured, corr=body["id"])
            try:
                record = p.reply(body["id"], within=2)
            except AssertionError:  # not serving yet
                return False
            assert record["ok"] is False and "nonce" in record["error"]["message"], record
            return True
        wait_for(refused, 60, "the replay refused after the restart")
        assert body["nonce"] in stored_nonces(tmp_path / "state" / NONCE_FILE)
    finally:
        p.close()
        gw.kill()
