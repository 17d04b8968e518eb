"""A platform as the query tests play it: a raw paho client that publishes requests (MQTT 5
properties or v3.1.1 `reply_to`), collects the gateway's replies and verifies them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from e2e import wait_for
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.platform_kit.client import new_request, sign_request
from edge.platform_kit.verifier import verify_envelope

GATEWAY = "edge/plant-a/gw-1"


class Platform:
    """A raw paho client: publishes requests (v5 properties or v3.1.1 `reply_to`), collects
    replies and verifies them."""

    def __init__(self, port: int, v5: bool = True, topic: str | None = None) -> None:
        self.v5 = v5
        self.replies: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        self.topic = topic or f"platform/replies/{'v5' if v5 else 'v311'}"
        ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(self.topic, 1), (f"{GATEWAY}/keys", 1)]
        )
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)
        self.jwks: dict[str, Any] | None = None

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/keys"):
            self.jwks = json.loads(msg.payload)
            return
        corr = getattr(msg.properties, "CorrelationData", None) if self.v5 else None
        with self.lock:
            self.replies.setdefault(corr.decode() if corr else "", []).append(msg)

    def received(self) -> int:
        """How many replies arrived (and were not yet taken by `reply`)."""
        with self.lock:
            return sum(len(v) for v in self.replies.values())

    def send(self, payload: bytes, corr: str | None = None, wait: bool = True) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.topic
            if corr:
                props.CorrelationData = corr.encode()
        info = self.client.publish(f"{GATEWAY}/query", payload, qos=1, properties=props)
        if wait:
            info.wait_for_publish(5)

    def ask(
        self, key: Ed25519PrivateKey, method: str, params: dict[str, Any] | None = None, **over: Any
    ) -> dict[str, Any]:
        body = new_request(method, params or {}, reply_to=None if self.v5 else self.topic)
        body.update(over)
        self.send(json.dumps(sign_request(key, body)).encode(), corr=body["id"])
        return self.reply(body["id"])

    def reply(self, corr: str, within: float = 10) -> dict[str, Any]:
        key = corr if self.v5 else ""
        wait_for(
            lambda: bool(self.replies.get(key)) and self.jwks is not None, within, f"reply {corr}"
        )
        with self.lock:
            msg = self.replies[key].pop(0)
        assert self.jwks is not None
        body = verify_envelope(msg.payload, self.jwks, topic=self.topic)
        assert body["stream"] == "response" and body["asset"] is None
        record: dict[str, Any] = body["records"][0]
        return record

    def take_all(self) -> list[dict[str, Any]]:
        """Every reply that arrived so far, verified, as records (the store is emptied)."""
        with self.lock:
            msgs = [m for v in self.replies.values() for m in v]
            self.replies.clear()
        assert self.jwks is not None
        return [verify_envelope(m.payload, self.jwks, topic=self.topic)["records"][0] for m in msgs]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def key_files(tmp_path: Path, name: str) -> tuple[Ed25519PrivateKey, Path, Path]:
    key = Ed25519PrivateKey.generate()
    priv = tmp_path / f"{name}.pem"
    priv.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pub = tmp_path / f"{name}.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key, priv, pub
