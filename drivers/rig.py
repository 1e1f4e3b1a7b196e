"""Everything configured, built on one pin factory; and the one-shot safe-stop that needs no daemon."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from gpiozero.pins import Factory
from rover_safety.config import BaseConfig, Config, MotorConfig, MotorPins

from .base import WheeledBase
from .motor import Motor
from .pins import COMMAND_TIMEOUT, PinFactoryError, bound_commands, open_factory, stop_connection

Resource = Motor | WheeledBase


class StopFailed(Exception):
    """Some resources could not be stopped (every other one was); the message names each and why."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{name}: {exc!r}" for name, exc in failures.items()))


@dataclass
class Rig:
    """The configured motors and bases; resources by name."""

    factory: Factory
    motors: dict[str, Motor] = field(default_factory=dict)
    bases: dict[str, WheeledBase] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Resource]:
        return {**self.motors, **self.bases}

    def get(self, name: str) -> Resource | None:
        """The resource called `name` (without building the `resources` table: this is on every command's path)."""
        return self.motors.get(name) or self.bases.get(name)

    def add_base(self, config: BaseConfig) -> WheeledBase:
        """Put a base together from this rig's motors (which must be built already)."""
        missing = [n for n in config.left + config.right if n not in self.motors]
        if missing:
            raise ValueError(f"base {config.name!r} needs motors {missing} built too")
        base = WheeledBase(config, [self.motors[n] for n in config.left], [self.motors[n] for n in config.right])
        self.bases[config.name] = base
        return base

    @property
    def parts(self) -> dict[str, tuple[str, ...]]:
        """Each base's motors by name: driving a base drives them."""
        return {name: tuple(m.name for m in base.motors) for name, base in self.bases.items()}

    def stop_all(self) -> list[str]:
        """Stop every base, then every motor; the names of those that were moving.

        A resource whose stop fails does not keep the others from being stopped: every one is tried, then StopFailed
        names those that failed.
        """
        moving: list[str] = []
        failures: dict[str, BaseException] = {}
        resources: list[Resource] = [*self.bases.values(), *self.motors.values()]
        for resource in resources:
            try:
                if resource.stop():
                    moving.append(resource.name)
            except Exception as exc:
                failures[resource.name] = exc
        if failures:
            raise StopFailed(failures)
        return moving

    def close(self, *, close_factory: bool = True) -> None:
        """Stop everything, then release the pins; every step is tried even if one fails (StopFailed after)."""
        failures: dict[str, BaseException] = {}
        try:
            self.stop_all()
        except StopFailed as exc:
            failures.update(exc.failures)
        for motor in self.motors.values():
            try:
                motor.close()
            except Exception as exc:
                failures.setdefault(motor.name, exc)
        if close_factory:
            try:
                self.factory.close()
            except Exception as exc:
                failures["pin factory"] = exc
        if failures:
            raise StopFailed(failures)


def build(config: Config, factory: Factory, only: set[str] | None = None) -> Rig:
    """Build the configured resources (or just those named in `only`) on `factory`; all outputs start off."""
    rig = Rig(factory)
    try:
        for motor_config in config.motors:
            if only is None or motor_config.name in only:
                rig.motors[motor_config.name] = Motor(motor_config, factory)
        for base_config in config.bases:
            if only is None or base_config.name in only:
                rig.add_base(base_config)
    except BaseException:
        rig.close(close_factory=False)
        raise
    return rig


def off_levels(motor: MotorConfig) -> Iterator[tuple[str, int, int]]:
    """(role, BCM pin, level) for every output of a motor in its off state: en_low is the only one off when high."""
    for role, pin in motor.pins.used().items():
        yield role, pin, 1 if role == "en_low" else 0


def pwm_roles(motor: MotorConfig) -> set[str]:
    """The roles that carry PWM: both `a` and `b` in the a+b wiring, else `pwm`."""
    return {"a", "b"} if motor.pins.wiring == "a+b" else {"pwm"}


def safe_stop(config: Config, factory_kind: str | None = None, *, timeout: float = COMMAND_TIMEOUT) -> list[str]:
    """Drive every output of every configured motor off, without the daemon; returns what it did, line by line.

    On pigpio this is one command per pin on a fresh connection, so it works whether the daemon is running, hung or
    dead: duty 0 on each PWM pin (pigpiod makes the pin an output, low, still in PWM mode, so a daemon that is still
    running can drive it again), a WRITE on every other pin. Each command is bounded by `timeout` seconds. On other
    factories it opens the pins itself.
    """
    kind = factory_kind or config.pin_factory
    done: list[str] = []
    if kind == "pigpio":
        import pigpio

        where = f"{config.pigpio_host}:{config.pigpio_port}"
        with contextlib.redirect_stdout(io.StringIO()):  # pigpio prints a banner when it cannot connect
            pi = pigpio.pi(config.pigpio_host, config.pigpio_port)
        if not pi.connected:
            raise PinFactoryError(f"cannot reach pigpiod at {where} (is it running? sudo systemctl start pigpiod)")
        bound_commands(pi, timeout)
        try:
            for power_first in (True, False):  # every PWM output to 0 first, as the daemon's stop does; then the rest
                for motor in config.motors:
                    pwm = pwm_roles(motor)
                    for role, pin, level in off_levels(motor):
                        if (role in pwm) != power_first:
                            continue
                        if role in pwm:
                            pi.set_PWM_dutycycle(pin, 0)
                            done.append(f"{motor.name}.{role} (GPIO{pin}) -> duty 0")
                        else:
                            pi.write(pin, level)
                            done.append(f"{motor.name}.{role} (GPIO{pin}) -> {'high' if level else 'low'}")
        except Exception as exc:
            raise PinFactoryError(f"lost pigpiod at {where} after {len(done)} outputs: {exc!r}") from None
        finally:
            stop_connection(pi)
        return done
    factory = open_factory(kind, config.pigpio_host, config.pigpio_port)
    for motor in config.motors:
        for role, pin, level in off_levels(motor):
            gpio = factory.pin(pin)
            gpio.function = "output"
            gpio.state = level
            done.append(f"{motor.name}.{role} (GPIO{pin}) -> {'high' if level else 'low'}")
    return done


def driven_state(config: Config) -> str:
    """What a running daemon drives, as JSON for safe-stop: the GPIO backend and every motor's pins.

    safe-stop reads it as well as the config file, so an edited (or broken) config that was never applied cannot
    make it miss the pins that are really driven.
    """
    return json.dumps({
        "pin_factory": config.pin_factory,
        "pigpio_host": config.pigpio_host,
        "pigpio_port": config.pigpio_port,
        "motors": [{"name": m.name, "pins": m.pins.used()} for m in config.motors],
    })


def config_from_state(text: str, source: str) -> Config:
    """The part of a Config that safe-stop needs, back from driven_state()'s JSON."""
    data = json.loads(text)
    return Config(
        source=source,
        pin_factory=data["pin_factory"],
        pigpio_host=data["pigpio_host"],
        pigpio_port=int(data["pigpio_port"]),
        motors=tuple(MotorConfig(m["name"], MotorPins(**m["pins"])) for m in data["motors"]),
    )
