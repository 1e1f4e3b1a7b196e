"""Errors of the daemon itself (the wire's own errors map to gRPC statuses in wire/status.py)."""

from __future__ import annotations


class DaemonError(Exception):
    """Base of the daemon's own errors."""


class StartupError(DaemonError, RuntimeError):
    """Raised when the daemon cannot start; the message says why and what to do."""


class AuthFailed(DaemonError, PermissionError):
    """Raised when a call's credentials or token are not accepted; the message is what the client is told."""

    def __init__(self, message: str, *, limited: bool = False) -> None:
        super().__init__(message)
        self.limited = limited  # refused by the failed-attempt limit, without looking at the credentials
