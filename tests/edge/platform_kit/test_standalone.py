"""The platform kit works with only `cryptography` and `rfc8785`: paho-mqtt, pydantic and
the daemon's libraries are refused at import in a fresh interpreter, and signing a request,
verifying envelopes and json messages, reading a capture and making the platform's key pair
(`python -m edge.platform_kit.keys`) still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from edge.config.loader import parse_plant
from edge.platform_kit import keys
from edge.query.handler import load_platform_keys
from models.plant import QUERY_METHODS, Ident

ROOT = Path(__file__).resolve().parents[3]

REFUSE = """
import sys
for name in ("paho", "pydantic", "structlog", "yaml", "google", "asyncua", "pymodbus", "httpx",
             "aas_core3", "amqtt", "orjson", "models.plant"):
    sys.modules[name] = None  # any import of them raises ImportError
"""

SCRIPT = REFUSE + """
import json
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge.platform_kit import capture, client, keys, verifier
from edge.signing.jws import Signer, jwks

key = Ed25519PrivateKey.generate()
request = client.sign_request(key, client.new_request("oee", {"asset": "m1"}))
assert set(request) == {"protected", "payload", "signature"}
body = {"v": 1, "gateway": "g", "topic": "t", "asset": None, "stream": "response", "seq": 1,
        "prev": None, "created": "2026-11-22T10:00:00.000Z", "historical": False, "records": []}
env = Signer(key).sign_body(body)
assert verifier.verify_envelope(env, jwks([key]), topic="t") == body
print("ok")
"""


def test_platform_kit_needs_only_cryptography_and_rfc8785() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_platform_kit_examples_compile() -> None:
    text = (ROOT / "docs" / "platform-kit.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 4
    for block in blocks:
        compile(block, "docs/platform-kit.md", "exec")


def test_a_platform_makes_its_key_pair_with_the_kit_alone(tmp_path: Path) -> None:
    """`python -m edge.platform_kit.keys` (docs/platform-kit.md) with pydantic, yaml and
    models.plant refused: it imported `models.plant` (pydantic) before; the block it prints is
    what `edge-gateway keys platform` prints and the gateway's own loader accepts it."""
    run = REFUSE + (
        "import runpy; sys.argv = ['keys', '-o', sys.argv[1], '--id', 'acme']\n"
        "runpy.run_module('edge.platform_kit.keys', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", run, str(tmp_path / "k")], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "keep it on the platform" in out.stderr
    public = (tmp_path / "k" / "acme.pub.pem").resolve()
    assert out.stdout.startswith("# paste into the plant YAML")
    assert f"    public_key_file: {public}   # kid " in out.stdout
    demo = (ROOT / "config" / "demo-plant.yaml").read_text()
    loaded = parse_plant(demo + "\n" + out.stdout, str(ROOT / "config" / "x.yaml"))
    (platform,) = loaded.plant.platforms
    assert platform.id == "acme" and tuple(platform.methods) == QUERY_METHODS
    assert len(load_platform_keys(loaded.plant.platforms)) == 1
    again = subprocess.run([sys.executable, "-m", "edge.platform_kit.keys", "-o",
                            str(tmp_path / "k"), "--id", "acme"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "exists; pick another directory" in again.stderr


def test_the_kits_copies_of_the_methods_and_the_id_rule_match_the_model() -> None:
    assert keys.QUERY_METHODS == QUERY_METHODS


@pytest.mark.parametrize("text", ["acme", "a_b-1", "x" * 64, "x" * 65, "", "Plant A", "a/b",
                                  "acme\n", "é"])
def test_the_kits_id_check_agrees_with_the_yamls(text: str) -> None:
    try:
        TypeAdapter(Ident).validate_python(text)
        yaml_accepts = True
    except ValidationError:
        yaml_accepts = False
    assert (keys.PLATFORM_ID.fullmatch(text) is not None) == yaml_accepts
