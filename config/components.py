"""The `components:` list: motors on GPIO pins and wheeled bases made of them."""

from __future__ import annotations

from .errors import ConfigError, quote
from .fields import boolean, choice, integer, name, names, number
from .model import BaseConfig, MotorConfig, MotorPins
from .section import Section

_PIN_ROLES = ("a", "b", "pwm", "dir", "en_high", "en_low")
_KINDS = {"motor": "gpio", "base": "wheeled"}
PULLED_HIGH_AT_BOOT = range(0, 9)  # BCM 0-8; 9-27 are pulled low


def components(root: Section) -> tuple[tuple[MotorConfig, ...], tuple[BaseConfig, ...]]:
    """The motors and bases of `root`'s `components:`, every name unique and every pin used once."""
    entries = root.entries("components", "components")
    seen: dict[str, int] = {}
    for entry in entries:
        component = entry.require("name", name)
        if component in seen:
            raise entry.error("name", f"duplicate component name {quote(component)} (also on line {seen[component]})")
        seen[component] = entry.line_of("name")
        entry.path = f"components[{component}]"
    motors: dict[str, MotorConfig] = {}
    pins_owner: dict[int, str] = {}
    for entry in entries:
        kind = entry.require("type", choice(*_KINDS))
        entry.require("model", choice(_KINDS[kind]))
        if kind == "motor":
            motor = _motor(entry.data["name"], entry.section("attributes"), pins_owner)
            motors[motor.name] = motor
        entry.seen.add("attributes")  # a base's attributes are read once every motor is known
        entry.finish()
    bases: list[BaseConfig] = []
    used_by: dict[str, str] = {}
    for entry in entries:
        if entry.data["type"] == "base":
            bases.append(_base(entry.data["name"], entry.section("attributes"), motors, used_by))
    return tuple(motors.values()), tuple(bases)


def _motor(motor_name: str, attrs: Section, pins_owner: dict[int, str]) -> MotorConfig:
    pin_section = attrs.section("pins")
    pins = MotorPins(**{role: pin_section.get(role, integer(0, 27), None) for role in _PIN_ROLES})
    pin_section.finish()
    if pins.dir is not None and (pins.a is not None or pins.b is not None):
        raise pin_section.error("dir", "use either dir+pwm or a+b(+pwm), not both")
    if pins.dir is not None and pins.pwm is None:
        raise ConfigError(attrs.source, pin_section.line, pin_section.key("pwm"),
                          "is required with dir (wiring dir+pwm)")
    if pins.dir is None and (pins.a is None or pins.b is None):
        raise ConfigError(
            attrs.source, pin_section.line, pin_section.path, "needs a wiring: a+b+pwm, dir+pwm or a+b (missing a or b)"
        )
    for role, pin in pins.used().items():
        if pin in pins_owner:
            raise pin_section.error(role, f"pin {pin} is already used by {pins_owner[pin]}")
        pins_owner[pin] = f"{motor_name}.{role}"
        if pin in PULLED_HIGH_AT_BOOT and role != "en_low":  # high is what an active-low enable wants at boot
            pin_section.warn(role, f"pin {pin} is pulled high at boot, so the bridge input is on until the daemon "
                             "drives it; prefer 9–27 or fit a pull-down")
    max_power = attrs.get("max_power_pct", number(0.0, 1.0, low_open=True), 1.0)
    min_power = attrs.get("min_power_pct", number(0.0, 1.0), 0.0)
    if min_power >= max_power:
        raise attrs.error("min_power_pct", f"{min_power:g} must be below max_power_pct ({max_power:g})")
    motor = MotorConfig(
        name=motor_name,
        pins=pins,
        pwm_freq=attrs.get("pwm_freq", integer(1, 40000), 800),
        max_rpm=attrs.get("max_rpm", number(0.0, low_open=True), None),
        max_power_pct=max_power,
        min_power_pct=min_power,
        dir_flip=attrs.get("dir_flip", boolean, False),
    )
    attrs.finish()
    return motor


def _base(base_name: str, attrs: Section, motors: dict[str, MotorConfig], used_by: dict[str, str]) -> BaseConfig:
    base = BaseConfig(
        name=base_name,
        left=attrs.require("left", names),
        right=attrs.require("right", names),
        width_mm=attrs.require("width_mm", number(0.0, low_open=True)),
        wheel_circumference_mm=attrs.require("wheel_circumference_mm", number(0.0, low_open=True)),
    )
    for side in ("left", "right"):
        for motor in getattr(base, side):
            if motor not in motors:
                known = ", ".join(sorted(motors)) or "none configured"
                if len(known) > 120:
                    known = known[:119] + "…"
                raise attrs.error(side, f"names motor {quote(motor)}, which is not a configured motor "
                                  f"(motors: {known})")
            if motor in used_by:
                raise attrs.error(side, f"motor {quote(motor)} is already driven by {used_by[motor]}")
            used_by[motor] = f"base {quote(base_name)} ({side})"
    attrs.finish()
    return base
