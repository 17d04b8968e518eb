"""MqttTransport against real brokers: Mosquitto (v5, TLS, auth, restarts) and the embedded amqtt.

What arrives is checked with an independent paho subscriber (`mqtt_collector`), never with
the transport itself.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from e2e import until
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from structlog.testing import capture_logs
from tls_pki import certificate, tls_listener, write_pair, write_pki

from edge.config.secret_refs import resolve_secret
from edge.daemon.embedded_broker import EmbeddedBroker
from edge.transport.mqtt import MqttTransport
from models.errors import ConfigurationError, TransportError
from models.plant import Destination, SecretRef, TlsSettings

if TYPE_CHECKING:
    from conftest import Collector, Mosquitto

Collect = Callable[..., "Collector"]

FAST = {"backoff_min": 0.1, "backoff_max": 0.5}


def transport(
    url: str,
    client_id: str = "gw-test",
    *,
    will: tuple[str, bytes, bool] | None = None,
    **dest: Any,
) -> MqttTransport:
    return MqttTransport(Destination(id="test", url=url, **dest), client_id, will, **FAST)


async def started(t: MqttTransport, within: float = 10.0) -> MqttTransport:
    await t.start()
    assert await t.wait_connected(within), "transport did not connect"
    return t


# ----------------------------------------------------------------------------- secrets


def test_secret_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_PW", "s3cret")
    assert resolve_secret(SecretRef(env="EDGE_TEST_PW")) == "s3cret"
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert resolve_secret(SecretRef(file=str(f))) == "from-file"


def test_missing_secret_names_the_reference_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="EDGE_TEST_UNSET"):
        resolve_secret(SecretRef(env="EDGE_TEST_UNSET"))
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError, match="nope"):
        resolve_secret(SecretRef(file=str(missing)))


async def test_wrong_password_reference_fails_at_start() -> None:
    t = transport("mqtt://127.0.0.1:1", username="gw", password=SecretRef(env="EDGE_TEST_UNSET"))
    with pytest.raises(ConfigurationError, match="EDGE_TEST_UNSET"):
        await t.start()
    with pytest.raises(ConfigurationError, match="mqtts"):
        await transport("mqtt://127.0.0.1:1", tls=TlsSettings()).start()


# ----------------------------------------------------------------------------- basics


async def test_publish_qos1_retained_and_not_over_v5(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    live = mqtt_collector(mosquitto.host, mosquitto.port, "t/#")
    t = await started(transport(mosquitto.url))
    try:
        assert t.protocol_in_use == "5" and t.connected
        await t.publish("t/live", b"one")
        await t.publish("t/kept", b"two", retain=True)
        got = await live.wait(2)
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            ("t/live", b"one", 1),
            ("t/kept", b"two", 1),
        ]
        late = mqtt_collector(mosquitto.host, mosquitto.port, "t/#")  # sees only the retained one
        [kept] = await late.wait(1)
        assert (kept.topic, kept.payload, kept.retain) == ("t/kept", b"two", True)
        assert t.stats == {"published": 2, "acked": 2, "reconnects": 0, "failovers": 0,
                           "pending": 0}
    finally:
        await t.stop()


async def test_the_link_has_nagle_off(mosquitto: Mosquitto) -> None:
    """A PUBACK followed at once by a publish (a query's reply after its request) must not
    wait for the broker's delayed ACK of the PUBACK, up to 40 ms per reply (bench section
    2m: 44 ms -> 2 ms p50 with the broker's `set_tcp_nodelay` on too)."""
    t = await started(transport(mosquitto.url))
    try:
        sock = t._client.socket() if t._client is not None else None  # the live socket
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        await t.stop()


async def test_many_publishes_are_all_acknowledged(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "bulk/#")
    t = await started(transport(mosquitto.url))
    try:
        await asyncio.gather(*(t.publish(f"bulk/{i % 7}", str(i).encode()) for i in range(500)))
        got = await c.wait(500)
        assert sorted(int(m.payload) for m in got) == list(range(500))
        assert t.stats["acked"] == 500
    finally:
        await t.stop()


async def test_publishes_are_written_without_asking_the_selector(
    mosquitto: Mosquitto, mqtt_collector: Collect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected, the publishes of one loop iteration go out in one write at its end; the
    selector is asked to watch the socket only when it is full (the next test), since
    asking cost two epoll_ctl calls and a selector round per envelope."""
    c = mqtt_collector(mosquitto.host, mosquitto.port, "quiet/#")
    t = await started(transport(mosquitto.url))
    loop = asyncio.get_running_loop()
    watched: list[int] = []
    real = loop.add_writer

    def add_writer(fd: Any, callback: Callable[..., object], *args: Any) -> None:
        watched.append(fd)
        real(fd, callback, *args)

    monkeypatch.setattr(loop, "add_writer", add_writer)
    try:
        for burst in range(5):
            await asyncio.gather(*(t.publish(f"quiet/{burst}", str(i).encode())
                                   for i in range(20)))
        got = await c.wait(100)
        assert len(got) == 100 and t.stats["acked"] == 100
        assert watched == []
    finally:
        await t.stop()


async def test_large_payload_goes_through_partial_writes(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "big/#")
    t = await started(transport(mosquitto.url))
    try:
        blob = bytes(range(256)) * (8 * 4096)  # 8 MiB: far more than one socket send
        await asyncio.wait_for(t.publish("big/x", blob), 30)
        [m] = await c.wait(1, within=30)
        assert m.payload == blob
    finally:
        await t.stop()


async def test_v5_properties_out_and_in(mosquitto: Mosquitto, mqtt_collector: Collect) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "reply/#")
    t = await started(transport(mosquitto.url))
    try:
        await t.publish(
            "reply/1",
            b"{}",
            properties={
                "correlation_data": b"abc",
                "content_type": "application/json",
                "user_property": [("kid", "k1")],
            },
        )
        [m] = await c.wait(1)
        assert m.properties.CorrelationData == b"abc"
        assert m.properties.ContentType == "application/json"
        assert m.properties.UserProperty == [("kid", "k1")]

        await t.subscribe("edge/+/query", qos=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "platform/replies"
        props.CorrelationData = b"req-7"
        c.client.publish("edge/site/query", b"request", qos=1, properties=props).wait_for_publish(5)
        incoming = await asyncio.wait_for(anext(t.messages()), 5)
        assert (incoming.topic, incoming.payload) == ("edge/site/query", b"request")
        assert incoming.response_topic == "platform/replies"
        assert incoming.correlation_data == b"req-7"
    finally:
        await t.stop()


async def test_bad_topic_or_property_is_a_transport_error(mosquitto: Mosquitto) -> None:
    t = await started(transport(mosquitto.url))
    try:
        with pytest.raises(TransportError):
            await t.publish("a/+/b", b"x")
        with pytest.raises(TransportError, match="no_such_thing"):
            await t.publish("a/b", b"x", properties={"no_such_thing": 1})
    finally:
        await t.stop()


# ----------------------------------------------------------------------------- protocol fallback


async def test_auto_falls_back_to_311_on_embedded_amqtt(mqtt_collector: Collect) -> None:
    async with EmbeddedBroker(port=0) as broker:
        c = mqtt_collector(broker.host, broker.port, "gw/#", protocol="3.1.1", wait=False)
        await c.subscribed()
        # The will matters: amqtt 0.12 cannot parse a v5 CONNECT carrying one
        # (see edge/daemon/embedded_broker.py).
        t = transport(broker.url, will=("gw/status", b"offline", True))
        with capture_logs() as logs:
            await started(t, within=5)
        try:
            assert t.protocol_in_use == "3.1.1"
            assert any(e["event"] == "mqtt_protocol_fallback" for e in logs)
            await t.publish("gw/data", b"hello", properties={"correlation_data": b"not in 3.1.1"})
            [m] = await c.wait(1)
            assert (m.topic, m.payload) == ("gw/data", b"hello")
        finally:
            await t.stop()


async def test_forced_v5_does_not_fall_back() -> None:
    async with EmbeddedBroker(port=0) as broker:
        t = transport(broker.url, protocol="5")
        await t.start()
        try:
            assert not await t.wait_connected(1.0)
            assert t.protocol_in_use == "5"
        finally:
            await t.stop()


async def _v311_only_proxy(upstream_port: int) -> asyncio.Server:
    """Drops an MQTT 5 CONNECT without a word (as some 3.1.1-only brokers do), forwards the rest."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.read(65536)  # a client's CONNECT fits in one read on loopback
        i = 2
        while head[i - 1] & 0x80:
            i += 1
        if head[i + 6] == 5:  # protocol level after the length-prefixed "MQTT"
            w.close()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", upstream_port)
        uw.write(head)
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_auto_falls_back_when_v5_connection_is_dropped(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "p/#")
    proxy = await _v311_only_proxy(mosquitto.port)
    port = proxy.sockets[0].getsockname()[1]
    t = await started(transport(f"mqtt://127.0.0.1:{port}"), within=5)
    try:
        assert t.protocol_in_use == "3.1.1"
        await t.publish("p/x", b"via proxy")
        [m] = await c.wait(1)
        assert m.payload == b"via proxy"
    finally:
        await t.stop()
        proxy.close()


# ----------------------------------------------------------------------------- will and outages


async def test_will_on_abnormal_death_and_birth_on_reconnect(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "gw/status")
    dest = Destination(id="test", url=mosquitto.url)
    t = MqttTransport(
        dest,
        "gw-will",
        ("gw/status", b"offline", True),
        birth=("gw/status", b"online", True),
        **FAST,
    )
    await started(t)
    try:
        await c.wait(1)
        sock = t._client.socket() if t._client else None
        assert isinstance(sock, socket.socket)
        with capture_logs() as logs:
            sock.shutdown(socket.SHUT_RDWR)  # the link dies without a DISCONNECT
            got = await c.wait(3)
        assert [m.payload for m in got] == [b"online", b"offline", b"online"]
        assert t.connected and t.stats["reconnects"] == 1
        events = [e["event"] for e in logs if e["event"].startswith("mqtt_")]
        assert events == ["mqtt_disconnected", "mqtt_connected"]
    finally:
        await t.stop()


async def test_a_link_taken_over_again_and_again_logs_once_with_a_hint(
    mosquitto: Mosquitto,
) -> None:
    """Two gateways with one client id (the same plant file run twice) take the session
    from each other every second or so. Each loss used to log a warning and each return an
    info line, for as long as it went on; now one warning per minute with the count, and
    a hint naming the client id."""
    first, second = transport(mosquitto.url, "gw-twice"), transport(mosquitto.url, "gw-twice")
    with capture_logs() as logs:
        await started(first)
        await second.start()
        try:
            await until(lambda: first.stats["reconnects"] >= 4, 30, "4 take-overs")
        finally:
            await second.stop()
            await first.stop()
    lost = [e for e in logs if e["event"] == "mqtt_disconnected" and e["log_level"] == "warning"]
    assert 1 <= len(lost) <= 2, lost  # one per transport in the minute
    assert all("'gw-twice'" in e["hint"] and "running twice" in e["hint"] for e in lost)
    infos = [e for e in logs if e["event"] == "mqtt_connected" and e["log_level"] == "info"]
    assert len(infos) <= 2 + len(lost), infos  # each first connect, and one after a warning
    quiet = [e for e in logs if e["event"] == "mqtt_disconnected" and e["log_level"] == "debug"]
    assert len(quiet) >= 3  # the losses are still there, at debug


@pytest.mark.slow
async def test_keepalive_notices_a_frozen_broker(mosquitto: Mosquitto) -> None:
    """A broker that stops answering (no FIN, no RST) is only found by paho's keep-alive."""
    assert mosquitto.proc is not None
    t = await started(transport(mosquitto.url, keepalive=5))
    try:
        mosquitto.proc.send_signal(signal.SIGSTOP)
        sent = asyncio.create_task(t.publish("frozen/x", b"1"))
        # PINGREQ after 5 s, give up 5 s later
        await until(lambda: not t.connected, 20, "keep-alive to notice the frozen broker")
        assert not sent.done()
        mosquitto.proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(sent, 30)
        assert t.stats["reconnects"] == 1
    finally:
        if mosquitto.proc is not None:
            mosquitto.proc.send_signal(signal.SIGCONT)
        await t.stop()


async def test_clean_stop_does_not_send_the_will(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    c = mqtt_collector(mosquitto.host, mosquitto.port, "gw/status")
    t = await started(transport(mosquitto.url, will=("gw/status", b"offline", True)))
    await t.stop()
    # a marker published after the stop: a will, published when the broker handles the
    # closed connection, would be delivered before it
    other = await started(transport(mosquitto.url))
    try:
        await other.publish("gw/status", b"marker")
        await c.wait(1)
    finally:
        await other.stop()
    assert [m.payload for m in c.snapshot()] == [b"marker"]


async def test_broker_restart_mid_stream_loses_nothing(
    mosquitto: Mosquitto, mqtt_collector: Collect
) -> None:
    t = await started(transport(mosquitto.url))
    try:
        await t.publish("r/before", b"0", retain=True)
        mosquitto.stop()
        await until(lambda: not t.connected, 5, "the transport to notice the stop")
        # Retained on distinct topics, so a subscriber arriving after the restart sees them all
        # no matter how the reconnect races with it (persistence is off: r/before is gone).
        pending = [
            asyncio.create_task(t.publish(f"r/{i}", str(i).encode(), retain=True))
            for i in range(20)
        ]
        # all twenty are held for the broker: each has registered its message and waits on
        # a future only a PUBACK (or a failure) may settle. No fixed wait for "none settles
        # while it is down": one settled without its PUBACK is missing from `acked` below
        await until(lambda: t.stats["pending"] == 20, 10, "20 publishes held for the broker")
        assert not any(p.done() for p in pending)
        mosquitto.start()
        await asyncio.wait_for(asyncio.gather(*pending), 15)
        c = mqtt_collector(mosquitto.host, mosquitto.port, "r/#")
        got = await c.wait(20)
        assert sorted(int(m.payload) for m in got) == list(range(20))
        assert t.stats["pending"] == 0 and t.stats["reconnects"] == 1
        # each publish was settled by its PUBACK (r/before's and the twenty), none otherwise
        assert t.stats["acked"] == 21
    finally:
        await t.stop()


async def test_starts_while_broker_is_down_and_delivers_later(
    mosquitto_factory: Callable[..., Mosquitto], mqtt_collector: Collect
) -> None:
    broker = mosquitto_factory(start=False)
    t = transport(broker.url)
    with capture_logs() as logs:
        await t.start()  # returns although nothing listens
        assert not await t.wait_connected(0.5)
        sent = asyncio.create_task(t.publish("late/x", b"queued", retain=True))
        await until(
            lambda: [e["event"] for e in logs].count("mqtt_connect_failed") >= 3,
            10,
            "several connect attempts",
        )
        first = next(e for e in logs if e["event"] == "mqtt_connect_failed")
        assert first["log_level"] == "warning"
        assert sum(e["log_level"] == "warning" for e in logs) == 1
        broker.start()
        await asyncio.wait_for(sent, 10)
    try:
        [m] = await mqtt_collector(broker.host, broker.port, "late/#").wait(1)
        assert m.payload == b"queued"
    finally:
        await t.stop()


async def test_stop_fails_what_is_still_pending(free_port: Callable[[], int]) -> None:
    t = transport(f"mqtt://127.0.0.1:{free_port()}")
    await t.start()
    sent = asyncio.create_task(t.publish("x/y", b"never"))
    await until(lambda: t.stats["pending"] == 1, 5, "the publish to be queued")
    await t.stop()
    with pytest.raises(TransportError, match="stopped"):
        await sent
    with pytest.raises(TransportError):
        await t.publish("x/y", b"after stop")


# ----------------------------------------------------------------------------- auth and TLS


def _mosquitto_passwd(path: Path, user: str, password: str) -> None:
    tool = Path("/usr/bin/mosquitto_passwd")
    if not tool.exists():
        pytest.fail("mosquitto_passwd is missing: run `make test`, which installs mosquitto")
    cmd = [str(tool), "-b", "-c", str(path), user, password]
    subprocess.run(cmd, check=True, capture_output=True)


async def test_username_password_from_secret_file(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    pwfile = tmp_path / "passwd"
    _mosquitto_passwd(pwfile, "gw", "right-horse-battery")
    broker = mosquitto_factory(f"password_file {pwfile}\nallow_anonymous false\n")
    secret = tmp_path / "secret"
    secret.write_text("right-horse-battery\n")
    t = await started(transport(broker.url, username="gw", password=SecretRef(file=str(secret))))
    await t.publish("auth/ok", b"1")
    await t.stop()

    secret.write_text("wrong-password-value\n")
    with capture_logs() as logs:
        t = transport(broker.url, username="gw", password=SecretRef(file=str(secret)))
        await t.start()
        assert not await t.wait_connected(1.0)
        await t.stop()
    failed = [e for e in logs if e["event"] == "mqtt_connect_failed"]
    assert failed and "authori" in failed[0]["reason"].lower()
    assert "wrong-password-value" not in repr(logs)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    return write_pki(tmp_path)


async def test_tls_with_ca_file(
    pki: dict[str, str],
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_collector: Collect,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    broker = mosquitto_factory(tls_listener(port, pki, require_certificate=False))
    c = mqtt_collector(broker.host, broker.port, "tls/#")
    t = await started(transport(f"mqtts://127.0.0.1:{port}", tls=TlsSettings(ca_file=pki["ca"])))
    try:
        await t.publish("tls/x", b"encrypted")
        [m] = await c.wait(1)
        assert m.payload == b"encrypted"
    finally:
        await t.stop()
    # Without our CA the broker's certificate is refused (the system store does not know it)...
    t = transport(f"mqtts://127.0.0.1:{port}")
    with capture_logs() as logs:
        await t.start()
        assert not await t.wait_connected(1.0)
        await t.stop()
    failed = next(e for e in logs if e["event"] == "mqtt_connect_failed")
    assert "certificate verify failed" in failed["reason"]
    # ...unless verification is explicitly switched off, which is said at every connect.
    insecure = TlsSettings(insecure_skip_verify=True)
    with capture_logs() as logs:
        t = await started(transport(f"mqtts://127.0.0.1:{port}", tls=insecure))
        await t.stop()
    [warned] = [e for e in logs if e["event"] == "mqtt_tls_not_verified"]
    assert warned["log_level"] == "warning" and "insecure_skip_verify" in warned["hint"]


async def test_mutual_tls(
    pki: dict[str, str], mosquitto_factory: Callable[..., Mosquitto], free_port: Callable[[], int]
) -> None:
    port = free_port()
    mosquitto_factory(tls_listener(port, pki, require_certificate=True))
    url = f"mqtts://127.0.0.1:{port}"
    t = await started(
        transport(
            url,
            tls=TlsSettings(ca_file=pki["ca"], cert_file=pki["client"], key_file=pki["client_key"]),
        )
    )
    await t.publish("mtls/x", b"1")
    await t.stop()
    # no client certificate; TLS 1.3 sends the refusal after the handshake: it must not pass
    # for a 3.1.1 broker
    refused = await _refusal(transport(url, tls=TlsSettings(ca_file=pki["ca"])))
    assert "requires a client certificate" in refused["hint"]
    assert "CERTIFICATE_REQUIRED" in refused["reason"]
    # a client certificate from a CA the broker does not trust
    tmp = Path(pki["ca"]).parent
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue, rogue_key_file = write_pair(tmp, "rogue", certificate("rogue-client", rogue_key, None),
                                       rogue_key)
    refused = await _refusal(transport(url, tls=TlsSettings(
        ca_file=pki["ca"], cert_file=rogue, key_file=rogue_key_file)))
    assert "client certificate" in refused["hint"]


async def _refusal(t: MqttTransport) -> dict[str, Any]:
    """The refusal warning of a transport the broker refuses; there is no protocol fallback.

    Under load the broker's reset can overtake its TLS alert, so an attempt may fail
    unexplained first ("connection closed before CONNACK"); the refusal is then named by
    the next attempt that reads the alert, still with a warning of its own."""
    with capture_logs() as logs:
        await t.start()
        await until(lambda: any(e["event"] == "mqtt_tls_refused" for e in logs), 30,
                    "the TLS refusal")
        assert not t.connected
        await t.stop()
    assert not [e for e in logs if e["event"] == "mqtt_protocol_fallback"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    [refused] = [e for e in warnings if e["event"] == "mqtt_tls_refused"]
    assert {e["event"] for e in warnings} <= {"mqtt_tls_refused", "mqtt_connect_failed"}, warnings
    return refused


async def test_a_fallback_is_logged_only_when_311_connects() -> None:
    """A listener that closes every connection unanswered drops the v5 CONNECT and the 3.1.1
    one alike: the drop said nothing about the protocol, so no fallback is announced."""
    accepted = 0

    async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        w.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = transport(f"mqtt://127.0.0.1:{port}")
    try:
        with capture_logs() as logs:
            await t.start()
            await until(lambda: accepted >= 2, 10, "a v5 and a 3.1.1 attempt")
            await t.stop()
    finally:
        server.close()
    assert not [e for e in logs if e["event"] == "mqtt_protocol_fallback"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["mqtt_connect_failed"]


async def test_unreadable_tls_file_is_a_configuration_error(tmp_path: Path) -> None:
    t = transport("mqtts://127.0.0.1:1", tls=TlsSettings(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigurationError, match="TLS"):
        await t.start()


def test_paho_reports_a_311_refusal_of_v5_as_reason_132() -> None:
    """The fallback keys on this mapping; if paho changes it, this test says so first."""
    from paho.mqtt._packet import decode_connack

    result = decode_connack(0x20, b"\x00\x01", mqtt.MQTTv5)
    assert result.reason.value == 132 and result.reason.is_failure
    assert CallbackAPIVersion.VERSION2  # the callback API the transport is written against


async def test_this_link_only_is_never_queued_for_a_later_connection(
    mosquitto: Mosquitto, mqtt_collector: Collect, free_port: Callable[[], int]
) -> None:
    """Sparkplug data belongs to one connection: without a link it fails at once instead of
    waiting for the next one, and the 3.1.1 payload is chosen when the message is written."""
    down = transport(f"mqtt://127.0.0.1:{free_port()}")
    await down.start()
    try:
        with pytest.raises(TransportError, match="this_link_only"):
            await down.publish("t/x", b"x", qos=0, this_link_only=True)
    finally:
        await down.stop()
    live = mqtt_collector(mosquitto.host, mosquitto.port, "t/#", protocol="3.1.1")
    t = await started(transport(mosquitto.url, protocol="3.1.1"))
    try:
        await t.publish("t/json", b"body", properties={"user_property": [("jws", "p..s")]},
                        payload_mqtt311=b"envelope")
        [got] = await live.wait(1)
        assert got.payload == b"envelope"
    finally:
        await t.stop()
