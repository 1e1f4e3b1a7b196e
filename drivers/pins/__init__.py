"""Pin factories, chosen explicitly and verified: never gpiozero's silent fallback to another one.

One module per backend with what only it needs (`pigpio.py`, `lgpio.py`, `mock.py`); this module opens them and
answers the questions the daemon asks of any backend (is it a separate process that can go away, is it still there).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

from gpiozero import PinFactoryFallback
from gpiozero.pins import Factory

from ..errors import PinFactoryError
from . import lgpio as _lgpio
from . import pigpio as _pigpio
from .mock import PinWatcher, simulated_factory
from .pigpio import COMMAND_TIMEOUT, disconnect, wait_for_hangup

_MODULES = {"pigpio": "pigpio", "lgpio": "lgpio", "rpigpio": "RPi.GPIO"}
_INSTALL = {
    "pigpio": "sudo apt install python3-pigpio, or pip install pigpio",
    "lgpio": f"{sys.executable} -m pip install lgpio",  # (lgpio.import_lgpio says more, and is what normally says it)
    "rpigpio": "sudo apt install python3-rpi.gpio, or pip install RPi.GPIO",
}

__all__ = [
    "COMMAND_TIMEOUT",
    "PinWatcher",
    "check_alive",
    "disconnect",
    "is_remote",
    "open_factory",
    "set_command_timeout",
    "simulated_factory",
    "wait_for_hangup",
]


def open_factory(
    kind: str,
    host: str = "localhost",
    port: int = 8888,
    on_change: PinWatcher | None = None,
    *,
    timeout: float = COMMAND_TIMEOUT,
    lgpio_chip: int | None = None,
) -> Factory:
    """Open exactly the pin factory asked for: never gpiozero's silent fallback to another one.

    On pigpio, every command on the factory's connection is bounded by `timeout` seconds. On lgpio, `lgpio_chip`
    is the /dev/gpiochipN to open (gpio.lgpio.chip; None: gpiozero picks it), and each way it can fail has its own
    message (see lgpio.open_factory).
    """
    warnings.simplefilter("error", PinFactoryFallback)
    try:
        if kind == "mock":
            return simulated_factory(on_change)
        if kind == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            with contextlib.redirect_stdout(io.StringIO()):  # pigpio prints a banner when it cannot connect
                factory = PiGPIOFactory(host=host, port=port)
            _pigpio.bound_commands(factory.connection, timeout)
            return factory
        if kind == "lgpio":
            return _lgpio.open_factory(lgpio_chip)
        if kind == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
    except PinFactoryError:
        raise
    except ImportError as exc:
        module = _MODULES.get(kind, kind)
        if exc.name is None or not module.startswith(exc.name):
            raise PinFactoryError(f"gpio.pin_factory {kind}: cannot load it ({exc})") from None
        raise PinFactoryError(
            f"gpio.pin_factory {kind}: the Python module {module} is not installed ({_INSTALL.get(kind, '')})"
        ) from None
    except Exception as exc:
        hint = {
            "pigpio": f"cannot reach pigpiod at {host}:{port} ({exc}); is it running? (sudo systemctl start pigpiod)",
            "lgpio": f"lgpio failed ({exc!r})",  # its known failures are PinFactoryErrors of their own (lgpio.py)
            "rpigpio": f"RPi.GPIO cannot run here ({exc}); this needs a Raspberry Pi 4 or older",
        }.get(kind, f"{kind}: {exc}")
        raise PinFactoryError(f"gpio.pin_factory {kind}: {hint}") from None
    raise PinFactoryError(f"gpio.pin_factory: unknown factory {kind!r}")


def is_remote(factory: Factory) -> bool:
    """True for a factory whose GPIO backend is another process (pigpiod), which can go away on its own."""
    return _pigpio.is_pigpio(factory)


def check_alive(factory: Factory) -> None:
    """Make one round trip to the GPIO backend; raise PinFactoryError if it is gone."""
    if is_remote(factory):  # in-process factories cannot go away on their own
        _pigpio.check_alive(factory)


def set_command_timeout(factory: Factory, timeout: float) -> None:
    """Bound every command to the GPIO backend by `timeout` seconds (pigpio; in-process backends need none)."""
    if is_remote(factory):
        _pigpio.bound_commands(getattr(factory, "connection", None), timeout)
