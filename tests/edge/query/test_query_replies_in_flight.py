"""The query endpoint takes the next request while a reply waits for the broker's PUBACK.

Why: requests are answered one at a time by one task. It used to wait for each reply's
PUBACK before taking the next request, so every query paid a broker round trip on top of its
own work (most of its time on a busy host: bench section 2m), and a broker slow to
acknowledge held every platform's queries behind it for up to 10 s. Here the gateway's link
to a real Mosquitto goes through a proxy that holds what the gateway sends (its replies
and so their PUBACKs wait), as the parent of `run --workers 2` serves queries: the second
request must still be taken and checked (its nonce is in the nonce store), and once the
link flows again both replies arrive, in the order they were answered, verified.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mosquitto
from e2e import GatewayProcess, proxied_plant, wait_for
from query_platform import Platform, key_files

from edge.platform_kit.client import new_request, sign_request

pytestmark = pytest.mark.slow


def _stored_nonces(state: Path) -> set[str]:
    path = state / "query-nonces.sqlite"
    if not path.exists():
        return set()
    conn = sqlite3.connect(path, timeout=5)
    try:
        return {str(n) for (n,) in conn.execute("SELECT nonce FROM nonces")}
    except sqlite3.OperationalError:  # the table is created with the file: not there yet
        return set()
    finally:
        conn.close()


def test_the_next_request_is_taken_while_a_reply_waits_for_its_puback(
    tmp_path: Path, mosquitto: Mosquitto, free_port: Callable[[], int]
) -> None:
    key, _, public = key_files(tmp_path, "p1")
    plant, proxy = proxied_plant(
        tmp_path, free_port, mosquitto.port, "", machines=2, gateway_extra=", workers: 2"
    )
    plant.write_text(plant.read_text() + f"platforms:\n  - {{id: p1, public_key_file: {public}}}\n")
    proxy.start()
    gw = GatewayProcess(plant).start()
    p = Platform(mosquitto.port)
    try:

        def serving() -> bool:
            probe = new_request("describe", {})
            p.send(json.dumps(sign_request(key, probe)).encode(), corr=probe["id"])
            try:
                return bool(p.reply(probe["id"], within=2)["ok"])
            except AssertionError:  # not subscribed yet
                return False

        wait_for(serving, 60, "queries served")
        proxy.hold()  # from here the gateway's replies (and its PUBACKs) stay in the proxy
        first, second = new_request("describe", {}), new_request("health", {})
        for body in (first, second):
            p.send(json.dumps(sign_request(key, body)).encode(), corr=body["id"])
        wait_for(lambda: second["nonce"] in _stored_nonces(tmp_path / "state"), 5,
                 "the second request taken while the first reply waits for its PUBACK")
        assert first["nonce"] in _stored_nonces(tmp_path / "state")
        proxy.release()
        wait_for(lambda: {first["id"], second["id"]} <= p.replies.keys(), 20, "both replies")
        order = [k for k in p.replies if k in (first["id"], second["id"])]
        assert order == [first["id"], second["id"]], "replies left out of order"
        assert p.reply(first["id"])["ok"] and p.reply(second["id"])["ok"]
    finally:
        p.close()
        gw.kill()
        proxy.stop()
