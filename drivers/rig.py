"""Everything configured, built on one pin factory; and the one-shot safe-stop that needs no daemon."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from gpiozero.pins import Factory
from rover_safety.config import Config, MotorConfig

from .base import WheeledBase
from .motor import Motor
from .pins import PinFactoryError, open_factory

Resource = Motor | WheeledBase


@dataclass
class Rig:
    """The configured motors and bases; resources by name."""

    factory: Factory
    motors: dict[str, Motor] = field(default_factory=dict)
    bases: dict[str, WheeledBase] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Resource]:
        return {**self.motors, **self.bases}

    def stop_all(self) -> list[str]:
        """Stop every base, then every motor; the names of those that were moving."""
        moving = [b.name for b in self.bases.values() if b.stop()]
        return moving + [m.name for m in self.motors.values() if m.stop()]

    def close(self, *, close_factory: bool = True) -> None:
        """Stop everything, then release the pins."""
        self.stop_all()
        for motor in self.motors.values():
            motor.close()
        if close_factory:
            self.factory.close()


def build(config: Config, factory: Factory, only: set[str] | None = None) -> Rig:
    """Build the configured resources (or just those named in `only`) on `factory`; all outputs start off."""
    rig = Rig(factory)
    try:
        for motor_config in config.motors:
            if only is None or motor_config.name in only:
                rig.motors[motor_config.name] = Motor(motor_config, factory)
        for base_config in config.bases:
            if only is None or base_config.name in only:
                missing = [n for n in base_config.left + base_config.right if n not in rig.motors]
                if missing:
                    raise ValueError(f"base {base_config.name!r} needs motors {missing} built too")
                rig.bases[base_config.name] = WheeledBase(
                    base_config,
                    [rig.motors[n] for n in base_config.left],
                    [rig.motors[n] for n in base_config.right],
                )
    except BaseException:
        rig.close(close_factory=False)
        raise
    return rig


def off_levels(motor: MotorConfig) -> Iterator[tuple[str, int, int]]:
    """(role, BCM pin, level) for every output of a motor in its off state: en_low is the only one off when high."""
    for role, pin in motor.pins.used().items():
        yield role, pin, 1 if role == "en_low" else 0


def safe_stop(config: Config, factory_kind: str | None = None) -> list[str]:
    """Drive every output of every configured motor off, without the daemon; returns what it did, line by line.

    On pigpio this is one WRITE per pin on a fresh connection (pigpiod stops PWM on a pin it writes and makes it an
    output), so it works whether the daemon is running, hung or dead. On other factories it opens the pins itself.
    """
    kind = factory_kind or config.pin_factory
    done: list[str] = []
    if kind == "pigpio":
        import pigpio

        with contextlib.redirect_stdout(io.StringIO()):  # pigpio prints a banner when it cannot connect
            pi = pigpio.pi(config.pigpio_host, config.pigpio_port)
        if not pi.connected:
            raise PinFactoryError(f"cannot reach pigpiod at {config.pigpio_host}:{config.pigpio_port}")
        try:
            for motor in config.motors:
                for role, pin, level in off_levels(motor):
                    pi.write(pin, level)
                    done.append(f"{motor.name}.{role} (GPIO{pin}) -> {'high' if level else 'low'}")
        except Exception as exc:
            raise PinFactoryError(f"lost pigpiod at {config.pigpio_host}:{config.pigpio_port}: {exc!r}") from None
        finally:
            pi.stop()
        return done
    factory = open_factory(kind, config.pigpio_host, config.pigpio_port)
    for motor in config.motors:
        for role, pin, level in off_levels(motor):
            gpio = factory.pin(pin)
            gpio.function = "output"
            gpio.state = level
            done.append(f"{motor.name}.{role} (GPIO{pin}) -> {'high' if level else 'low'}")
    return done
