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


def outputs_off(config: Config) -> list[tuple[str, int, int, bool]]:
    """(motor.role, BCM pin, off level, carries PWM) for every output of every motor: every PWM output first, as the
    daemon's stop does, then the rest."""
    outputs = [(f"{motor.name}.{role}", pin, level, role in pwm_roles(motor))
               for motor in config.motors for role, pin, level in off_levels(motor)]
    return [o for o in outputs if o[3]] + [o for o in outputs if not o[3]]


def safe_stop(config: Config, factory_kind: str | None = None, *, timeout: float = COMMAND_TIMEOUT) -> list[str]:
    """Drive every output of every configured motor off, without the daemon; returns what it did, line by line.

    On pigpio this is one command per pin on a fresh connection, so it works whether the daemon is running, hung or
    dead: duty 0 on each PWM pin (pigpiod makes the pin an output, low, still in PWM mode, so a daemon that is still
    running can drive it again), a WRITE on every other pin. Each command is bounded by `timeout` seconds.

    On lgpio (a Pi 5) nothing of the daemon's survives it: a killed daemon's software PWM stopped wherever it was,
    possibly high, and the kernel released its lines still driving that. Each line is claimed afresh as an output at
    its off level, PWM outputs first, on /dev/gpiochip<gpio.lgpio.chip> (one ioctl each), then released: off, even
    the ones left high. A live daemon holds its lines, so there this fails, saying so (pigpio's works under it).

    On other factories it opens the pins itself (PWM outputs first there too).
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
            for name, pin, level, pwm in outputs_off(config):
                if pwm:
                    pi.set_PWM_dutycycle(pin, 0)
                    done.append(f"{name} (GPIO{pin}) -> duty 0")
                else:
                    pi.write(pin, level)
                    done.append(f"{name} (GPIO{pin}) -> {'high' if level else 'low'}")
        except Exception as exc:
            raise PinFactoryError(f"lost pigpiod at {where} after {len(done)} outputs: {exc!r}") from None
        finally:
            stop_connection(pi)
        return done
    if kind == "lgpio":
        return claim_off([OffLine(name, pin, level) for name, pin, level, _ in outputs_off(config)], config.lgpio_chip)
    factory = open_factory(kind, config.pigpio_host, config.pigpio_port)
    for name, pin, level, _ in outputs_off(config):
        gpio = factory.pin(pin)
        gpio.function = "output"
        gpio.state = level
        done.append(f"{name} (GPIO{pin}) -> {'high' if level else 'low'}")
    return done
