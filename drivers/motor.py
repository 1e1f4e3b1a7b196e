"""A DC motor on an H-bridge, driven by PWM through gpiozero, in any of the three wirings."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

from gpiozero import DigitalOutputDevice, PWMOutputDevice
from gpiozero.pins import Factory
from rover_safety.config import MotorConfig

from .errors import InvalidCommand, Unsupported
from .failures import Failures
from .motion import MotionSlot, TimedMotion, check_duration
from .outputs import Output, Outputs, outputs_for

STOP_BELOW = 0.01  # |power| at or below this is a stop


def check_finite(**values: float) -> None:
    """Refuse NaN and infinities, naming the field."""
    for key, value in values.items():
        if not math.isfinite(value):
            raise InvalidCommand(f"{key} must be a finite number, not {value!r}")


def check_power(power: float, key: str = "power_pct") -> None:
    """Refuse a power that is not a finite number in -1..1, naming the field."""
    check_finite(**{key: power})
    if not -1.0 <= power <= 1.0:
        raise InvalidCommand(f"{key} must be between -1 and 1, not {power:g}")


class Motor:
    """`a`+`b`+`pwm`, `dir`+`pwm`, or `a`+`b` (PWM on the active one), with optional enable pins.

    Every stop drives the PWM outputs to duty 0 first, then direction pins low and enables inactive, one write per
    output on the shortest path the pin factory offers.
    """

    def __init__(self, config: MotorConfig, factory: Factory, outputs: Outputs | None = None) -> None:
        self.name = config.name
        self.config = config
        self.wiring = config.pins.wiring
        self._fast = outputs or outputs_for(factory)
        self._lock = threading.RLock()
        self._power = 0.0  # signed duty applied now
        self._timed = MotionSlot(self._lock, self.stop)
        self._devices: list[DigitalOutputDevice | PWMOutputDevice] = []
        try:
            self._build(factory)
        except BaseException:
            self.close()
            raise

    def _pwm(self, role: str, pin: int) -> PWMOutputDevice:
        device = PWMOutputDevice(pin, frequency=self.config.pwm_freq, initial_value=0, pin_factory=self._factory)
        self._devices.append(device)
        self._outputs.append(Output(role, device, pin, pwm=True))
        return device

    def _digital(self, role: str, pin: int, active_high: bool = True) -> DigitalOutputDevice:
        device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=self._factory)
        self._devices.append(device)
        self._outputs.append(Output(role, device, pin, pwm=False, off_high=not active_high))
        return device

    def _build(self, factory: Factory) -> None:
        pins = self.config.pins
        self._factory = factory
        self._outputs: list[Output] = []  # in stop order: PWM first, then direction, then enables
        self._forward: DigitalOutputDevice | PWMOutputDevice | None = None
        self._backward: DigitalOutputDevice | PWMOutputDevice | None = None
        self._direction: DigitalOutputDevice | None = None
        self._speed: PWMOutputDevice | None = None
        if self.wiring == "a+b":
            assert pins.a is not None and pins.b is not None
            self._forward, self._backward = self._pwm("a", pins.a), self._pwm("b", pins.b)
        else:
            assert pins.pwm is not None
            self._speed = self._pwm("pwm", pins.pwm)
            if self.wiring == "dir+pwm":
                assert pins.dir is not None
                self._direction = self._digital("dir", pins.dir)
            else:
                assert pins.a is not None and pins.b is not None
                self._forward, self._backward = self._digital("a", pins.a), self._digital("b", pins.b)
        self._enables = [self._digital(role, pin, role == "en_high") for role, pin in
                         (("en_high", pins.en_high), ("en_low", pins.en_low)) if pin is not None]
        pwm_device = self._speed if self._speed is not None else self._forward
        assert isinstance(pwm_device, PWMOutputDevice)
        # What the backend really runs: pigpio rounds pwm_freq to the nearest frequency it can do (900 -> 1000 Hz).
        self.frequency: float | None = pwm_device.frequency

    # --- commands ---------------------------------------------------------------------------------

    def set_power(self, power: float) -> None:
        """Run at `power` (-1..1, sign is direction) until told otherwise."""
        check_power(power)
        with self._lock:
            self._timed.cancel()
            self._apply(power)

    def set_rpm(self, rpm: float) -> None:
        """Run at `rpm` (a fraction of max_rpm, as there is no encoder) until told otherwise."""
        check_finite(rpm=rpm)
        self.set_power(self._power_for(rpm))

    def go_for(self, rpm: float, revolutions: float) -> TimedMotion | None:
        """Turn `revolutions` at `rpm` (time-based, no encoder); revolutions 0 means run at rpm until stopped."""
        check_finite(rpm=rpm, revolutions=revolutions)
        power = self._power_for(rpm)
        if revolutions == 0:
            self.set_power(power)
            return None
        if abs(power) <= STOP_BELOW:
            raise InvalidCommand(f"rpm {rpm:g} is too slow to move {self.name!r}")
        assert self.config.max_rpm is not None
        # Viam's sign rule: the direction is sign(rpm) x sign(revolutions); the time follows the duty really applied
        duration = check_duration(abs(revolutions) / (self._duty(power) * self.config.max_rpm) * 60.0)
        with self._lock:
            self._timed.cancel()
            self._apply(power if revolutions > 0 else -power)
            return self._timed.start(duration)

    def go_to(self) -> None:
        raise Unsupported(f"motor {self.name!r} has no encoder, so it cannot go to a position")

    def reset_zero_position(self) -> None:
        raise Unsupported(f"motor {self.name!r} has no encoder, so it has no position to reset")

    def stop(self) -> bool:
        """Cut power to every output of the bridge; True if it was moving. A failed cut does not skip the rest."""
        with self._lock:
            try:
                self.cut()
            finally:
                moving = self.release()
            return moving

    def cut(self) -> None:
        """Set every PWM output to duty 0: the half of a stop that takes the power away."""
        with self._lock:
            self._off_each(output for output in self._outputs if output.pwm)

    def cut_power(self) -> None:
        """cut() without waiting for the driver's lock: the session manager's first move at a deadline."""
        self._off_each(output for output in self._outputs if output.pwm)

    def release(self) -> bool:
        """After cut(): direction pins low, enables inactive, any timed motion cancelled; True if it was moving."""
        with self._lock:
            was_moving = self._power != 0.0
            self._timed.cancel()
            self._off_each(output for output in self._outputs if not output.pwm)
            self._power = 0.0
            return was_moving

    def force_off(self) -> None:
        """Drive every output off without waiting for the driver's lock (when stop() hung or failed)."""
        self._off_each(self._outputs)
        self._power = 0.0

    def close(self) -> None:
        """Stop, then release the pins (gpiozero makes them inputs: the driver board's pull-downs keep it off).

        Every pin is released even if the stop failed (the first error is raised after).
        """
        with self._lock:
            failures = Failures()
            if self._devices:
                with failures.step("stop"):
                    self.stop()
            for device in reversed(self._devices):
                with failures.step(f"closing {device!r}"):
                    device.close()
            self._devices.clear()
            failures.raise_first()

    def _off_each(self, outputs: Iterable[Output]) -> None:
        """One off command per output, in order; an output that fails does not keep the rest on (raises after)."""
        failures = Failures()
        for output in outputs:
            with failures.step(f"{self.name}.{output.role} (GPIO{output.bcm})"):
                self._fast.off(output)
        failures.raise_first()

    # --- state ----------------------------------------------------------------------------------

    @property
    def power(self) -> float:
        """The signed duty applied now (after min/max power and dir_flip are taken into account)."""
        return self._power

    def is_moving(self) -> bool:
        return self._power != 0.0

    # --- internals --------------------------------------------------------------------------------

    def _power_for(self, rpm: float) -> float:
        if self.config.max_rpm is None:
            raise Unsupported(f"motor {self.name!r} has no max_rpm configured, so it cannot be driven by rpm")
        return max(-1.0, min(1.0, rpm / self.config.max_rpm))

    def _duty(self, power: float) -> float:
        """The PWM duty for a power: |power| clamped to min_power_pct..max_power_pct."""
        return min(self.config.max_power_pct, max(self.config.min_power_pct, abs(power)))

    def _apply(self, power: float) -> None:
        if abs(power) <= STOP_BELOW:
            self.stop()
            return
        cfg = self.config
        duty = self._duty(power)
        forward = (power > 0) != cfg.dir_flip
        if self._power != 0.0 and (self._power > 0) != (power > 0):
            self.stop()  # reversing: never drive both ways at once
        if self._speed is not None:
            if self._direction is not None:
                self._direction.value = forward
            else:
                assert self._forward is not None and self._backward is not None
                (self._backward if forward else self._forward).off()
                (self._forward if forward else self._backward).on()
        for enable in self._enables:
            enable.on()
        if self._speed is not None:
            self._speed.value = duty
        else:
            assert self._forward is not None and self._backward is not None
            (self._backward if forward else self._forward).value = 0
            (self._forward if forward else self._backward).value = duty
        self._power = math.copysign(duty, power)
