"""`edge-gateway` as a platform engineer uses it in a shell: pipes, empty topics, `edge/#`.

- output cut short by its reader (`... | head`) ends quietly, without a traceback, and
  `watch`, which would listen forever, ends too;
- `verify` that saw no envelope fails ("nothing verified"): a mistyped topic filter must
  not pass for a clean stream;
- a capture of `edge/#` holds the unsigned `status` and `keys` messages: they are skipped
  and counted, not reported as malformed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import ROOT
from paho.mqtt import publish

from edge.signing.jws import ChainState, Signer, jwks, signing_input_hash

GW = "edge/plant-a/gw-01"
TOPIC = "edge/plant-a/hall-1/line-1/m1/telemetry"


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], text=True, cwd=ROOT,
                          timeout=60, check=False, **kw)  # type: ignore[call-overload]


def test_output_into_a_closed_pipe_ends_without_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) is already gone when we write
    try:
        done = cli("schema", stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141  # as if killed by SIGPIPE, like any shell tool


def test_watch_into_a_closed_pipe_ends(mosquitto: Mosquitto) -> None:
    """`watch | head`: the reader is gone after the first table; watch must end (141), not
    listen on until Ctrl-C with nobody reading (it did: its drawer died alone)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge.cli", "watch", "--broker", mosquitto.url,
             "--every", "0.2"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr


def test_verify_live_with_no_envelope_fails(mosquitto: Mosquitto) -> None:
    publish.single(f"{GW}/status", json.dumps({"state": "online", "gateway": "gw-01"}),
                   qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port)
    done = cli("verify", "--broker", mosquitto.url, "--topic", "edge/#", "--seconds", "1",
               capture_output=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAILED: nothing verified"), done.stdout
    assert "skipped 1" in done.stdout


def test_capture_of_everything_skips_status_and_keys(tmp_path: Path) -> None:
    signer, chain = Signer(Ed25519PrivateKey.generate()), ChainState()
    keyset = jwks([signer.public_key])
    lines = [{"topic": f"{GW}/keys", "envelope": keyset},
             {"topic": f"{GW}/status", "envelope": {"state": "online", "gateway": "gw-01"}}]
    for _ in range(3):
        seq, prev = chain.next(TOPIC)
        env = signer.sign_body({
            "v": 1, "gateway": "gw-01", "topic": TOPIC, "asset": "m1", "stream": "telemetry",
            "seq": seq, "prev": prev, "created": "2026-11-22T10:00:00.123Z",
            "historical": False, "records": []})
        chain.commit(TOPIC, seq, signing_input_hash(env))
        lines.append({"topic": TOPIC, "envelope": env})
    capture, keys = tmp_path / "all.jsonl", tmp_path / "jwks.json"
    capture.write_text("".join(json.dumps(x) + "\n" for x in lines))
    keys.write_text(json.dumps(keyset))
    done = cli("verify", str(capture), "--jwks", str(keys), "--json", capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["counts"]["ok"] == 3 and report["skipped"] == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps(x) + "\n" for x in lines[:2]))
    nothing = cli("verify", str(empty), "--jwks", str(keys), capture_output=True)
    assert nothing.returncode == 1 and "nothing verified" in nothing.stdout


def test_a_saved_capture_carries_its_keys(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`verify --broker --save FILE` saved the envelopes but not the retained JWKS, so the
    file could be verified later only with a separate `--jwks`. Now the keys message is
    saved too and `verify FILE` uses it; an explicit `--jwks` still wins, and the output
    says which keys were used."""
    signer, chain = Signer(Ed25519PrivateKey.generate()), ChainState()
    publish.single(f"{GW}/keys", json.dumps(jwks([signer.public_key])), qos=1, retain=True,
                   hostname=mosquitto.host, port=mosquitto.port)
    topics = [TOPIC, TOPIC.replace("/m1/", "/m2/")]
    for topic in topics:  # retained, so they reach a subscriber that comes later
        seq, prev = chain.next(topic)
        env = signer.sign_body({
            "v": 1, "gateway": "gw-01", "topic": topic, "asset": topic.split("/")[4],
            "stream": "telemetry", "seq": seq, "prev": prev,
            "created": "2026-11-22T10:00:00.123Z", "historical": False, "records": []})
        publish.single(topic, json.dumps(env), qos=1, retain=True, hostname=mosquitto.host,
                       port=mosquitto.port)
    saved = tmp_path / "saved.jsonl"
    live = cli("verify", "--broker", mosquitto.url, "--topic", "edge/#", "--seconds", "1",
               "--save", str(saved), capture_output=True)
    assert live.returncode == 0, live.stdout + live.stderr
    assert live.stdout.startswith("OK: 2 envelope(s)"), live.stdout
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert {"topic": f"{GW}/keys", "keys": jwks([signer.public_key])} in lines

    later = cli("verify", str(saved), capture_output=True)
    assert later.returncode == 0, later.stdout + later.stderr
    assert later.stdout.startswith("OK: 2 envelope(s): ok 2;"), later.stdout
    assert "skipped 1 status/keys/query" in later.stdout
    assert "verify: keys from the capture's keys message(s): 1 key(s)" in later.stderr

    other = tmp_path / "other.json"
    other.write_text(json.dumps(jwks([Ed25519PrivateKey.generate().public_key()])))
    explicit = cli("verify", str(saved), "--jwks", str(other), capture_output=True)
    assert explicit.returncode == 1, explicit.stdout + explicit.stderr
    assert f"verify: keys from --jwks {other}" in explicit.stderr
    assert "unknown_key" in explicit.stdout

    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(x) + "\n" for x in lines if "envelope" in x))
    keyless = cli("verify", str(bare), capture_output=True)
    assert keyless.returncode == 2, keyless.stdout + keyless.stderr
    assert "holds no keys message" in keyless.stderr and "--jwks FILE" in keyless.stderr
    assert "Traceback" not in keyless.stderr


async def test_watch_and_verify_side_by_side_keep_their_links(mosquitto: Mosquitto) -> None:
    """README suggests `watch` in one terminal and `verify` in another; both connected as
    `edge-verify`, so the broker closed each link when the other (re)connected and both
    reported false gaps and duplicates."""
    import asyncio
    import io

    from e2e import until

    from edge.platform_kit.capture import verify_live

    stop = asyncio.Event()
    links = [asyncio.Event(), asyncio.Event()]
    runs = [
        asyncio.create_task(verify_live(mosquitto.url, "edge/none/#", None, io.StringIO(),
                                        stop=stop, connected=link))
        for link in links
    ]
    try:
        await until(lambda: all(link.is_set() for link in links), 10, "both connected")
    finally:
        stop.set()
        await asyncio.gather(*runs)
    log = mosquitto.log.read_text()
    ids = {line.split(" as ")[1].split()[0] for line in log.splitlines()
           if "New client connected" in line and " as edge-verify" in line}
    assert len(ids) == 2, log
    assert "already connected, closing old connection" not in log, log
