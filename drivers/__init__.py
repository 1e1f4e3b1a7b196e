"""GPIO drivers: motors and bases on a gpiozero pin factory. They know nothing of sessions."""

from .base import WheeledBase
from .errors import InvalidCommand, Unsupported
from .motor import Motor
from .pins import PinFactoryError, check_alive, open_factory
from .rig import Resource, Rig, build, safe_stop

__all__ = [
    "InvalidCommand",
    "Motor",
    "PinFactoryError",
    "Resource",
    "Rig",
    "Unsupported",
    "WheeledBase",
    "build",
    "check_alive",
    "open_factory",
    "safe_stop",
]
