"""`ConfigPath`: a relative path in the plant YAML is anchored at the YAML file's directory
(given as the validation context), an absolute one is kept, and without the context a value
stays as given (library users and tests constructing models directly)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from models.config_path import CONFIG_DIR, ConfigPath, anchor
from models.plant import Destination, Gateway, Platform, SecretRef, TlsSettings

PLANT_DIR = {CONFIG_DIR: "/etc/plant"}


@pytest.mark.parametrize(
    ("written", "anchored"),
    [
        ("certs/ca.pem", "/etc/plant/certs/ca.pem"),
        ("ca.pem", "/etc/plant/ca.pem"),
        ("./certs/./ca.pem", "/etc/plant/certs/ca.pem"),
        ("certs//ca.pem", "/etc/plant/certs/ca.pem"),
        ("../common/ca.pem", "/etc/plant/../common/ca.pem"),  # `..` as the kernel walks it
        (".", "/etc/plant"),
        ("/opt/pki/ca.pem", "/opt/pki/ca.pem"),
        ("", ""),  # "not set" to a reader testing truthiness; never the directory itself
    ],
)
def test_relative_paths_are_anchored_at_the_yaml_directory(written: str, anchored: str) -> None:
    assert anchor(written, PLANT_DIR) == anchored


@pytest.mark.parametrize("context", [None, {}, {"other": "/x"}, {CONFIG_DIR: None}, "junk"])
def test_without_the_directory_a_path_is_kept_as_given(context: object) -> None:
    assert anchor("certs/ca.pem", context) == "certs/ca.pem"
    assert anchor("~/ca.pem", context) == "~/ca.pem"


def test_a_home_relative_path_is_refused_not_expanded() -> None:
    """The service user's home is not the engineer's: `~` would point somewhere else."""
    for written in ("~/certs/ca.pem", "~gateway/ca.pem", "~"):
        with pytest.raises(ValueError, match="'~' is not expanded"):
            anchor(written, PLANT_DIR)


def test_state_directories_are_left_to_the_loaded_plant_but_refuse_home_too() -> None:
    """`LoadedPlant.state_dir` anchors and resolves `state_dir`/`keys_dir` itself."""
    gateway = Gateway.model_validate(
        {"id": "gw", "site": "s", "state_dir": "../state", "keys_dir": "keys"}, context=PLANT_DIR
    )
    assert (gateway.state_dir, gateway.keys_dir) == ("../state", "keys")
    with pytest.raises(ValidationError, match="'~' is not expanded"):
        Gateway.model_validate({"id": "gw", "site": "s", "state_dir": "~/state"},
                               context=PLANT_DIR)
    assert Gateway.model_validate({"id": "gw", "site": "s", "keys_dir": "~/k"}).keys_dir == "~/k"


def test_every_file_field_of_the_plant_models_is_anchored() -> None:
    dest = Destination.model_validate(
        {
            "id": "cloud",
            "url": "mqtts://broker:8883",
            "password": {"file": "secrets/mqtt"},
            "tls": {
                "ca_file": "certs/ca.pem",
                "cert_file": "certs/gw.pem",
                "key_file": "/etc/ssl/private/gw.key",
                "key_password": {"file": "secrets/key"},
            },
        },
        context=PLANT_DIR,
    )
    assert dest.password == SecretRef(file="/etc/plant/secrets/mqtt")
    assert dest.tls == TlsSettings(
        ca_file="/etc/plant/certs/ca.pem",
        cert_file="/etc/plant/certs/gw.pem",
        key_file="/etc/ssl/private/gw.key",
        key_password=SecretRef(file="/etc/plant/secrets/key"),
    )
    platform = Platform.model_validate({"id": "p", "jwks_file": "keys/p.json"}, context=PLANT_DIR)
    assert platform.jwks_file == "/etc/plant/keys/p.json"
    # an environment variable is no path
    assert SecretRef.model_validate({"env": "certs"}, context=PLANT_DIR).env == "certs"


def test_models_built_directly_keep_their_paths() -> None:
    assert TlsSettings(ca_file="certs/ca.pem").ca_file == "certs/ca.pem"
    assert TlsSettings.model_validate({"ca_file": "certs/ca.pem"}).ca_file == "certs/ca.pem"


def test_anchoring_twice_changes_nothing() -> None:
    """A model re-validated from its own dump (the parent hands a worker a platform that
    way) keeps the anchored paths, with or without the context."""
    first = Platform.model_validate({"id": "p", "public_key_file": "p.pem"}, context=PLANT_DIR)
    dumped = first.model_dump(mode="json")
    assert Platform.model_validate(dumped) == first
    assert Platform.model_validate(dumped, context={CONFIG_DIR: "/elsewhere"}) == first


def test_the_refusal_is_a_validation_error_at_the_field() -> None:
    class Holder(BaseModel):
        path: ConfigPath

    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"path": "~/ca.pem"}, context=PLANT_DIR)
    [error] = caught.value.errors()
    assert error["loc"] == ("path",) and "'~' is not expanded" in error["msg"]
