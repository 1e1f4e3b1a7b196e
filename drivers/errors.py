"""Errors the drivers raise. A refused command (InvalidCommand, Unsupported) leaves every output as it was."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error the drivers raise on purpose."""


class InvalidCommand(DriverError, ValueError):
    """Raised for a request whose values are wrong: out of range, not a number, or zero where motion needs a speed."""


class Unsupported(DriverError, NotImplementedError):
    """Raised when the hardware as configured cannot do this (e.g. GoTo without an encoder)."""


class PinFactoryError(DriverError, RuntimeError):
    """Raised when the configured GPIO backend cannot be used; the message says why and what to do."""


class StopFailed(DriverError, RuntimeError):
    """Raised when some resources could not be stopped (every other one was); names each and why."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{name}: {exc!r}" for name, exc in failures.items()))
