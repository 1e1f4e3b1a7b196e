"""GPIO drivers: motors and bases on a gpiozero pin factory. They know nothing of sessions."""

from .base import WheeledBase
from .errors import DriverError, InvalidCommand, PinFactoryError, StopFailed, Unsupported
from .failsafe import safe_stop
from .failures import Failures
from .motion import TimedMotion
from .motor import Motor
from .pins import (
    COMMAND_TIMEOUT,
    check_alive,
    disconnect,
    is_remote,
    open_factory,
    set_command_timeout,
    simulated_factory,
    wait_for_hangup,
)
from .rig import Resource, Rig, build

__all__ = [
    "COMMAND_TIMEOUT",
    "DriverError",
    "Failures",
    "InvalidCommand",
    "Motor",
    "PinFactoryError",
    "Resource",
    "Rig",
    "StopFailed",
    "TimedMotion",
    "Unsupported",
    "WheeledBase",
    "build",
    "check_alive",
    "disconnect",
    "is_remote",
    "open_factory",
    "safe_stop",
    "set_command_timeout",
    "simulated_factory",
    "wait_for_hangup",
]
