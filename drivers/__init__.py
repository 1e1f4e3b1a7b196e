"""GPIO drivers: motors and bases on a gpiozero pin factory. They know nothing of sessions."""

from .base import WheeledBase
from .errors import InvalidCommand, Unsupported
from .motor import Motor
from .pins import PinFactoryError, check_alive, disconnect, is_remote, open_factory, wait_for_hangup
from .rig import Resource, Rig, StopFailed, build, config_from_state, driven_state, safe_stop

__all__ = [
    "InvalidCommand",
    "Motor",
    "PinFactoryError",
    "Resource",
    "Rig",
    "StopFailed",
    "Unsupported",
    "WheeledBase",
    "build",
    "check_alive",
    "config_from_state",
    "disconnect",
    "driven_state",
    "is_remote",
    "open_factory",
    "safe_stop",
    "wait_for_hangup",
]
