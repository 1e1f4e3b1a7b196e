"""How errors become gRPC statuses: one table, matched with isinstance in order, so a subclass maps like its base."""

from __future__ import annotations

import grpc
from rover_safety.drivers import InvalidCommand, Unsupported
from rover_safety.sessions import ManagerClosed, NoSession, SessionExpired, TooManySessions

# Viam's SDKs look for exactly this message (with INVALID_ARGUMENT) to start a new session.
SESSION_EXPIRED = "SESSION_EXPIRED"


class Abort(Exception):
    """Raised by a handler to end its call with this status and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# First match wins: put a subclass before its base when it needs another status.
STATUSES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (SessionExpired, grpc.StatusCode.INVALID_ARGUMENT),
    (TooManySessions, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NoSession, grpc.StatusCode.FAILED_PRECONDITION),
    (ManagerClosed, grpc.StatusCode.UNAVAILABLE),
    (InvalidCommand, grpc.StatusCode.INVALID_ARGUMENT),
    (Unsupported, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_of(exc: Exception) -> Abort | None:
    """The status a client gets for `exc`; None for an exception nobody expected (a bug: the daemon fails safe)."""
    if isinstance(exc, Abort):
        return exc
    for kind, code in STATUSES:
        if isinstance(exc, kind):
            return Abort(code, SESSION_EXPIRED if isinstance(exc, SessionExpired) else str(exc))  # Viam's wire word
    return None
