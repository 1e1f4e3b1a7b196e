"""ClientProfile: defaults from the environment or a small YAML file, `file:line: key: problem` errors, and a key
refused in a file others can read."""

from __future__ import annotations

from pathlib import Path

import pytest
from rover_safety.client import ClientProfile, ProfileError, connect

from tests.support.fake_server import FakeServer

FP = "AB:" * 31 + "AB"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_environment_gives_the_defaults(tmp_path: Path) -> None:
    env = {"ROVER_SAFETY_ADDRESS": "rover.local:8080", "ROVER_SAFETY_KEY_ID": "kid", "ROVER_SAFETY_API_KEY": "k",
           "ROVER_SAFETY_TLS_FINGERPRINT": FP, "HOME": str(tmp_path)}
    profile = ClientProfile.load(environ=env)
    assert (profile.address, profile.key_id, profile.api_key, profile.tls_fingerprint) == \
        ("rover.local:8080", "kid", "k", FP)
    assert profile.source == "environment" and "k'" not in repr(profile)
    assert profile.connect_kwargs() == {"address": "rover.local:8080", "tls": True, "key_id": "kid",
                                        "api_key": "k", "tls_fingerprint": FP}
    insecure = ClientProfile.load(environ={"ROVER_SAFETY_ADDRESS": "127.0.0.1", "ROVER_SAFETY_INSECURE": "yes",
                                           "XDG_CONFIG_HOME": str(tmp_path)})
    assert insecure.connect_kwargs()["tls"] is False
    with pytest.raises(ProfileError, match=r"ROVER_SAFETY_INSECURE: 'maybe'"):
        ClientProfile.load(environ={"ROVER_SAFETY_INSECURE": "maybe", "XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ProfileError, match=r"ROVER_SAFETY_TLS_FINGERPRINT: .*64 hex"):
        ClientProfile.load(environ={"ROVER_SAFETY_TLS_FINGERPRINT": "xyz", "XDG_CONFIG_HOME": str(tmp_path)})


def test_a_profile_file_with_the_environment_on_top(tmp_path: Path) -> None:
    folder = tmp_path / "rover-safety"
    folder.mkdir()
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    write(folder / "client.yaml", "address: rover.local:9090\nkey_id: kid\napi_key: secret\nca_file: ca.pem\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path), "ROVER_SAFETY_ADDRESS": "10.0.0.7:8080"}
    profile = ClientProfile.load(environ=env)
    assert profile.address == "10.0.0.7:8080" and profile.api_key == "secret"
    assert profile.ca_file == str(folder / "ca.pem")  # relative to the profile's folder
    assert str(folder / "client.yaml") in profile.source and "environment" in profile.source
    other = write(tmp_path / "other.yaml", "address: other:1\ninsecure: true\n", 0o644)  # no key: any mode
    assert ClientProfile.load(environ={"ROVER_SAFETY_PROFILE": str(other)}).insecure is True
    assert ClientProfile.load(environ={"HOME": str(tmp_path / "nobody")}) == ClientProfile()


@pytest.mark.parametrize(("text", "problem"), [
    ("address: a:1\nport: 8080\n", ":2: port: unknown key"),
    ("address: a:1\ninsecure: maybe\n", ":2: insecure: 'maybe' is not true or false"),
    ("address: a:1\ntls_fingerprint: abc\n", ":2: tls_fingerprint: .*64 hex"),
    ("address: 'a:x'\n", ":1: address: .*not a number"),
    ("address: a:1\nkey_id: kid\n", ":2: key_id: given without api_key"),
    ("address: [a\n", ":2: not valid YAML"),
    ("- a\n- b\n", ":1: a profile is a mapping"),
    ("address: a:1\naddress: b:2\n", ":2: address: given twice"),
    ("address: a:1\ninsecure: true\ntls_fingerprint: '" + FP + "'\n", ":2: insecure: insecure .*contradicts"),
    ("ca_file: ca.pem\ntls_fingerprint: '" + FP + "'\n", ":2: tls_fingerprint: give ca_file or"),
])
def test_profile_errors_name_file_line_and_key(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "client.yaml", text)
    with pytest.raises(ProfileError, match=f"client.yaml{problem}"):
        ClientProfile.from_file(path)


def test_a_key_in_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "client.yaml", "address: a:1\nkey_id: kid\napi_key: secret\n", 0o640)
    with pytest.raises(ProfileError, match=r"client.yaml:3: api_key: .*open to others.*chmod 600"):
        ClientProfile.from_file(path)
    with pytest.raises(ProfileError, match="cannot read"):
        ClientProfile.load(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ProfileError, match="no address"):
        ClientProfile().connect_kwargs()


def test_connect_without_an_address_uses_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer(api_keys={"kid": "secret"}) as server:
        path = write(tmp_path / "p.yaml", f"address: {server.address}\nkey_id: kid\napi_key: secret\n"
                                          "insecure: true\n")
        monkeypatch.setenv("ROVER_SAFETY_PROFILE", str(path))
        with connect() as client:
            client.motor("left").set_power(0.1)
        assert server.calls("SafetyService/CloseSession")
