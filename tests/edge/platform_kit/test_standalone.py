"""The platform kit works with only `cryptography` and `rfc8785`: paho-mqtt, pydantic and
the daemon's libraries are refused at import in a fresh interpreter, and signing a request,
verifying envelopes and json messages, and reading a capture still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
for name in ("paho", "pydantic", "structlog", "yaml", "google", "asyncua", "pymodbus", "httpx",
             "aas_core3", "amqtt", "orjson"):
    sys.modules[name] = None  # any import of them raises ImportError
import json
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge.platform_kit import capture, client, verifier
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
