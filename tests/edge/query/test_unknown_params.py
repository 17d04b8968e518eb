"""Every query method refuses `params` keys it does not take (`bad_request`, naming them and
the keys it takes), before its backend runs: `oee` with `windw=today` (a typo of `window`)
was answered with the running shift, a figure the platform did not ask for. The known keys
are all accepted; `reserve`'s table is its params model's fields, so the two cannot drift."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e import plant_yaml

from edge.config.loader import parse_plant
from edge.platform_kit.client import new_request, sign_request
from edge.platform_kit.verifier import verify_envelope
from edge.query.handler import Incoming, QueryHandler
from edge.signing.jws import Signer, jwk_public, jwks
from models.booking import ReserveParams
from models.plant import QUERY_METHODS, Platform
from models.query import QUERY_PARAMS

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
REPLIES = "platform/replies/p"


class Calls:
    """A backend that records which method ran and answers every one with `{}`."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def _note(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self.ran.append((method, dict(params or {})))
        return {}

    def query_describe(self) -> dict[str, Any]:
        return self._note("describe")

    def query_state(self, asset: str | None) -> dict[str, Any]:
        return self._note("state")

    def query_oee(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._note("oee", params)

    def query_aas(self, asset: str | None) -> dict[str, Any]:
        return self._note("aas")

    def query_capacity(self, asset: str | None) -> dict[str, Any]:
        return self._note("capacity")

    def query_health(self) -> dict[str, Any]:
        return self._note("health")

    async def query_booking(
        self, method: str, platform: Platform, params: Mapping[str, Any], others: Any = None,
        seen: Any = None,
    ) -> dict[str, Any]:
        return self._note(method, params)

    def query_parts(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._note("parts", params)

    def query_energy(self, asset: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._note("energy", params)


class Gateway:
    """A query handler for one platform allowed every method, asked and verified as the
    platform kit asks and verifies."""

    def __init__(self, tmp_path: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        text = plant_yaml(tmp_path / "state", [1502], 1883) + (
            "platforms:\n  - {id: p, public_key_file: p.pem, rate_limit: 1000, burst: 1000,\n"
            f"     methods: [{', '.join(QUERY_METHODS)}]}}\n"
        )
        plant = parse_plant(text, "plant.yaml").plant
        self.signer = Signer(Ed25519PrivateKey.generate())
        self.backend = Calls()
        self.handler = QueryHandler(
            plant, self.backend, signer=lambda: self.signer,
            keys={jwk_public(self.key)["kid"]: (plant.platforms[0], self.key.public_key())},
            logger=_Quiet(), clock=lambda: NOW,
        )

    def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = new_request(method, params)
        body["ts"] = NOW.isoformat().replace("+00:00", "Z")
        payload = json.dumps(sign_request(self.key, body)).encode()
        reply = self.handler.handle(Incoming(self.handler.topic, payload, REPLIES, b"c", "local"))
        assert reply is not None
        verified = verify_envelope(reply.payload, jwks([self.signer.public_key]), topic=REPLIES)
        record: dict[str, Any] = verified["records"][0]
        return record


class _Quiet:
    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_kw: None


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def test_every_method_has_a_table_and_reserve_s_is_its_model() -> None:
    assert set(QUERY_PARAMS) == set(QUERY_METHODS)
    assert set(QUERY_PARAMS["reserve"]) == set(ReserveParams.model_fields)
    assert all("asset" in known for known in QUERY_PARAMS.values())


@pytest.mark.parametrize("method", QUERY_METHODS)
def test_an_unknown_key_is_refused_naming_it_and_the_known_ones(
    gateway: Gateway, method: str
) -> None:
    record = gateway.ask(method, {"asset": "m1", "windw": "today", "Limit": 5})
    assert record["ok"] is False
    assert record["error"]["code"] == "bad_request"
    message = record["error"]["message"]
    assert message.startswith(f"unknown params for {method}: Limit, windw ("), message
    assert message.endswith(f"({method} takes {', '.join(QUERY_PARAMS[method])})")
    assert gateway.backend.ran == []  # refused before anything was computed


@pytest.mark.parametrize("method", QUERY_METHODS)
def test_every_known_key_passes_to_the_method(gateway: Gateway, method: str) -> None:
    params = {key: "x" for key in QUERY_PARAMS[method]} | {"asset": "m1"}
    record = gateway.ask(method, params)
    assert record["ok"] is True, record
    assert gateway.backend.ran[0][0] == method


def test_the_audit_case_oee_windw_today_is_not_answered_with_the_shift(
    gateway: Gateway,
) -> None:
    record = gateway.ask("oee", {"asset": "m1", "windw": "today"})
    assert record["error"] == {
        "code": "bad_request",
        "message": "unknown params for oee: windw (oee takes asset, window, start, end, hours)",
    }
    doc = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()
    assert json.dumps(record["error"]["message"]) in doc  # the documented reply is this one
    assert gateway.ask("oee", {"asset": "m1", "window": "today"})["ok"] is True
    assert gateway.backend.ran == [("oee", {"asset": "m1", "window": "today"})]
