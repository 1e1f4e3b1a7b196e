"""Issue 7, config half: inputs that escaped as other exceptions, hung, or were read as something else.

Every test here failed on the config code before the fix (see each docstring for how) and passes after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import rover_safety.config as config_package
from rover_safety.config import ConfigError, load, parse

MOTOR = """components:
  - name: left
    type: motor
    model: gpio
    attributes:
      pins: {pins}
      max_rpm: 100
"""
MAX_MESSAGE = 400


def motor(pins: str = "{a: 17, b: 27}", extra: str = "") -> str:
    """One motor `left` (pins on line 6, max_rpm on line 7); `extra` attribute lines start on line 8."""
    return MOTOR.format(pins=pins) + "".join(f"      {line}\n" for line in extra.splitlines())


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, "rover.yaml")
    return info.value


def assert_error(error: ConfigError, line: int | None, key: str, problem: str) -> None:
    assert (error.source, error.line, error.key) == ("rover.yaml", line, key), str(error)
    assert problem in error.problem, str(error)
    assert len(str(error)) < MAX_MESSAGE, str(error)


def billion_laughs(levels: int = 9) -> str:
    """Anchors l0..l{levels}, each a list of 9 aliases of the one before: 9**levels values if expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


# --- One error class ----------------------------------------------------------------------------


def test_config_error_lives_in_errors_and_is_a_value_error() -> None:
    """Before: ConfigError was defined in load.py and derived from Exception, so `except ValueError` missed it."""
    from rover_safety.config.errors import ConfigError as from_errors

    assert from_errors is ConfigError is config_package.ConfigError
    assert issubclass(ConfigError, ValueError)
    error = ConfigError("rover.yaml", 3, "network.bind_address", "is wrong")
    assert (error.source, error.line, error.key, error.problem) == ("rover.yaml", 3, "network.bind_address", "is wrong")
    assert str(error) == "rover.yaml:3: network.bind_address: is wrong"
    assert str(ConfigError("rover.yaml", None, "", "cannot read config")) == "rover.yaml: cannot read config"


# --- Nothing but ConfigError ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        pytest.param(motor(extra="pwm_freq: !!int 800Hz"), 8, "components[left].attributes.pwm_freq",
                     "'800Hz' is not a whole number", id="int-tag-on-800Hz"),  # was ValueError from int()
        pytest.param(motor(extra="pwm_freq: " + "9" * 5000), 8, "components[left].attributes.pwm_freq",
                     "too long a number", id="5000-digit-integer"),  # was ValueError: Exceeds the limit (4300 digits)
        pytest.param("network:\n  bind_address: " + "[" * 5000 + "]" * 5000 + "\n", 2, "network",
                     "nested more than 32 levels deep", id="nested-5000-deep"),  # was RecursionError
        pytest.param("components:\n  - name: !!timestamp 2024-13-45\n", 2, "components[0].name", "is a date",
                     id="bad-timestamp"),  # was AttributeError inside PyYAML's timestamp constructor
        pytest.param("components:\n  - name: !!timestamp 2024-02-30\n", 2, "components[0].name", "is a date",
                     id="impossible-date"),  # was ValueError: day is out of range for month
        pytest.param(motor(extra="max_rpm: !!float fast").replace("      max_rpm: 100\n", "", 1), 7,
                     "components[left].attributes.max_rpm", "'fast' is not a number", id="float-tag-on-text"),
        pytest.param("gpio:\n  pigpio: {port: !!int ''}\n", 2, "gpio.pigpio.port", "not a whole number",
                     id="int-tag-on-nothing"),  # was IndexError inside PyYAML's int constructor
    ],
)
def test_input_that_escaped_as_another_exception_is_a_config_error(text: str, line: int, key: str,
                                                                   problem: str) -> None:
    assert_error(error_of(text), line, key, problem)


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        pytest.param("x" * 1000 + ": 1\n", 1, "'" + "x" * 40 + "'…", "unknown key", id="long-unknown-key"),
        pytest.param("gpio:\n  pin_factory: " + "p" * 10_000 + "\n", 2, "gpio.pin_factory",
                     "'" + "p" * 40 + "'… is not one of", id="long-value"),
        pytest.param("network:\n  sessions:\n    heartbeat_window: " + "9" * 400 + "s\n", 3,
                     "network.sessions.heartbeat_window", "is not a duration", id="400-digit-duration"),
        pytest.param("network:\n  bind_address: !!binary " + "QUFB" * 5000 + "\n", 2, "network.bind_address",
                     "!!binary is not accepted", id="big-binary"),
        pytest.param(motor(pins="{a: " + "1" * 1000 + ", b: 27}"), 6, "components[left].attributes.pins.a",
                     "too long a number", id="1000-digit-pin"),
        pytest.param("network: *" + "a" * 5000 + "\n", 1, "", "not valid YAML: found undefined alias",
                     id="long-undefined-alias"),
        pytest.param('network:\n  bind_address: "\\e[2J' + "a" * 100 + ':80"\n', 2, "network.bind_address",
                     "'\\x1b[2J", id="terminal-escape"),
    ],
)
def test_error_messages_quote_at_most_a_short_prefix(text: str, line: int, key: str, problem: str) -> None:
    """Before: the whole value (or key, or anchor) went into the message, control characters and all."""
    error = error_of(text)
    assert_error(error, line, key, problem)
    assert "\x1b" not in str(error)


