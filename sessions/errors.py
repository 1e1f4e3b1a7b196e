"""Errors the session table raises; each says what the client did and what to do about it."""

from __future__ import annotations


class SessionError(Exception):
    """Base of the errors a client's request can cause in the session table."""


class SessionExpired(SessionError, LookupError):
    """Raised for a session id that is unknown, expired, closed or another owner's: deliberately indistinguishable."""

    def __init__(self) -> None:
        super().__init__("no live session of this owner has that id (unknown, expired or closed)")


class TooManySessions(SessionError):
    """Raised by `start()` when the table (or one owner's share of it) is full."""

    def __init__(self, limit: int, whose: str = "live sessions") -> None:
        self.limit = limit
        super().__init__(f"too many {whose} (limit {limit}); close one or wait for one to expire")


class NoSession(SessionError, PermissionError):
    """Raised for a monitored call without a session while unmonitored motion is not allowed."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"refusing to move {name!r} without a session: this machine only moves while a client heartbeats "
            "(start a session, or set network.sessions.allow_unmonitored_motion: true)"
        )


class ManagerClosed(SessionError, RuntimeError):
    """Raised by `start()` once the session manager has been closed (the daemon is shutting down)."""

    def __init__(self) -> None:
        super().__init__("the session manager is closed")
