"""The settings the next features need (TLS, limits, keys, remotes, lgpio): defaults, errors, summary, round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rover_safety.config import (
    ApiKey,
    ClientLimits,
    Config,
    ConfigError,
    RemoteAuth,
    RemoteConfig,
    RemoteTls,
    TlsFiles,
    parse,
)

EXAMPLE = Path(__file__).parent.parent / "config" / "example.yaml"
HASH = "ab" * 32
SECRET = "s3cret-do-not-print"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A readable regular file standing in for a PEM file."""
    path = tmp_path / "cert.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def full_config(pem: Path) -> str:
    return f"""network:
  bind_address: "0.0.0.0:8080"
  insecure: false
  tls: {{cert_file: {pem}, key_file: {pem}, client_ca_file: {pem}}}
  limits: {{max_sessions: 100, sessions_per_owner: 10, session_starts_per_second: 5, connections_per_peer: 8,
            max_connections: 50, calls_in_flight_per_owner: 4, calls_per_second_per_owner: 30,
            log_lines_per_second: 2}}
  web: {{bind_address: "127.0.0.1:8081"}}
  metrics: {{}}
auth:
  api_keys:
    - {{id: laptop, key_sha256: "{HASH.upper()}"}}
    - {{id: phone, key_sha256: "{'cd' * 32}"}}
  token_ttl: 1h30m
  public_stop: true
gpio:
  pin_factory: lgpio
  lgpio: {{chip: 4}}
components:
  - {{name: left, type: motor, model: gpio, attributes: {{pins: {{a: 17, b: 27}}}}}}
remotes:
  - name: arm
    address: "arm.local:8080"
    tls: {{ca_file: {pem}}}
    auth: {{key_id: primary, key: "{SECRET}"}}
  - name: gripper
    address: "[fe80::1]:9000"
    tls: {{fingerprint: "{':'.join(['AB'] * 32)}"}}
  - {{name: cam, address: "10.0.0.7:8080", tls: {{insecure: true}}}}
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, "rover.yaml")
    return info.value


def test_defaults_of_the_new_settings() -> None:
    config = parse("", "empty.yaml")
    assert (config.insecure, config.tls, config.limits, config.web_bind_address, config.metrics_bind_address) == (
        False, None, ClientLimits(), None, None)
    assert (config.api_keys, config.token_ttl, config.public_stop) == ((), None, False)
    assert (config.lgpio_chip, config.remotes, config.warnings) == (None, (), ())
    limits = config.limits
    assert (limits.max_sessions, limits.sessions_per_owner, limits.session_starts_per_second,
            limits.session_start_burst, limits.connections_per_peer, limits.max_connections,
            limits.calls_in_flight_per_owner, limits.calls_per_second_per_owner, limits.call_burst,
            limits.log_lines_per_second) == (1024, 256, 100, 200, 16, 512, 64, 500, 500, 20)


def test_every_new_setting_is_read(pem: Path) -> None:
    config = parse(full_config(pem), "rover.yaml")
    assert config.tls == TlsFiles(str(pem), str(pem), str(pem))
    assert config.limits == ClientLimits(100, 10, 5, 8, 50, 4, 30, 2)
    assert (config.web_bind_address, config.metrics_bind_address) == ("127.0.0.1:8081", "127.0.0.1:9464")
    assert config.api_keys == (ApiKey("laptop", HASH), ApiKey("phone", "cd" * 32))  # the hash is lowercased
    assert (config.token_ttl, config.public_stop, config.lgpio_chip) == (5400.0, True, 4)
    assert config.remotes == (
        RemoteConfig("arm", "arm.local:8080", RemoteTls(ca_file=str(pem)), RemoteAuth("primary", SECRET)),
        RemoteConfig("gripper", "[fe80::1]:9000", RemoteTls(fingerprint="ab" * 32)),
        RemoteConfig("cam", "10.0.0.7:8080", RemoteTls(insecure=True)),
    )


def test_limits_that_depend_on_another_default_to_fit_it() -> None:
    """sessions_per_owner (256) and connections_per_peer (16) default to at most max_sessions / max_connections."""
    limits = parse("network:\n  limits: {max_sessions: 10, max_connections: 12}\n", "rover.yaml").limits
    assert (limits.sessions_per_owner, limits.connections_per_peer) == (10, 12)


def test_the_summary_shows_the_new_settings_but_never_a_secret(pem: Path) -> None:
    summary = parse(full_config(pem), "rover.yaml").summary()
    assert f"network.tls: cert {pem}, key {pem}, client CA {pem} (clients must show a certificate)" in summary
    assert "session_starts_per_second 5 (burst 10)" in summary
    assert "network.web.bind_address: 127.0.0.1:8081" in summary
    assert "auth.api_keys: laptop, phone" in summary
    assert "auth.token_ttl: 1h30m" in summary
    assert "gpio.lgpio.chip: 4" in summary
    assert f"remote arm: arm.local:8080, tls CA {pem}, auth key id primary, key (set)" in summary
    assert f"remote gripper: [fe80::1]:9000, tls fingerprint sha256 {'ab' * 32}, auth none" in summary
    assert SECRET not in summary and HASH not in summary.lower().replace("ab" * 32 + ",", "")
    assert "cd" * 32 not in summary
    assert SECRET not in repr(parse(full_config(pem), "rover.yaml"))


def test_to_dict_is_json_and_from_dict_rebuilds_the_same_config(pem: Path) -> None:
    config = parse(full_config(pem).replace("left, type", "left5, type").replace("a: 17", "a: 5"), "rover.yaml")
    assert config.warnings  # pin 5: the warning round-trips too
    data = json.loads(json.dumps(config.to_dict(), allow_nan=False))
    assert Config.from_dict(data) == config


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"bogus": 1}, "config: unknown field 'bogus'"),
        ({"pigpio_port": "8888"}, "config.pigpio_port: expected int, got str"),
        ({"pigpio_port": True}, "config.pigpio_port: expected int, got bool"),
        ({"motors": [{"name": "m"}]}, "config.motors[0]: "),
        ({"limits": {"max_sessions": 1.5}}, "config.limits.max_sessions: expected int, got float"),
        ({"tls": {"cert_file": "/a", "key_file": None}}, "config.tls.key_file: expected a string, got NoneType"),
    ],
)
def test_from_dict_refuses_what_to_dict_cannot_have_made(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Config.from_dict(data)


def with_pem(template: str, pem: Path) -> str:
    return template.replace("PEM", str(pem))


@pytest.mark.parametrize(
    ("template", "line", "key", "problem"),
    [
        ("network:\n  tls: {cert_file: PEM}\n", 2, "network.tls.key_file", "is required"),
        ("network:\n  tls: {}\n", 2, "network.tls.cert_file", "is required"),
        ("network:\n  tls:\n    cert_file: cert.pem\n    key_file: PEM\n", 3, "network.tls.cert_file",
         "cert.pem is not an absolute path (start it with /)"),
        ("network:\n  tls:\n    cert_file: PEM\n    key_file: /nonexistent/key.pem\n", 4, "network.tls.key_file",
         "cannot read /nonexistent/key.pem: No such file or directory"),
        ("network:\n  tls: {cert_file: PEM, key_file: /tmp}\n", 2, "network.tls.key_file",
         "cannot read /tmp: it is a directory, not a regular file"),
        ("network:\n  tls: {cert_file: PEM, key_file: PEM, client_ca_file: ''}\n", 2, "network.tls.client_ca_file",
         "must be a non-empty string"),
        ("network:\n  tls: {cert_file: PEM, key_file: PEM, ca: PEM}\n", 2, "network.tls.ca", "unknown key"),
        ("network:\n  limits: {max_sessions: 0}\n", 2, "network.limits.max_sessions", "out of range: must be 1..1024"),
        ("network:\n  limits: {max_sessions: 2000}\n", 2, "network.limits.max_sessions", "must be 1..1024"),
        ("network:\n  limits:\n    max_sessions: 100\n    sessions_per_owner: 101\n", 4,
         "network.limits.sessions_per_owner", "101 is out of range: must be 1..100"),
        ("network:\n  limits: {max_connections: 10, connections_per_peer: 11}\n", 2,
         "network.limits.connections_per_peer", "must be 1..10"),
        ("network:\n  limits: {log_lines_per_second: -1}\n", 2, "network.limits.log_lines_per_second",
         "out of range"),
        ("network:\n  limits: {sessions_per_peer: 1}\n", 2, "network.limits.sessions_per_peer", "unknown key"),
        ("network:\n  insecure: 1\n", 2, "network.insecure", "must be true or false"),
        ("network:\n  web: {bind_address: 'rover local:8081'}\n", 2, "network.web.bind_address", "not host:port"),
        ("network:\n  metrics: {bind_address: '127.0.0.1:8080'}\n", 2, "network.metrics.bind_address",
         "127.0.0.1:8080 is network.bind_address already"),
        ("network:\n  web: {}\n  metrics: {bind_address: '127.0.0.1:8081'}\n", 3, "network.metrics.bind_address",
         "is network.web.bind_address already"),
        ("auth:\n  api_keys:\n    - {id: a, key_sha256: HASH}\n    - {id: a, key_sha256: HASH}\n", 4,
         "auth.api_keys[1].id", "duplicate key id 'a' (also on line 3)"),
        ("auth:\n  api_keys:\n    - {id: a, key_sha256: HASH}\n    - {id: b, key_sha256: HASH}\n", 4,
         "auth.api_keys[b].key_sha256", "is the same key as auth.api_keys[a]"),
        ("auth:\n  api_keys:\n    - {id: 'a:b', key_sha256: HASH}\n", 3, "auth.api_keys[0].id", "not a valid name"),
        ("auth:\n  api_keys:\n    - {id: a}\n", 3, "auth.api_keys[a].key_sha256", "is required"),
        ("auth:\n  api_keys:\n    - {id: a, key_sha256: HASH, key: x}\n", 3, "auth.api_keys[a].key", "unknown key"),
        ("auth:\n  api_keys: {id: a}\n", 2, "auth.api_keys", "must be a list of keys"),
        ("auth:\n  api_keys: [laptop]\n", 2, "auth.api_keys[0]", "must be a mapping of keys, not text 'laptop'"),
        ("auth:\n  token_ttl: 30s\n", 2, "auth.token_ttl", "'30s' is out of range: allowed 1m..720h (30 days)"),
        ("auth:\n  token_ttl: 721h\n", 2, "auth.token_ttl", "out of range"),
        ("auth:\n  token_ttl: 3600\n", 2, "auth.token_ttl", "must be a duration with a unit"),
        ("auth:\n  public_stop: 'true'\n", 2, "auth.public_stop", "must be true or false, not text 'true'"),
        ("gpio:\n  lgpio: {chip: -1}\n", 2, "gpio.lgpio.chip", "out of range: must be 0..255"),
        ("gpio:\n  lgpio: {chip: 0, line: 4}\n", 2, "gpio.lgpio.line", "unknown key"),
        ("gpio:\n  pigpio: {host: 'local host'}\n", 2, "gpio.pigpio.host", "has a space"),
        ("remotes:\n  - {name: arm, address: 'arm:1'}\n  - {name: arm, address: 'arm:2'}\n", 3, "remotes[1].name",
         "duplicate remote name 'arm' (also on line 2)"),
        ("components:\n  - {name: arm, type: motor, model: gpio, attributes: {pins: {a: 10, b: 11}}}\n"
         "remotes:\n  - {name: arm, address: 'arm:1'}\n", 4, "remotes[0].name",
         "'arm' is the name of a component too"),
        ("remotes:\n  - {name: 'arm:1', address: 'arm:1'}\n", 2, "remotes[0].name", "not a valid name"),
        ("remotes:\n  - {name: arm}\n", 2, "remotes[arm].address", "is required"),
        ("remotes:\n  - {name: arm, address: 'arm.local:0'}\n", 2, "remotes[arm].address",
         "the port must be a number 1..65535"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    tls: {ca_file: PEM, fingerprint: HASH}\n", 4,
         "remotes[arm].tls.fingerprint", "give ca_file or fingerprint, not both"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    tls: {fingerprint: HASH, insecure: true}\n", 4,
         "remotes[arm].tls.insecure", "cannot go with fingerprint"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    tls: {fingerprint: 'ab:cd'}\n", 4,
         "remotes[arm].tls.fingerprint", "'ab:cd' is not a SHA-256 fingerprint"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    tls: {ca_file: /nonexistent/ca.pem}\n", 4,
         "remotes[arm].tls.ca_file", "cannot read /nonexistent/ca.pem: No such file or directory"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    auth: {key: x}\n", 4, "remotes[arm].auth.key_id",
         "is required"),
        ("remotes:\n  - name: arm\n    address: arm:1\n    auth: {key_id: p}\n", 4, "remotes[arm].auth.key",
         "is required"),
        ("remotes: {arm: {address: 'arm:1'}}\n", 1, "remotes", "must be a list of remotes"),
    ],
)
def test_errors_in_the_new_settings_name_line_key_and_problem(pem: Path, template: str, line: int, key: str,
                                                              problem: str) -> None:
    error = error_of(with_pem(template, pem).replace("HASH", HASH))
    assert (error.line, error.key) == (line, key), str(error)
    assert problem in error.problem, str(error)


@pytest.mark.parametrize(
    "value",
    [
        "s3cret-key-pasted-here",  # a key pasted where its hash belongs
        HASH[:-1],  # 63 digits
        "zz" * 32,  # 64 characters, not hex
        "12345678901234567890",  # a number (YAML reads it as one)
        "0x" + "ab" * 31,
    ],
)
def test_a_bad_key_hash_is_never_quoted(value: str) -> None:
    """Someone may paste the key itself: the message describes the value without showing it."""
    error = error_of(f"auth:\n  api_keys:\n    - {{id: laptop, key_sha256: {value}}}\n")
    assert error.key == "auth.api_keys[laptop].key_sha256" and "64 hex digits" in error.problem, str(error)
    assert value not in str(error) and value[:8] not in str(error)


@pytest.mark.parametrize("value", ["12345678", "0123456", "yes", "2024-01-01", "[1, 2]", '"\\x01secret"'])
def test_a_bad_remote_key_is_never_quoted(value: str) -> None:
    error = error_of(f"remotes:\n  - name: arm\n    address: arm:1\n    auth: {{key_id: p, key: {value}}}\n")
    assert error.key == "remotes[arm].auth.key" and "must be the key as" in error.problem, str(error)
    assert value.strip('"[]').replace("\\x01", "") not in str(error)


def uncommented_example(pem: Path) -> str:
    """example.yaml with every commented-out setting put back, its placeholders filled in."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(\s*)# (\s*(?:- )?(?:[a-z_]+:|\{[a-z_]+:).*)", line)
        lines.append(match.group(1) + match.group(2) if match else line)
    text = "\n".join(lines) + "\n"
    text = re.sub(r"/etc/rover-safety/tls/[a-z-]+\.pem", str(pem), text)
    return text.replace("64 lowercase hex digits", HASH)


def test_the_commented_out_examples_in_example_yaml_are_valid(pem: Path) -> None:
    text = uncommented_example(pem)
    assert re.search(r"(?m)^remotes: .*\n  - name: arm", text) and re.search(r"(?m)^  tls: .*\n    cert_file:", text)
    config = parse(text, "example.yaml")
    assert config.tls is not None and config.api_keys[0].id == "laptop" and config.remotes[0].name == "arm"
    assert config.limits == ClientLimits()  # the commented values are the defaults, as it says
    assert config.lgpio_chip == 0 and config.token_ttl == 3600.0


def test_example_yaml_keeps_the_lines_tests_and_install_rewrite() -> None:
    text = EXAMPLE.read_text()
    for line in ('  bind_address: "127.0.0.1:8080"', "    heartbeat_window: 2s",
                 "  pigpio: {host: localhost, port: 8888}", "  pin_factory: mock "):
        assert text.count(line) == 1, line
    assert "0.0.0.0:8080" not in text
    assert re.search(r'serving off loopback needs auth and TLS\n +# \(see README "On the rover"\)', text)