# --- Bounds on the loader ------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_an_alias_bomb_is_refused_quickly_without_building_it() -> None:
    """Before: refusing `bind_address: *l9` rendered the value, a list of 9**9 strings (time and memory unbounded)."""
    text = billion_laughs() + "network:\n  bind_address: *l9\n"
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = error_of(text)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(error, 5, "l4", "expands to more than 10000 values")  # l4 is 66430 values
    assert elapsed < 1.0, elapsed
    assert peak < 50 * 2**20, peak


def test_an_alias_counts_its_value_at_each_use() -> None:
    """Before: a shared value counted once (and this one was refused as a duplicate name). Here the text holds about
    220 values, but each of the 100 uses of `*c` counts its 115 again."""
    padding = ", ".join(["0"] * 100)
    attributes = f"{{pins: {{a: 17, b: 27}}, pad: [{padding}]}}"
    shared = f"  - &c {{name: left, type: motor, model: gpio, attributes: {attributes}}}\n"
    text = "components:\n" + shared + "  - *c\n" * 100
    assert_error(error_of(text), 2, "components", "expands to more than 10000 values")


def test_a_circular_alias_is_refused() -> None:
    """Before: the value contained itself and was reported as an unknown key `sessions` of itself."""
    assert_error(error_of("network: &n {sessions: *n}\n"), 1, "network", "an alias refers to a value that contains it")


def test_a_file_over_256_kib_is_refused_unread(tmp_path: Path) -> None:
    """Before: a 1 MB file (here a valid config and a long comment) was read and accepted."""
    path = tmp_path / "big.yaml"
    path.write_text("network: {}\n#" + "x" * 2**20 + "\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problem == f"is too large ({path.stat().st_size} bytes): a config file may be at most 256 KiB"
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Before: opening a FIFO with no writer blocked forever."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load(fifo)
    assert time.monotonic() - started < 1.0
    assert str(info.value) == (f"{fifo}: cannot read config: it is a named pipe (FIFO), not a regular file; "
                               "give the path of a YAML file")


def test_a_device_is_refused() -> None:
    """Before: /dev/null read as an empty file, i.e. a valid config of nothing but defaults."""
    with pytest.raises(ConfigError, match=r"^/dev/null: cannot read config: it is a character device, not a regular"):
        load("/dev/null")


# --- Paper cuts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "meaning"),
    [("021", "leading zero, which YAML reads as 17"), ("0x11", "hexadecimal, which YAML reads as 17"),
     ("0b10001", "binary, which YAML reads as 17"), ("1_7", "digit separators, which YAML reads as 17"),
     ("1:30", "base 60, which YAML reads as 90"), ("0o21", "is octal"), ("09", "has a leading zero")],
)
def test_pins_take_plain_decimal_numbers_only(value: str, meaning: str) -> None:
    """Before: `a: 021` was pin 17 (YAML 1.1 octal), `0x11` and `1_7` too, `1:30` was "90 is out of range", and
    `0o21` and `09` were "not a whole number" (YAML 1.1 reads them as text)."""
    error = error_of(motor(pins=f"{{a: {value}, b: 27}}"))
    assert_error(error, 6, "components[left].attributes.pins.a", meaning)
    assert "write the plain decimal number" in error.problem


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (motor(extra="pwm_freq: 0800"), 8, "components[left].attributes.pwm_freq"),
        ("gpio:\n  pigpio: {port: 0x22b8}\n", 2, "gpio.pigpio.port"),
        ("gpio:\n  pigpio: {port: 8_888}\n", 2, "gpio.pigpio.port"),
    ],
)
def test_every_integer_setting_takes_plain_decimal_only(text: str, line: int, key: str) -> None:
    """Before: 0800 was 512 Hz, 0x22b8 was port 8888."""
    assert_error(error_of(text), line, key, "write the plain decimal number")


