"""Read and validate the YAML config; every error names the file, line, key and what is wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .model import (
    MAX_HEARTBEAT_WINDOW,
    MIN_HEARTBEAT_WINDOW,
    PIN_FACTORIES,
    BaseConfig,
    Config,
    MotorConfig,
    MotorPins,
)

T = TypeVar("T")

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_BCM_PINS = range(0, 28)
_PIN_ROLES = ("a", "b", "pwm", "dir", "en_high", "en_low")


class ConfigError(Exception):
    """A config problem, located at `source:line` and naming the key at fault."""

    def __init__(self, source: str, line: int | None, key: str, problem: str) -> None:
        self.source, self.line, self.key, self.problem = source, line, key, problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def parse_duration(text: str) -> float:
    """Parse a Go duration (`500ms`, `2s`, `1m30s`) into seconds; raise ValueError if it is not one."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 500ms, 2s or 1m30s")
    return total


# --- YAML that remembers where each key was written -------------------------------------------


class _Map(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    source = "<config>"


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)):
            raise ConfigError(loader.source, line, "", f"a key must be a plain word, not {type(key).__name__}")
        if key in out:
            raise ConfigError(loader.source, line, str(key), f"duplicate key (first set on line {out.key_lines[key]})")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    out.line, out.item_lines = node.start_mark.line + 1, [item.start_mark.line + 1 for item in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# --- Walking the tree ---------------------------------------------------------------------------


class _Section:
    """One mapping of the config, consumed key by key; leftovers are reported as unknown keys."""

    def __init__(self, source: str, path: str, data: Any, line: int) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, line, path, f"must be a mapping of keys, not {_describe(data)}")
        self.source, self.path, self.data = source, path, data
        self.line = getattr(data, "line", line)
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def line_of(self, name: str) -> int:
        lines: dict[str, int] = getattr(self.data, "key_lines", {})
        return lines.get(name, self.line)

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.line_of(name), self.key(name), problem)

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        self.seen.add(name)
        if self.data.get(name) is None:
            return default
        return self._convert(name, convert)

    def require(self, name: str, convert: Callable[[Any], T]) -> T:
        self.seen.add(name)
        if self.data.get(name) is None:
            raise ConfigError(self.source, self.line, self.key(name), "is required")
        return self._convert(name, convert)

    def _convert(self, name: str, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.data[name])
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def section(self, name: str) -> _Section:
        self.seen.add(name)
        value = self.data.get(name)
        return _Section(self.source, self.key(name), {} if value is None else value, self.line_of(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.seen:
                raise self.error(name, f"unknown key (known here: {', '.join(sorted(self.seen))})")


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _number(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {_describe(value)}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise ValueError(f"{value!r} is out of range: must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise ValueError(f"{value!r} is out of range: must be <= {high:g}")
        return float(value)

    return convert


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_describe(value)}")
        if not low <= value <= high:
            raise ValueError(f"{value!r} is out of range: must be {low}..{high}")
        return int(value)

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_describe(value)}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {_describe(value)}")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of: {', '.join(allowed)}")
        return str(value)

    return convert


def _window(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError(f"must be a duration with a unit such as 500ms or 2s, not {_describe(value)}")
    seconds = parse_duration(value)
    if not MIN_HEARTBEAT_WINDOW <= seconds <= MAX_HEARTBEAT_WINDOW:
        raise ValueError(f"{value!r} is out of range: allowed 30ms..1m")
    return seconds


def _bind_address(value: Any) -> str:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:  # 0: any free port
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:8080 or [::]:8080)")
    return text


def _name(value: Any) -> str:
    text = _string(value)
    if not _NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid name (letters, digits, _ . -)")
    return text


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of motor names, not {_describe(value)}")
    return tuple(_name(v) for v in value)


# --- The schema ---------------------------------------------------------------------------------


def _motor(source: str, name: str, attrs: _Section, pins_owner: dict[int, str]) -> MotorConfig:
    pin_section = attrs.section("pins")
    pins = MotorPins(**{role: pin_section.get(role, _integer(0, 27), None) for role in _PIN_ROLES})
    pin_section.finish()
    if pins.dir is not None and (pins.a is not None or pins.b is not None):
        raise pin_section.error("dir", "use either dir+pwm or a+b(+pwm), not both")
    if pins.dir is not None and pins.pwm is None:
        raise ConfigError(source, pin_section.line, pin_section.key("pwm"), "is required with dir (wiring dir+pwm)")
    if pins.dir is None and (pins.a is None or pins.b is None):
        raise ConfigError(
            source, pin_section.line, pin_section.path, "needs a wiring: a+b+pwm, dir+pwm or a+b (missing a or b)"
        )
    for role, pin in pins.used().items():
        if pin in pins_owner:
            raise pin_section.error(role, f"pin {pin} is already used by {pins_owner[pin]}")
        pins_owner[pin] = f"{name}.{role}"
    max_power = attrs.get("max_power_pct", _number(0.0, 1.0, low_open=True), 1.0)
    min_power = attrs.get("min_power_pct", _number(0.0, 1.0), 0.0)
    if min_power >= max_power:
        raise attrs.error("min_power_pct", f"{min_power:g} must be below max_power_pct ({max_power:g})")
    motor = MotorConfig(
        name=name,
        pins=pins,
        pwm_freq=attrs.get("pwm_freq", _integer(1, 40000), 800),
        max_rpm=attrs.get("max_rpm", _number(0.0, low_open=True), None),
        max_power_pct=max_power,
        min_power_pct=min_power,
        dir_flip=attrs.get("dir_flip", _boolean, False),
    )
    attrs.finish()
    return motor


def _base(name: str, attrs: _Section, motors: dict[str, MotorConfig], used_by: dict[str, str]) -> BaseConfig:
    base = BaseConfig(
        name=name,
        left=attrs.require("left", _names),
        right=attrs.require("right", _names),
        width_mm=attrs.require("width_mm", _number(0.0, low_open=True)),
        wheel_circumference_mm=attrs.require("wheel_circumference_mm", _number(0.0, low_open=True)),
    )
    for side in ("left", "right"):
        for motor in getattr(base, side):
            if motor not in motors:
                known = ", ".join(sorted(motors)) or "none configured"
                raise attrs.error(side, f"names motor {motor!r}, which is not a configured motor (motors: {known})")
            if motor in used_by:
                raise attrs.error(side, f"motor {motor!r} is already driven by {used_by[motor]}")
            used_by[motor] = f"base {name!r} ({side})"
    attrs.finish()
    return base


def parse(text: str, source: str = "<config>") -> Config:
    """Validate YAML text into a Config, raising ConfigError for the first problem found."""
    loader_cls = type("Loader", (_Loader,), {"source": source})
    try:
        data = yaml.load(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(source, mark.line + 1 if mark else None, "", f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:  # e.g. a control character: a ReaderError, which has a position but no mark
        raise ConfigError(source, None, "", f"not valid YAML: {exc}") from None
    root = _Section(source, "", {} if data is None else data, 1)

    network = root.section("network")
    sessions = network.section("sessions")
    gpio = root.section("gpio")
    pigpio = gpio.section("pigpio")
    settings: dict[str, Any] = dict(
        source=source,
        bind_address=network.get("bind_address", _bind_address, "127.0.0.1:8080"),
        heartbeat_window=sessions.get("heartbeat_window", _window, 2.0),
        allow_unmonitored_motion=sessions.get("allow_unmonitored_motion", _boolean, False),
        pin_factory=gpio.get("pin_factory", _choice(*PIN_FACTORIES), "pigpio"),
        pigpio_host=pigpio.get("host", _string, "localhost"),
        pigpio_port=pigpio.get("port", _integer(1, 65535), 8888),
    )
    for section in (sessions, network, pigpio, gpio):
        section.finish()

    root.seen.add("components")
    components = root.data.get("components") or []
    if not isinstance(components, list):
        raise root.error("components", f"must be a list of components, not {_describe(components)}")
    lines = getattr(components, "item_lines", [root.line_of("components")] * len(components))
    entries = [
        _Section(source, f"components[{i}]", c, line) for i, (c, line) in enumerate(zip(components, lines, strict=True))
    ]
    names: dict[str, int] = {}
    for entry in entries:
        name = entry.require("name", _name)
        if name in names:
            raise entry.error("name", f"duplicate component name {name!r} (also on line {names[name]})")
        names[name] = entry.line_of("name")
        entry.path = f"components[{name}]"
    motors: dict[str, MotorConfig] = {}
    pins_owner: dict[int, str] = {}
    kinds = {"motor": "gpio", "base": "wheeled"}
    for entry in entries:
        kind = entry.require("type", _choice(*kinds))
        entry.require("model", _choice(kinds[kind]))
        if kind == "motor":
            motor = _motor(source, entry.data["name"], entry.section("attributes"), pins_owner)
            motors[motor.name] = motor
        entry.seen.add("attributes")  # a base's attributes are read once every motor is known
        entry.finish()
    bases: list[BaseConfig] = []
    used_by: dict[str, str] = {}
    for entry in entries:
        if entry.data["type"] == "base":
            bases.append(_base(entry.data["name"], entry.section("attributes"), motors, used_by))
    root.finish()
    return Config(**settings, motors=tuple(motors.values()), bases=tuple(bases))


def load(path: str | Path) -> Config:
    """Read and validate the config file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), line, "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the "
                          "file as UTF-8") from None
    return parse(text, str(path))
