"""Config: every error names the file, the line and the key; the example is valid; durations parse like Go's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rover_safety.config import ConfigError, load, parse, parse_duration

EXAMPLE = Path(__file__).parent.parent / "config" / "example.yaml"

MOTOR = """components:
  - name: left
    type: motor
    model: gpio
    attributes:
      pins: {pins}
      max_rpm: 100
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, "rover.yaml")
    return info.value


def test_example_config_is_valid_and_complete() -> None:
    config = load(EXAMPLE)
    assert config.heartbeat_window == 2.0
    assert config.pin_factory == "mock"
    assert [m.name for m in config.motors] == ["left", "right"]
    assert config.motors[0].pins.wiring == "a+b+pwm" and config.motors[1].pins.wiring == "dir+pwm"
    assert config.bases[0].left == ("left",) and config.bases[0].width_mm == 260


def test_defaults_when_empty() -> None:
    config = parse("", "empty.yaml")
    assert (config.bind_address, config.heartbeat_window, config.pin_factory) == ("127.0.0.1:8080", 2.0, "pigpio")
    assert config.allow_unmonitored_motion is False and config.motors == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1.5s", 1.5), ("30ms", 0.03), ("250000us", 0.25), ("1h", 3600)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "s", "2 s", "2x", "-1s", "1s2", "ms500"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        ("network:\n  sessions:\n    heartbeat_window: 10ms\n", 3, "network.sessions.heartbeat_window",
         "out of range: allowed 30ms..1m"),
        ("network:\n  sessions:\n    heartbeat_window: 2m\n", 3, "network.sessions.heartbeat_window", "out of range"),
        ("network:\n  sessions:\n    heartbeat_window: 2\n", 3, "network.sessions.heartbeat_window",
         "must be a duration with a unit"),
        ("network:\n  sessions:\n    heartbeat_window: soon\n", 3, "network.sessions.heartbeat_window",
         "not a duration"),
        ("network:\n  sesions: {}\n", 2, "network.sesions", "unknown key"),
        ("netwrok: {}\n", 1, "netwrok", "unknown key"),
        ("network:\n  bind_address: localhost\n", 2, "network.bind_address", "not host:port"),
        ("gpio:\n  pin_factory: native\n", 2, "gpio.pin_factory", "'native' is not one of: pigpio, lgpio"),
        ("gpio:\n  pigpio: {port: 70000}\n", 2, "gpio.pigpio.port", "out of range"),
        ("network:\n  sessions:\n    allow_unmonitored_motion: yes please\n", 3,
         "network.sessions.allow_unmonitored_motion", "must be true or false"),
        (MOTOR.format(pins="{a: 17, b: 17, pwm: 22}"), 6, "components[left].attributes.pins.b",
         "pin 17 is already used by left.a"),
        (MOTOR.format(pins="{a: 17, b: 40, pwm: 22}"), 6, "components[left].attributes.pins.b", "0..27"),
        (MOTOR.format(pins="{dir: 5}"), 6, "components[left].attributes.pins.pwm", "required with dir"),
        (MOTOR.format(pins="{a: 5}"), 6, "components[left].attributes.pins", "needs a wiring"),
        (MOTOR.format(pins="{dir: 5, pwm: 6, a: 7}"), 6, "components[left].attributes.pins.dir", "not both"),
        (MOTOR.format(pins="{a: 1, b: 2, pwn: 3}"), 6, "components[left].attributes.pins.pwn", "unknown key"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "      max_power_pct: 1.5\n", 8,
         "components[left].attributes.max_power_pct", "out of range"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "      min_power_pct: 0.5\n      max_power_pct: 0.4\n", 8,
         "components[left].attributes.min_power_pct", "must be below max_power_pct"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "      pwm_freq: fast\n", 8, "components[left].attributes.pwm_freq",
         "must be a whole number"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "  - name: left\n    type: motor\n    model: gpio\n", 8,
         "components[1].name", "duplicate component name 'left' (also on line 2)"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "  - name: base\n    type: base\n    model: wheeled\n    attributes:\n"
         "      left: [left]\n      right: [rihgt]\n      width_mm: 200\n      wheel_circumference_mm: 200\n", 13,
         "components[base].attributes.right", "names motor 'rihgt', which is not a configured motor (motors: left)"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "  - name: base\n    type: base\n    model: wheeled\n    attributes:\n"
         "      left: [left]\n      right: [left]\n      width_mm: 200\n      wheel_circumference_mm: 200\n", 13,
         "components[base].attributes.right", "already driven by base 'base' (left)"),
        ("components:\n  - name: cam\n    type: camera\n    model: webcam\n", 3, "components[cam].type",
         "'camera' is not one of: motor, base"),
        ("components:\n  - name: m\n    type: motor\n    model: gpio\n", 2, "components[m].attributes.pins",
         "needs a wiring"),
        ("components:\n  - type: motor\n", 2, "components[0].name", "is required"),
        (MOTOR.format(pins="{a: 1, b: 2}").replace("max_rpm: 100", "max_rpm: .nan"), 7,
         "components[left].attributes.max_rpm", "must be a finite number"),
        (MOTOR.format(pins="{a: 1, b: 2}") + "      min_power_pct: .inf\n", 8,
         "components[left].attributes.min_power_pct", "must be a finite number"),
        ("network:\n  bind_address: a:1\n  bind_address: b:2\n", 3, "bind_address",
         "duplicate key (first set on line 2)"),
        ("network: [1\n", 2, "", "not valid YAML"),
        ("- just\n- a list\n", 1, "", "must be a mapping"),
    ],
)
def test_config_errors_name_file_line_key_and_problem(text: str, line: int, key: str, problem: str) -> None:
    error = error_of(text)
    assert error.source == "rover.yaml"
    assert error.line == line, str(error)
    assert error.key == key, str(error)
    assert problem in error.problem, str(error)
    assert str(error).startswith(f"rover.yaml:{line}: ")


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"network:\n  # 20\xb0C\n", 2, "not UTF-8 text (byte 0xb0)"),
        (b"network: {}\n\x07\n", None, "not valid YAML"),
        (b"? [a, b]\n: 1\n", 1, "a key must be a plain word"),
    ],
)
def test_unreadable_files_are_clear_errors_too(tmp_path: Path, content: bytes, line: int | None, problem: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.line == line and problem in info.value.problem, str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config: No such file"):
        load(tmp_path / "nope.yaml")


def rover_safety(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rover_safety.daemon.cli", *args], capture_output=True, text=True,
                          timeout=30)


def test_check_config_prints_the_effective_config() -> None:
    result = rover_safety("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "network.sessions.heartbeat_window: 2s" in result.stdout
    assert "motor left: a+b+pwm (a=17, b=27, pwm=22)" in result.stdout
    assert "config OK" in result.stdout


@pytest.mark.parametrize("command", ["check-config", "serve", "safe-stop"])
def test_bad_config_is_refused_with_one_clear_line_and_no_traceback(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("network:\n  sessions:\n    heartbeat_window: 5 seconds\n")
    result = rover_safety(command, "--config", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}:3: network.sessions.heartbeat_window: '5 seconds' is not a duration" in result.stderr
