"""The one-shot safe-stop: every configured output driven off, without the daemon (which may be dead or hung)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from rover_safety.config import Config, MotorConfig

from .errors import PinFactoryError
from .pins import COMMAND_TIMEOUT, open_factory
from .pins.lgpio import OffLine, claim_off
from .pins.pigpio import bound_commands, stop_connection


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
    running can drive it again), a WRITE on every other pin. Each command is bounded by `timeout` seconds.

    On lgpio (a Pi 5) nothing of the daemon's survives it: a killed daemon's software PWM stopped wherever it was,
    possibly high, and the kernel released its lines still driving that. Each line is claimed afresh as an output at
    its off level, PWM outputs first, on /dev/gpiochip<gpio.lgpio.chip> (one ioctl each), then released: off, even
    the ones left high. A live daemon holds its lines, so there this fails, saying so (pigpio's works under it).

    On other factories it opens the pins itself.
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
    if kind == "lgpio":
        ordered = [(role in pwm_roles(motor), OffLine(f"{motor.name}.{role}", pin, level))
                   for motor in config.motors for role, pin, level in off_levels(motor)]
        return claim_off([line for pwm, line in ordered if pwm] + [line for pwm, line in ordered if not pwm],
                         config.lgpio_chip)
    factory = open_factory(kind, config.pigpio_host, config.pigpio_port)
    for motor in config.motors:
        for role, pin, level in off_levels(motor):
            gpio = factory.pin(pin)
            gpio.function = "output"
            gpio.state = level
            done.append(f"{motor.name}.{role} (GPIO{pin}) -> {'high' if level else 'low'}")
    return done
