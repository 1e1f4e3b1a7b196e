"""Pin factories, chosen explicitly and verified, and the shortest path to drive an output off on each."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gpiozero import Device, PinFactoryFallback
from gpiozero.pins import Factory


class PinFactoryError(Exception):
    """The configured GPIO backend cannot be used; the message says why and what to do."""


PinWatcher = Callable[[int, float], None]


def simulated_factory(on_change: PinWatcher | None = None) -> Factory:
    """Mock pins with PWM, a bounded change history, and an optional callback (bcm, state) on every change."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    class SimulatedPin(MockPWMPin):  # type: ignore[misc]
        def __init__(self, factory: Factory, info: Any) -> None:
            super().__init__(factory, info)
            # gpiozero keeps every change in a list, which would grow for as long as the daemon runs
            self.states: deque[Any] = deque(self.states, maxlen=1024)

        def _change_state(self, value: float) -> bool:
            changed = bool(super()._change_state(value))
            if changed and on_change is not None:
                on_change(int(self.info.name.removeprefix("GPIO")), float(value))
            return changed

    return MockFactory(pin_class=SimulatedPin)


def open_factory(kind: str, host: str = "localhost", port: int = 8888, on_change: PinWatcher | None = None) -> Factory:
    """Open exactly the pin factory asked for: never gpiozero's silent fallback to another one."""
    warnings.simplefilter("error", PinFactoryFallback)
    try:
        if kind == "mock":
            return simulated_factory(on_change)
        if kind == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            with contextlib.redirect_stdout(io.StringIO()):  # pigpio prints a banner when it cannot connect
                return PiGPIOFactory(host=host, port=port)
        if kind == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if kind == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
    except PinFactoryError:
        raise
    except Exception as exc:
        hint = {
            "pigpio": f"cannot reach pigpiod at {host}:{port} ({exc}); is it running? (sudo systemctl start pigpiod)",
            "lgpio": f"lgpio cannot open the GPIO chip ({exc}); this needs a Raspberry Pi and access to /dev/gpiochip*",
            "rpigpio": f"RPi.GPIO cannot run here ({exc}); this needs a Raspberry Pi 4 or older",
        }.get(kind, f"{kind}: {exc}")
        raise PinFactoryError(f"gpio.pin_factory {kind}: {hint}") from None
    raise PinFactoryError(f"gpio.pin_factory: unknown factory {kind!r}")


def check_alive(factory: Factory) -> None:
    """Make one round trip to the GPIO backend; raise PinFactoryError if it is gone."""
    connection = getattr(factory, "connection", None)
    if connection is None:
        return  # in-process factories cannot go away on their own
    try:
        connection.get_current_tick()
        if not connection.connected:
            raise ConnectionError("disconnected")
    except Exception as exc:
        raise PinFactoryError(f"lost the GPIO backend (pigpiod): {exc!r}") from None


class Output:
    """One output of a motor's bridge: its gpiozero device, BCM number, and the level that means off."""

    def __init__(self, role: str, device: Device, bcm: int, *, pwm: bool, off_high: bool = False) -> None:
        self.role, self.device, self.bcm, self.pwm, self.off_high = role, device, bcm, pwm, off_high


class Outputs(Protocol):
    """Drive an output off by the shortest path the backend has."""

    def off(self, output: Output) -> None: ...


class PinOutputs:
    """Write through gpiozero's pin objects, skipping the device layer (and its lock)."""

    def off(self, output: Output) -> None:
        output.device.pin.state = 1 if output.off_high else 0


class PigpioOutputs:
    """One pigpiod round trip per output, on the factory's own connection (gpiozero's path costs three)."""

    def __init__(self, connection: Any) -> None:
        self._pi = connection

    def off(self, output: Output) -> None:
        if output.pwm:
            self._pi.set_PWM_dutycycle(output.bcm, 0)
        else:
            self._pi.write(output.bcm, 1 if output.off_high else 0)


def outputs_for(factory: Factory) -> Outputs:
    connection = getattr(factory, "connection", None)
    return PigpioOutputs(connection) if connection is not None else PinOutputs()
