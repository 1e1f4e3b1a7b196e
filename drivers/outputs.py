"""One output of a motor's bridge, and the shortest path each backend has to drive it off."""

from __future__ import annotations

from typing import Protocol

from gpiozero import Device
from gpiozero.pins import Factory

from .pins.lgpio import LgpioOutputs, is_lgpio
from .pins.pigpio import PigpioOutputs


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


def outputs_for(factory: Factory) -> Outputs:
    """The fastest way to turn outputs off on this factory: pigpio's own connection, lgpio's own chip handle (one
    local call per output), else gpiozero's pins."""
    connection = getattr(factory, "connection", None)
    if connection is not None:
        return PigpioOutputs(connection)
    if is_lgpio(factory):
        return LgpioOutputs(factory)
    return PinOutputs()
