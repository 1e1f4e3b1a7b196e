"""A wheeled (differential-drive) base made of configured motors."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from rover_safety.config import BaseConfig

from .errors import InvalidCommand, Unsupported
from .failures import Failures
from .motion import MotionSlot, TimedMotion, check_duration
from .motor import STOP_BELOW, Motor, check_finite, check_power


class WheeledBase:
    """Mixes linear.y and angular.z into left/right motor commands; time-based moves without encoders."""

    def __init__(self, config: BaseConfig, left: Sequence[Motor], right: Sequence[Motor]) -> None:
        self.name = config.name
        self.config = config
        self.left, self.right = list(left), list(right)
        self.motors = self.left + self.right
        self._lock = threading.RLock()
        self._timed = MotionSlot(self._lock, self._off)

    # --- commands ---------------------------------------------------------------------------------

    def set_power(self, linear_y: float, angular_z: float) -> None:
        """Drive with power fractions (-1..1): forward is +linear_y, counter-clockwise is +angular_z."""
        check_power(linear_y, "linear.y")
        check_power(angular_z, "angular.z")
        left, right = linear_y - angular_z, linear_y + angular_z
        scale = max(1.0, abs(left), abs(right))
        with self._lock:
            self._timed.cancel()
            self._drive(left / scale, right / scale)

    def set_velocity(self, mm_per_sec: float, degs_per_sec: float) -> None:
        """Drive at a linear (mm/s) and angular (deg/s, counter-clockwise positive) velocity until told otherwise."""
        check_finite(linear_y=mm_per_sec, angular_z=degs_per_sec)
        left, right, _ = self._wheel_powers(mm_per_sec, degs_per_sec)  # may refuse: before anything changes
        with self._lock:
            self._timed.cancel()
            self._drive(left, right)

    def move_straight(self, distance_mm: float, mm_per_sec: float) -> TimedMotion | None:
        """Drive `distance_mm` (negative: backwards) at `mm_per_sec`, timed (no encoders); 0 mm is a stop."""
        check_finite(distance_mm=distance_mm, mm_per_sec=mm_per_sec)
        if distance_mm == 0:
            self.stop()
            return None
        if mm_per_sec == 0:
            raise InvalidCommand("mm_per_sec must not be 0 for a non-zero distance")
        speed = math.copysign(abs(mm_per_sec), distance_mm * mm_per_sec)  # Viam: sign(distance) x sign(speed)
        return self._drive_for(abs(distance_mm / mm_per_sec), *self._wheel_powers(speed, 0.0))

    def spin(self, angle_deg: float, degs_per_sec: float) -> TimedMotion | None:
        """Turn `angle_deg` (counter-clockwise positive) at `degs_per_sec` on the spot, timed; 0 degrees is a stop."""
        check_finite(angle_deg=angle_deg, degs_per_sec=degs_per_sec)
        if angle_deg == 0:
            self.stop()
            return None
        if degs_per_sec == 0:
            raise InvalidCommand("degs_per_sec must not be 0 for a non-zero angle")
        rate = math.copysign(abs(degs_per_sec), angle_deg * degs_per_sec)  # Viam: sign(angle) x sign(speed)
        return self._drive_for(abs(angle_deg / degs_per_sec), *self._wheel_powers(0.0, rate))

    def stop(self) -> bool:
        """Cut power on every motor's PWM first, then tidy each bridge; True if anything was moving."""
        with self._lock:
            self._timed.cancel()
            return self._off()

    def force_off(self) -> None:
        """Every motor forced off; one that fails does not keep the others on (the first error is raised after)."""
        self._each(Motor.force_off)

    def cut_power(self) -> None:
        """Duty 0 on every motor's PWM at once, without waiting for any lock (stop() follows)."""
        self._each(Motor.cut_power)

    def _each(self, action: Callable[[Motor], object]) -> None:
        failures = Failures()
        for motor in self.motors:
            with failures.step(motor.name):
                action(motor)
        failures.raise_first()

    # --- state ----------------------------------------------------------------------------------

    def is_moving(self) -> bool:
        return any(m.is_moving() for m in self.motors)

    @property
    def width_m(self) -> float:
        return self.config.width_mm / 1000.0

    @property
    def wheel_circumference_m(self) -> float:
        return self.config.wheel_circumference_mm / 1000.0

    # --- internals --------------------------------------------------------------------------------

    def _wheel_powers(self, mm_per_sec: float, degs_per_sec: float) -> tuple[float, float, float]:
        """Wheel powers of a differential drive (fractions of max_rpm) and how much slower than asked (>= 1).

        Computed on the inputs scaled to at most 1, so that no finite request, however large, overflows into an
        infinity or a NaN: one too fast keeps its ratio of left to right and is slowed down to full power.
        """
        max_rpm = min((m.config.max_rpm or 0.0) for m in self.motors)
        if max_rpm <= 0:
            raise Unsupported(f"base {self.name!r} needs max_rpm on every motor to move by velocity or distance")
        scale = max(1.0, abs(mm_per_sec), abs(degs_per_sec))
        linear, angular = mm_per_sec / scale, degs_per_sec / scale
        turn = math.radians(angular) * self.config.width_mm / 2.0
        left, right = linear - turn, linear + turn  # mm/s, divided by `scale`
        to_power = scale * 60.0 / self.config.wheel_circumference_mm / max_rpm  # may be inf for absurd inputs
        fastest = max(abs(left), abs(right))
        if fastest * to_power <= 1.0:
            return left * to_power, right * to_power, 1.0
        return left / fastest, right / fastest, fastest * to_power  # too fast: keep the ratio, slow both down

    def _drive(self, left: float, right: float) -> None:
        """Set every motor of each side; both powers are checked before any output changes."""
        check_power(left, "left wheels' power")
        check_power(right, "right wheels' power")
        for motors, power in ((self.left, left), (self.right, right)):
            for motor in motors:
                motor.set_power(power)

    def _drive_for(self, duration: float, left: float, right: float, slowdown: float) -> TimedMotion:
        """Drive for `duration` seconds, stretched by `slowdown` when the wheels could not go as fast as asked."""
        if max(abs(left), abs(right)) <= STOP_BELOW:
            raise InvalidCommand("too slow to move: the wheels would get no power")
        duration = check_duration(duration * slowdown)
        with self._lock:
            self._timed.cancel()
            self._drive(left, right)
            return self._timed.start(duration)

    def _off(self) -> bool:
        """PWM off on every motor, then every bridge tidied; a motor that fails does not keep the rest on."""
        was_moving = self.is_moving()
        failures = Failures()
        for motor in self.motors:
            with failures.step(f"cutting {motor.name}"):
                motor.cut()
        for motor in self.motors:
            with failures.step(f"releasing {motor.name}"):
                motor.release()
        failures.raise_first()
        return was_moving
