"""All the session table knows of a resource: a name and a stop(), and two optional faster ways to turn it off."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Stoppable(Protocol):
    """A resource a session can drive, as the session table sees it."""

    @property
    def name(self) -> str: ...

    def stop(self) -> bool | None:
        """Stop the resource; return True if it was moving (None when unknown)."""


@runtime_checkable
class CutPower(Protocol):
    """A resource whose power can be cut at once (PWM duty 0) without waiting for its driver's lock.

    The deadline thread does this itself the moment a session expires, before handing the full stop() to a stop
    thread: one thread wake-up fewer between the deadline and the power going off.
    """

    def cut_power(self) -> None: ...


@runtime_checkable
class ForceOff(Protocol):
    """A resource that can drive its outputs off without its driver's usual path (used when stop() fails)."""

    def force_off(self) -> None: ...
