"""Properties: whatever the input, a Config or one short ConfigError line, quickly; valid configs round-trip."""

from __future__ import annotations

import datetime
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rover_safety.config import Config, ConfigError, load, parse

SOURCE = "fuzz.yaml"
MAX_MESSAGE = 400
FUZZ = settings(max_examples=200, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow])
YAML_CHARS = ":-[]{},&*!#|>'\"\n 0123456789abcxyz<.~%@`\t?_\\/"
SCHEMA_KEYS = [
    "network", "bind_address", "sessions", "heartbeat_window", "allow_unmonitored_motion", "insecure", "tls",
    "cert_file", "key_file", "limits", "max_sessions", "web", "metrics", "auth", "api_keys", "id", "key_sha256",
    "token_ttl", "public_stop", "gpio", "pin_factory", "pigpio", "host", "port", "lgpio", "chip", "components",
    "name", "type", "model", "attributes", "pins", "a", "b", "pwm", "dir", "en_low", "pwm_freq", "max_rpm", "left",
    "right", "width_mm", "wheel_circumference_mm", "remotes", "address", "fingerprint", "key_id", "key", "<<",
]


def outcome(call: Callable[[], Config], source: str = SOURCE) -> Config | None:
    """The Config, or None after checking the ConfigError is one bounded line that starts with the source."""
    limit = MAX_MESSAGE + len(source)
    try:
        config = call()
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(source) and len(message) < limit and "\n" not in message, message
        return None
    for warning in config.warnings:
        assert warning.startswith(source) and len(warning) < limit and "\n" not in warning, warning
    return config


@FUZZ
@given(st.text(max_size=3000))
def test_any_text_is_a_config_or_a_clean_config_error(text: str) -> None:
    outcome(lambda: parse(text, SOURCE))


@FUZZ
@given(st.text(alphabet=YAML_CHARS, max_size=400))
def test_any_yaml_like_text_is_a_config_or_a_clean_config_error(text: str) -> None:
    outcome(lambda: parse(text, SOURCE))


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_in_a_file_are_a_config_or_a_clean_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / SOURCE
        path.write_bytes(content)
        outcome(lambda: load(path), str(path))


SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30) | st.sampled_from(SCHEMA_KEYS)
    | st.dates() | st.datetimes() | st.binary(max_size=20)
    | st.sampled_from(["2s", "500ms", "1h", "127.0.0.1:8080", "[::1]:0", "motor", "gpio", "base", "wheeled", "mock"])
)
KEYS = st.sampled_from(SCHEMA_KEYS) | st.text(max_size=12) | st.integers(-3, 30) | st.booleans() | st.none()


def trees(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6)


STRUCTURED = st.dictionaries(st.sampled_from(["network", "gpio", "components", "auth", "remotes"]) | KEYS,
                             st.recursive(SCALARS, trees, max_leaves=40), max_size=6)


@FUZZ
@given(STRUCTURED)
def test_any_structured_yaml_is_a_config_or_a_clean_config_error(tree: dict[Any, Any]) -> None:
    text = yaml.safe_dump(tree, allow_unicode=True)
    outcome(lambda: parse(text, SOURCE))


# --- Valid configs -------------------------------------------------------------------------------




def sha256_hex(text: str, *, upper: bool) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest.upper() if upper else digest


