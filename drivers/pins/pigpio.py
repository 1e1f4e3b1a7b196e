"""pigpio specifics: bounded commands, a liveness check, hang-up detection, and a connection that always closes."""

from __future__ import annotations

import select
import socket
import struct
from typing import Any

from gpiozero.pins import Factory

from ..errors import PinFactoryError

# A pigpiod that takes longer than this to answer one command is treated as gone: without a timeout a hung pigpiod
# would hang every stop (and the health check) forever, and nothing would ever fail safe.
COMMAND_TIMEOUT = 1.0


def _socket(connection: Any) -> socket.socket | None:
    sock = getattr(getattr(connection, "sl", None), "s", None)
    return sock if isinstance(sock, socket.socket) else None


def bound_commands(connection: Any, timeout: float) -> None:
    """Make a pigpio connection's commands raise after `timeout` seconds instead of waiting forever."""
    sock = _socket(connection)
    if sock is not None:
        sock.settimeout(timeout)


def is_pigpio(factory: Factory) -> bool:
    return type(factory).__name__ == "PiGPIOFactory"


def check_alive(factory: Factory) -> None:
    """Make one round trip to pigpiod; raise PinFactoryError if it is gone."""
    connection = getattr(factory, "connection", None)  # None once the connection was closed
    try:
        if connection is None:
            raise ConnectionError("the connection to pigpiod is closed")
        connection.get_current_tick()
    except Exception as exc:
        raise PinFactoryError(f"lost the GPIO backend (pigpiod): {_describe(exc, connection)}") from None


def _describe(exc: BaseException, connection: Any) -> str:
    if isinstance(exc, TimeoutError):
        sock = _socket(connection)
        timeout = sock.gettimeout() if sock is not None else None
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
    sock = _socket(getattr(factory, "connection", None))
    if sock is None or sock.fileno() < 0:
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


class PigpioOutputs:
    """One pigpiod round trip per output, on the factory's own connection (gpiozero's path costs three)."""

    def __init__(self, connection: Any) -> None:
        self._pi = connection

    def off(self, output: Any) -> None:
        if output.pwm:
            self._pi.set_PWM_dutycycle(output.bcm, 0)
        else:
            self._pi.write(output.bcm, 1 if output.off_high else 0)
