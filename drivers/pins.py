"""Pin factories, chosen explicitly and verified, and the shortest path to drive an output off on each."""

from __future__ import annotations

import contextlib
import io
import select
import socket
import struct
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gpiozero import Device, PinFactoryFallback
from gpiozero.pins import Factory


class PinFactoryError(Exception):
    """The configured GPIO backend cannot be used; the message says why and what to do."""


# A pigpiod that takes longer than this to answer one command is treated as gone: without a timeout a hung pigpiod
# would hang every stop (and the health check) forever, and nothing would ever fail safe.
COMMAND_TIMEOUT = 1.0

_MODULES = {"pigpio": "pigpio", "lgpio": "lgpio", "rpigpio": "RPi.GPIO"}
_INSTALL = {
    "pigpio": "sudo apt install python3-pigpio, or pip install pigpio",
    "lgpio": "sudo apt install python3-lgpio, or pip install lgpio",
    "rpigpio": "sudo apt install python3-rpi.gpio, or pip install RPi.GPIO",
}


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


def open_factory(
    kind: str,
    host: str = "localhost",
    port: int = 8888,
    on_change: PinWatcher | None = None,
    *,
    timeout: float = COMMAND_TIMEOUT,
) -> Factory:
    """Open exactly the pin factory asked for: never gpiozero's silent fallback to another one.

    On pigpio, every command on the factory's connection is bounded by `timeout` seconds.
    """
    warnings.simplefilter("error", PinFactoryFallback)
    try:
        if kind == "mock":
            return simulated_factory(on_change)
        if kind == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            with contextlib.redirect_stdout(io.StringIO()):  # pigpio prints a banner when it cannot connect
                factory = PiGPIOFactory(host=host, port=port)
            bound_commands(factory.connection, timeout)
            return factory
        if kind == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
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
            "lgpio": f"lgpio cannot open the GPIO chip ({exc}); this needs a Raspberry Pi and access to /dev/gpiochip*",
            "rpigpio": f"RPi.GPIO cannot run here ({exc}); this needs a Raspberry Pi 4 or older",
        }.get(kind, f"{kind}: {exc}")
        raise PinFactoryError(f"gpio.pin_factory {kind}: {hint}") from None
    raise PinFactoryError(f"gpio.pin_factory: unknown factory {kind!r}")


def bound_commands(connection: Any, timeout: float) -> None:
    """Make a pigpio connection's commands raise after `timeout` seconds instead of waiting forever."""
    sock = getattr(getattr(connection, "sl", None), "s", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(timeout)


def is_remote(factory: Factory) -> bool:
    """True for a factory whose GPIO backend is another process (pigpiod), which can go away on its own."""
    return type(factory).__name__ == "PiGPIOFactory"


def check_alive(factory: Factory) -> None:
    """Make one round trip to the GPIO backend; raise PinFactoryError if it is gone."""
    if not is_remote(factory):
        return  # in-process factories cannot go away on their own
    connection = getattr(factory, "connection", None)  # None once the connection was closed
    try:
        if connection is None:
            raise ConnectionError("the connection to pigpiod is closed")
        connection.get_current_tick()
    except Exception as exc:
        raise PinFactoryError(f"lost the GPIO backend (pigpiod): {_describe(exc, connection)}") from None


def _describe(exc: BaseException, connection: Any) -> str:
    if isinstance(exc, TimeoutError):
        sock = getattr(getattr(connection, "sl", None), "s", None)
        timeout = sock.gettimeout() if isinstance(sock, socket.socket) else None
        return f"pigpiod did not answer within {timeout or COMMAND_TIMEOUT:g} s"
    if isinstance(exc, struct.error):  # pigpio read an empty reply
        return "pigpiod closed the connection"
    if isinstance(exc, OSError):
        return f"the connection to pigpiod failed ({exc.strerror or exc})"
    return repr(exc)


def wait_for_hangup(factory: Factory, timeout: float) -> bool:
    """Sleep up to `timeout` seconds, waking at once if pigpiod closes its end of the connection (True then).

    A dying pigpiod closes its sockets, so this notices it within milliseconds, long before a periodic check would;
    the sooner, the less CPU pigpio's notification thread burns spinning on its dead socket.
    """
    connection = getattr(factory, "connection", None)
    sock = getattr(getattr(connection, "sl", None), "s", None)
    if not isinstance(sock, socket.socket) or sock.fileno() < 0:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    try:
        return bool(poller.poll(max(0.0, timeout) * 1000))
    except (OSError, ValueError):
        return True


def disconnect(factory: Factory) -> None:
    """Drop a pigpio connection whose pigpiod is gone, at once and without raising.

    This ends pigpio's notification thread, which spins on its dead socket until told to stop, and leaves the factory
    without a connection, so gpiozero's own close() calls later on become no-ops instead of failing on the socket.
    """
    connection = getattr(factory, "_connection", None)
    if connection is not None:
        stop_connection(connection)


def stop_connection(connection: Any) -> None:
    """`pigpio.pi.stop()` that also finishes when pigpiod is gone, and never raises."""
    for _ in range(2):  # the first stop() raises once it tries to say goodbye on a dead socket; the second finishes
        try:
            connection.stop()
            return
        except Exception:  # a dead pigpiod: nothing to report, only to finish
            continue


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
