"""OPC UA settings, security helpers and the OPC 40501-1 mapping table, without sockets."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.opcua import machine_tool as mt
from adapters.opcua.profile_signals import identification_signal
from adapters.opcua.security import (
    UntrustedServerCertificate,
    check_server_certificate,
    ensure_client_identity,
    make_self_signed,
    resolve_secret,
)
from adapters.opcua.settings import OpcUaSettings, browse_segments, default_pki_dir
from models.errors import ConfigurationError
from models.plant import SecretRef

EP = "opc.tcp://127.0.0.1:4841/"


def settings(conn: dict[str, Any] | None = None, points: list[Any] | None = None) -> OpcUaSettings:
    pts = points if points is not None else [{"name": "x", "node": "nsu=urn:a;s=X"}]
    return OpcUaSettings.model_validate({"connection": {"endpoint": EP, **(conn or {})},
                                         "points": pts})


@pytest.mark.parametrize("node", [
    "nsu=urn:a;s=Machine.X", "nsu=http://opcfoundation.org/UA/DI/;i=6001", "i=2258",
    "/{http://opcfoundation.org/UA/Machinery/}Machines/{urn:x}M1/CurrentState",
])
def test_node_addresses_accepted(node: str) -> None:
    assert settings(points=[{"name": "x", "node": node}]).points[0].node == node


@pytest.mark.parametrize(("node", "why"), [
    ("ns=2;s=X", "bare namespace"), ("foo", "expected"), ("/", "browse path"),
])
def test_node_addresses_refused(node: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        settings(points=[{"name": "x", "node": node}])


def test_browse_segments_keep_uris_with_slashes() -> None:
    assert browse_segments("/{http://a/b/}Machines/Name") == [("http://a/b/", "Machines"),
                                                              (None, "Name")]


def test_policy_and_mode_go_together() -> None:
    with pytest.raises(ValidationError, match="go together"):
        settings({"security_policy": "Basic256Sha256"})
    with pytest.raises(ValidationError, match="go together"):
        settings({"security_mode": "Sign"})
    s = settings({"security_policy": "Aes256_Sha256_RsaPss", "security_mode": "SignAndEncrypt"})
    assert s.connection.security_mode == "SignAndEncrypt"


def test_points_or_profile_required_and_unique() -> None:
    with pytest.raises(ValidationError, match="no points"):
        settings(points=[])
    assert settings({"profile": "machine_tool"}, points=[]).points == []
    with pytest.raises(ValidationError, match="duplicate"):
        settings(points=[{"name": "x", "node": "i=1"}, {"name": "x", "node": "i=2"}])


def test_deadband_rules() -> None:
    with pytest.raises(ValidationError, match="subscribe"):
        settings(points=[{"name": "x", "node": "i=1", "mode": "read",
                          "deadband_type": "absolute", "deadband_value": 1}])
    with pytest.raises(ValidationError, match=r"0\.\.100"):
        settings(points=[{"name": "x", "node": "i=1", "deadband_type": "percent",
                          "deadband_value": 150}])


def test_pki_dir_never_relative_to_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert default_pki_dir() == Path("/var/lib/edge-gateway/opcua-pki")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gw:/other")
    assert default_pki_dir() == Path("/var/lib/gw/opcua-pki")
    assert settings().connection.trust_path() == Path("/var/lib/gw/opcua-pki/trusted")
    # the gateway's state directory, when the runner passes it, wins over the env default
    assert settings().connection.pki_path(Path("/srv/gw")) == Path("/srv/gw/opcua-pki")


def test_client_identity_generated_once_with_private_key_0600(tmp_path: Path) -> None:
    first = ensure_client_identity(tmp_path / "pki", "urn:test")
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    again = ensure_client_identity(tmp_path / "pki", "urn:test")
    assert again.cert_der == first.cert_der


def test_trust_list_tofu_and_refusal(tmp_path: Path) -> None:
    a, _ = make_self_signed("urn:a", "a", server=True)
    b, _ = make_self_signed("urn:b", "b", server=True)
    trust, pki = tmp_path / "trusted", tmp_path / "pki"
    with pytest.raises(UntrustedServerCertificate, match=r"mv .*rejected") as err:
        check_server_certificate(a, trust_dir=trust, pki_dir=pki, tofu=False, endpoint=EP)
    assert "is not in the trust list" in str(err.value)
    pinned = check_server_certificate(a, trust_dir=trust, pki_dir=pki, tofu=True, endpoint=EP)
    assert pinned is not None and Path(pinned).read_bytes() == a
    assert check_server_certificate(a, trust_dir=trust, pki_dir=pki, tofu=True,
                                    endpoint=EP) is None
    with pytest.raises(UntrustedServerCertificate, match="differs from the pinned"):
        check_server_certificate(b, trust_dir=trust, pki_dir=pki, tofu=True, endpoint=EP)


def test_secrets_resolve_references_and_pass_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading env and file references is `adapters.base.resolve_secret`'s, tested with the
    gateway's secrets (tests/edge/transport); here what the OPC UA settings add: a user name
    may be written in the YAML, and no user is no user."""
    monkeypatch.setenv("OPCUA_PW", "s3cret")
    assert resolve_secret(SecretRef(env="OPCUA_PW")) == "s3cret"
    assert (resolve_secret("operator"), resolve_secret(None)) == ("operator", None)
    with pytest.raises(ConfigurationError, match=r"OPCUA_NOPE_UNSET.*not set"):
        resolve_secret(SecretRef(env="OPCUA_NOPE_UNSET"))


@pytest.mark.parametrize(("inputs", "execution", "availability"), [
    ({"item_state": "NotAvailable"}, None, "unavailable"),
    ({"item_state": "OutOfService"}, "stopped", "available"),
    ({"item_state": "Executing", "program_state": "Running"}, "active", "available"),
    ({"item_state": "Executing"}, "active", "available"),
    ({"item_state": "Executing", "program_state": "Interrupted"}, "interrupted", "available"),
    ({"item_state": "Executing", "program_state": "Interrupted", "feed_override": 0.0},
     "feed_hold", "available"),
    ({"item_state": "NotExecuting", "program_state": "Ended"}, "program_completed", "available"),
    ({"item_state": "NotExecuting", "program_state": "Aborted"}, "program_stopped", "available"),
    ({"item_state": "NotExecuting"}, "ready", "available"),
])
def test_annex_c_execution(inputs: dict[str, Any], execution: str | None,
                           availability: str) -> None:
    out = mt.derive(inputs)
    assert out.get("execution", (None, None))[0] == execution
    assert out["availability"][0] == availability


def test_mode_and_counts() -> None:
    out = mt.derive({"channel_mode": 1, "parts_completed": 10, "parts_good": 7,
                     "program": "O42"})
    assert out["controller_mode"][0] == "mdi"
    assert (out["part_count"][0], out["bad_part_count"][0]) == (10, 3)
    assert out["program"][0] == "O42"
    assert mt.derive({"operation_mode": 3, "channel_mode": 0})["controller_mode"][0] == \
        "semi_automatic"
    assert mt.derive({"operation_mode_sm": "Setup"})["controller_mode"][0] == "manual"
    assert mt.derive({"parts_lifetime": 99})["part_count"][0] == 99
    assert identification_signal("SerialNumber") == "identification_serial_number"