PRINTABLE_ASCII = st.characters(min_codepoint=33, max_codepoint=126)
NAMES = st.from_regex(r"[a-z][a-z0-9_.-]{0,15}", fullmatch=True)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A config dict parse() must accept: unique names, distinct pins, values in range."""
    names = draw(st.lists(NAMES, min_size=0, max_size=6, unique=True))
    motor_names, remote_names = names[: len(names) // 2 + len(names) % 2], names[len(names) // 2 + len(names) % 2:]
    pins = draw(st.permutations(list(range(28))))
    components: list[dict[str, Any]] = []
    for i, name in enumerate(motor_names):
        a, b, pwm = pins[3 * i: 3 * i + 3]
        wiring = draw(st.sampled_from([{"a": a, "b": b, "pwm": pwm}, {"dir": a, "pwm": pwm}, {"a": a, "b": b}]))
        attributes: dict[str, Any] = {"pins": wiring}
        if draw(st.booleans()):
            attributes.update(pwm_freq=draw(st.integers(1, 40000)), max_rpm=draw(st.floats(0.5, 1e4)),
                              dir_flip=draw(st.booleans()))
        components.append({"name": name, "type": "motor", "model": "gpio", "attributes": attributes})
    if len(motor_names) >= 2 and draw(st.booleans()):
        components.append({"name": "base_" + motor_names[0], "type": "base", "model": "wheeled", "attributes": {
            "left": [motor_names[0]], "right": [motor_names[1]], "width_mm": draw(st.floats(1, 1000)),
            "wheel_circumference_mm": draw(st.floats(1, 1000))}})
    max_sessions = draw(st.integers(1, 1024))
    config: dict[str, Any] = {
        "network": {
            "bind_address": draw(st.sampled_from(["127.0.0.1:0", "0.0.0.0:8080", "[::]:8080", "rover.local:80"])),
            "sessions": {"heartbeat_window": draw(st.sampled_from(["30ms", "500ms", "2s", "1m", "0.5s", "1m0s"])),
                         "allow_unmonitored_motion": draw(st.booleans())},
            "insecure": draw(st.booleans()),
            "limits": {"max_sessions": max_sessions, "sessions_per_owner": draw(st.integers(1, max_sessions)),
                       "log_lines_per_second": draw(st.integers(1, 10_000))},
        },
        "gpio": {"pin_factory": draw(st.sampled_from(["pigpio", "lgpio", "rpigpio", "mock"])),
                 "pigpio": {"host": draw(st.sampled_from(["localhost", "127.0.0.1", "::1", "pi.local"])),
                            "port": draw(st.integers(1, 65535))}},
        "components": components,
        "auth": {
            "api_keys": [{"id": name, "key_sha256": sha256_hex(name, upper=draw(st.booleans()))}
                         for name in draw(st.lists(NAMES, max_size=3, unique=True))],
            "token_ttl": draw(st.sampled_from([None, "1m", "1h", "720h", "90m"])),
            "public_stop": draw(st.booleans()),
        },
        "remotes": [{"name": name, "address": f"remote-{i}.local:{draw(st.integers(1, 65535))}",
                     "auth": {"key_id": "primary", "key": "k3y-" + draw(st.text(PRINTABLE_ASCII, max_size=20))}}
                    for i, name in enumerate(remote_names)],
    }
    if draw(st.booleans()):
        config["gpio"]["lgpio"] = {"chip": draw(st.integers(0, 255))}
    if draw(st.booleans()):
        config["network"]["web"] = {"bind_address": "127.0.0.1:8081"}
    return config


@FUZZ
@given(valid_configs())
def test_valid_configs_are_accepted_and_round_trip_through_dicts(data: dict[str, Any]) -> None:
    config = parse(yaml.safe_dump(data), SOURCE)
    assert [m.name for m in config.motors] == [c["name"] for c in data["components"] if c["type"] == "motor"]
    assert Config.from_dict(json.loads(json.dumps(config.to_dict(), allow_nan=False))) == config
    summary = config.summary()
    for remote in config.remotes:
        assert remote.auth is not None and f"remote {remote.name}: " in summary and "key (set)" in summary
        assert remote.auth.key not in summary
    for key in config.api_keys:
        assert key.key_sha256 not in summary


@pytest.mark.parametrize("value", [datetime.date(2024, 1, 1), b"\x00\x01", {1, 2}, 10**400, float("inf")])
def test_values_yaml_can_dump_but_no_setting_takes_are_clean_errors(value: object) -> None:
    text = yaml.dump({"network": {"bind_address": value}})  # the full dumper: !!set, !!binary, huge ints
    with pytest.raises(ConfigError) as info:
        parse(text, SOURCE)
    assert info.value.key == "network.bind_address" and len(str(info.value)) < MAX_MESSAGE, str(info.value)