def test_pins_pulled_high_at_boot_are_accepted_with_a_warning() -> None:
    """Before: there were no warnings; pins 0-8 (high at boot) were accepted silently."""
    config = parse(motor(pins="{a: 5, b: 27, pwm: 8, en_low: 3}"), "rover.yaml")
    assert config.motors[0].pins.a == 5
    assert config.warnings == tuple(
        f"rover.yaml:6: components[left].attributes.pins.{role}: pin {pin} is pulled high at boot, so the bridge "
        "input is on until the daemon drives it; prefer 9–27 or fit a pull-down"
        for role, pin in (("a", 5), ("pwm", 8))
    )  # en_low 3: high is what an active-low enable should be at boot
    assert parse(motor(pins="{a: 9, b: 27}"), "rover.yaml").warnings == ()


MERGED = """components:
  - name: left
    type: motor
    model: gpio
    attributes: &defaults
      pins: {a: 17, b: 27}
      max_rpm: 50
      pwm_freq: 100
  - name: right
    type: motor
    model: gpio
    attributes:
      <<: *defaults
      pins: {a: 22, b: 23}
      max_rpm: 100
"""


def test_a_merge_key_with_an_override_works_as_yaml_intends() -> None:
    """Before: every key written beside `<<:` was refused as a duplicate of the merged one."""
    right = parse(MERGED, "rover.yaml").motors[1]
    assert (right.pins.a, right.pins.b, right.max_rpm, right.pwm_freq) == (22, 23, 100.0, 100)
    earlier_wins = MERGED.replace("<<: *defaults", "<<: [{pwm_freq: 200, dir_flip: true}, *defaults]")
    right = parse(earlier_wins, "rover.yaml").motors[1]
    assert (right.pwm_freq, right.dir_flip, right.max_rpm) == (200, True, 100.0)
    assert_error(error_of(MERGED + "      max_rpm: 7\n"), 16, "max_rpm", "duplicate key (first set on line 15)")


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1\\n:8080", "has a space, control or non-ASCII character"),
        ("127.0.0.1 :8080", "has a space, control or non-ASCII character"),
        ("\\t127.0.0.1:8080", "has a space, control or non-ASCII character"),
        ("localhost:٨٠٨٠", "has a space, control or non-ASCII character"),
        ("999.1.1.1:8080", "'999.1.1.1' is not a valid IP address"),
        ("1.2.3:8080", "'1.2.3' is not a valid IP address"),
        ("::1:8080", "an IPv6 address goes in brackets"),
        ("[::1:8080", "is not host:port"),
        ("[127.0.0.1]:8080", "'127.0.0.1' is not an IPv6 address"),
        ("-rover-.local:8080", "is not a valid host name"),
        ("rover_1:8080", "is not a valid host name"),
    ],
)
def test_bind_address_junk_is_refused(address: str, problem: str) -> None:
    """Before: only the port was checked (with str.isdigit, which takes Arabic-Indic digits)."""
    error = error_of(f'network:\n  sessions: {{}}\n  bind_address: "{address}"\n')
    assert_error(error, 3, "network.bind_address", problem)
    assert "is not host:port" in error.problem


def test_check_config_refuses_bind_address_junk(tmp_path: Path) -> None:
    """Before: `check-config` printed `config OK` for a bind address with a newline in its host."""
    path = tmp_path / "rover.yaml"
    path.write_text('network:\n  bind_address: "127.0.0.1\\n:8080"\n')
    result = subprocess.run([sys.executable, "-m", "rover_safety.daemon.cli", "check-config", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stdout
    assert f"{path}:2: network.bind_address: '127.0.0.1\\n:8080' is not host:port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "OFF"])
def test_yaml_1_1_booleans_are_refused_as_ambiguous(word: str) -> None:
    """Before: `insecure: on` or `dir_flip: yes` silently meant true; a safety setting is written true or false."""
    assert_error(error_of(f"network:\n  sessions:\n    allow_unmonitored_motion: {word}\n"), 3,
                 "network.sessions.allow_unmonitored_motion", "is ambiguous: write true or false")
