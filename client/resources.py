"""Motors and bases, blocking and asyncio, with the methods of the wire API. `timeout=None` means the call's default:
10 s (connect's call_timeout) for quick calls, no deadline for the timed moves (go_for, go_to, move_straight, spin),
which block until the move is done."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from . import calls
from .calls import Call
from .status import BaseProperties, MotorProperties, PowerState

T = TypeVar("T")
Extra = Mapping[str, Any] | None


class _Resource:
    def __init__(self, name: str, run: Callable[[Call[Any], float | None], Any]) -> None:
        self.name = name
        self._run = run

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Motor(_Resource):
    """A motor (MotorService). set_power, go_for, set_rpm and go_to are monitored: they run in a session."""

    def _call(self, call: Call[T], timeout: float | None) -> T:
        result: T = self._run(call, timeout)
        return result

    def set_power(self, power: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Power -1..1 (the sign is the direction)."""
        self._call(calls.motor_set_power(self.name, power, extra), timeout)

    def go_for(self, rpm: float, revolutions: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Turn `revolutions` at `rpm` (direction: the product of the signs); blocks until done."""
        self._call(calls.motor_go_for(self.name, rpm, revolutions, extra), timeout)

    def set_rpm(self, rpm: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Turn at `rpm` until told otherwise."""
        self._call(calls.motor_set_rpm(self.name, rpm, extra), timeout)

    def go_to(self, rpm: float, position_revolutions: float, *, extra: Extra = None,
              timeout: float | None = None) -> None:
        """Turn to an absolute position (needs position reporting); blocks until done."""
        self._call(calls.motor_go_to(self.name, rpm, position_revolutions, extra), timeout)

    def stop(self, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Stop (never needs a session)."""
        self._call(calls.motor_stop(self.name, extra), timeout)

    def is_moving(self, *, timeout: float | None = None) -> bool:
        """Whether the motor is moving."""
        return self._call(calls.motor_is_moving(self.name), timeout)

    def is_powered(self, *, extra: Extra = None, timeout: float | None = None) -> PowerState:
        """Whether the motor is on, and its power."""
        return self._call(calls.motor_is_powered(self.name, extra), timeout)

    def get_properties(self, *, extra: Extra = None, timeout: float | None = None) -> MotorProperties:
        """What the motor supports."""
        return self._call(calls.motor_get_properties(self.name, extra), timeout)

    def get_position(self, *, extra: Extra = None, timeout: float | None = None) -> float:
        """The position in revolutions."""
        return self._call(calls.motor_get_position(self.name, extra), timeout)


class Base(_Resource):
    """A wheeled base (BaseService). set_power, set_velocity, move_straight and spin are monitored."""

    def _call(self, call: Call[T], timeout: float | None) -> T:
        result: T = self._run(call, timeout)
        return result

    def set_power(self, linear: float, angular: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Linear (forward, -1..1) and angular (counter-clockwise, -1..1) power."""
        self._call(calls.base_set_power(self.name, linear, angular, extra), timeout)

    def set_velocity(self, linear_mm_s: float, angular_deg_s: float, *, extra: Extra = None,
                     timeout: float | None = None) -> None:
        """Linear velocity in mm/s and angular velocity in deg/s."""
        self._call(calls.base_set_velocity(self.name, linear_mm_s, angular_deg_s, extra), timeout)

    def move_straight(self, distance_mm: int, mm_per_sec: float, *, extra: Extra = None,
                      timeout: float | None = None) -> None:
        """Drive `distance_mm` at `mm_per_sec`; blocks until done."""
        self._call(calls.base_move_straight(self.name, distance_mm, mm_per_sec, extra), timeout)

    def spin(self, angle_deg: float, degs_per_sec: float, *, extra: Extra = None,
             timeout: float | None = None) -> None:
        """Turn in place by `angle_deg` at `degs_per_sec`; blocks until done."""
        self._call(calls.base_spin(self.name, angle_deg, degs_per_sec, extra), timeout)

    def stop(self, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Stop (never needs a session)."""
        self._call(calls.base_stop(self.name, extra), timeout)

    def is_moving(self, *, timeout: float | None = None) -> bool:
        """Whether the base is moving."""
        return self._call(calls.base_is_moving(self.name), timeout)

    def get_properties(self, *, extra: Extra = None, timeout: float | None = None) -> BaseProperties:
        """Width, turning radius and wheel circumference, in metres."""
        return self._call(calls.base_get_properties(self.name, extra), timeout)


class AsyncMotor(_Resource):
    """A motor for asyncio programs: the methods of `Motor`, awaitable."""

    def _call(self, call: Call[T], timeout: float | None) -> Awaitable[T]:
        result: Awaitable[T] = self._run(call, timeout)
        return result

    async def set_power(self, power: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Power -1..1 (the sign is the direction)."""
        await self._call(calls.motor_set_power(self.name, power, extra), timeout)

    async def go_for(self, rpm: float, revolutions: float, *, extra: Extra = None,
                     timeout: float | None = None) -> None:
        """Turn `revolutions` at `rpm`; returns when done."""
        await self._call(calls.motor_go_for(self.name, rpm, revolutions, extra), timeout)

    async def set_rpm(self, rpm: float, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Turn at `rpm` until told otherwise."""
        await self._call(calls.motor_set_rpm(self.name, rpm, extra), timeout)

    async def go_to(self, rpm: float, position_revolutions: float, *, extra: Extra = None,
                    timeout: float | None = None) -> None:
        """Turn to an absolute position; returns when done."""
        await self._call(calls.motor_go_to(self.name, rpm, position_revolutions, extra), timeout)

    async def stop(self, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Stop (never needs a session)."""
        await self._call(calls.motor_stop(self.name, extra), timeout)

    async def is_moving(self, *, timeout: float | None = None) -> bool:
        """Whether the motor is moving."""
        return await self._call(calls.motor_is_moving(self.name), timeout)

    async def is_powered(self, *, extra: Extra = None, timeout: float | None = None) -> PowerState:
        """Whether the motor is on, and its power."""
        return await self._call(calls.motor_is_powered(self.name, extra), timeout)

    async def get_properties(self, *, extra: Extra = None, timeout: float | None = None) -> MotorProperties:
        """What the motor supports."""
        return await self._call(calls.motor_get_properties(self.name, extra), timeout)

    async def get_position(self, *, extra: Extra = None, timeout: float | None = None) -> float:
        """The position in revolutions."""
        return await self._call(calls.motor_get_position(self.name, extra), timeout)


class AsyncBase(_Resource):
    """A wheeled base for asyncio programs: the methods of `Base`, awaitable."""

    def _call(self, call: Call[T], timeout: float | None) -> Awaitable[T]:
        result: Awaitable[T] = self._run(call, timeout)
        return result

    async def set_power(self, linear: float, angular: float, *, extra: Extra = None,
                        timeout: float | None = None) -> None:
        """Linear (forward, -1..1) and angular (counter-clockwise, -1..1) power."""
        await self._call(calls.base_set_power(self.name, linear, angular, extra), timeout)

    async def set_velocity(self, linear_mm_s: float, angular_deg_s: float, *, extra: Extra = None,
                           timeout: float | None = None) -> None:
        """Linear velocity in mm/s and angular velocity in deg/s."""
        await self._call(calls.base_set_velocity(self.name, linear_mm_s, angular_deg_s, extra), timeout)

    async def move_straight(self, distance_mm: int, mm_per_sec: float, *, extra: Extra = None,
                            timeout: float | None = None) -> None:
        """Drive `distance_mm` at `mm_per_sec`; returns when done."""
        await self._call(calls.base_move_straight(self.name, distance_mm, mm_per_sec, extra), timeout)

    async def spin(self, angle_deg: float, degs_per_sec: float, *, extra: Extra = None,
                   timeout: float | None = None) -> None:
        """Turn in place by `angle_deg` at `degs_per_sec`; returns when done."""
        await self._call(calls.base_spin(self.name, angle_deg, degs_per_sec, extra), timeout)

    async def stop(self, *, extra: Extra = None, timeout: float | None = None) -> None:
        """Stop (never needs a session)."""
        await self._call(calls.base_stop(self.name, extra), timeout)

    async def is_moving(self, *, timeout: float | None = None) -> bool:
        """Whether the base is moving."""
        return await self._call(calls.base_is_moving(self.name), timeout)

    async def get_properties(self, *, extra: Extra = None, timeout: float | None = None) -> BaseProperties:
        """Width, turning radius and wheel circumference, in metres."""
        return await self._call(calls.base_get_properties(self.name, extra), timeout)
