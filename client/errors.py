"""Typed errors of the client: one base (`ClientError`), each also the builtin it is, each saying what to do."""

from __future__ import annotations

import grpc

SESSION_EXPIRED = "SESSION_EXPIRED"


class ClientError(Exception):
    """Base of every error the client raises; `code` and `details` are the daemon's, when it answered."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class NotFound(ClientError, LookupError):
    """The daemon has no resource of that name."""


class SessionExpired(ClientError):
    """The session ended (lapsed, expired, closed, or lost with a daemon restart): the robot has stopped."""


class Unauthenticated(ClientError, PermissionError):
    """The daemon refused the credentials (wrong key or key id, or none where one is needed)."""


class PermissionDenied(ClientError, PermissionError):
    """The daemon refused the call for this caller (e.g. plain-text motion from another host)."""


class Unavailable(ClientError, ConnectionError):
    """The daemon cannot be reached (not running, wrong address, network down)."""


class Timeout(ClientError, TimeoutError):
    """The call did not finish within its deadline."""


class Refused(ClientError, ValueError):
    """The daemon refused the call (a bad value, a precondition, a limit); `code` and `details` say which."""


class Unsupported(ClientError, NotImplementedError):
    """The daemon does not implement the call."""


class Cancelled(ClientError):
    """The call was cancelled (by the program, or by closing the client)."""


class Closed(ClientError, RuntimeError):
    """The client was used after `close()`."""


class TlsError(ClientError, ConnectionError):
    """The TLS set-up failed (an unreadable CA file, a handshake that failed)."""


class TlsMismatch(TlsError):
    """The server's certificate does not match the pinned fingerprint."""


class InsecureCredentials(ClientError, ValueError):
    """An API key would travel in plain text to a host that is not this machine."""


class ProfileError(ClientError, ValueError):
    """A client profile (file or environment) is invalid; the message names the file, line and key."""


def _hint(code: grpc.StatusCode, details: str) -> str:
    """What to do about a status, in a few words."""
    hints = {
        grpc.StatusCode.NOT_FOUND: "check the name against client.resource_names()",
        grpc.StatusCode.UNAUTHENTICATED: "check key_id and api_key (ROVER_SAFETY_KEY_ID / ROVER_SAFETY_API_KEY)",
        grpc.StatusCode.PERMISSION_DENIED: "use TLS and an API key, or run the program on the rover",
        grpc.StatusCode.UNAVAILABLE: "check that the daemon runs (systemctl status rover-safety) and the address",
        grpc.StatusCode.DEADLINE_EXCEEDED: "pass a longer timeout= or check the link to the rover",
        grpc.StatusCode.UNIMPLEMENTED: "upgrade the daemon, or do without this call",
        grpc.StatusCode.FAILED_PRECONDITION: "see the daemon's message",
    }
    if code == grpc.StatusCode.FAILED_PRECONDITION and "session" in details.lower():
        return "motion needs a session: keep sessions on, or use `with client.session(s):` with disable_sessions"
    return hints.get(code, "see the daemon's message")


def from_status(code: grpc.StatusCode, details: str, what: str) -> ClientError:
    """The typed error for a gRPC status answered to `what` (e.g. "MotorService/SetPower(left)")."""
    message = f"{what}: {code.name}: {details or '(no details)'}; {_hint(code, details)}"
    kinds: dict[grpc.StatusCode, type[ClientError]] = {
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.UNAVAILABLE: Unavailable,
        grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
        grpc.StatusCode.UNIMPLEMENTED: Unsupported,
        grpc.StatusCode.CANCELLED: Cancelled,
        grpc.StatusCode.INVALID_ARGUMENT: Refused,
        grpc.StatusCode.FAILED_PRECONDITION: Refused,
        grpc.StatusCode.OUT_OF_RANGE: Refused,
        grpc.StatusCode.RESOURCE_EXHAUSTED: Refused,
        grpc.StatusCode.ALREADY_EXISTS: Refused,
        grpc.StatusCode.ABORTED: Refused,
    }
    if code == grpc.StatusCode.INVALID_ARGUMENT and details == SESSION_EXPIRED:
        return session_expired(what)
    return kinds.get(code, ClientError)(message, code=code, details=details)


def session_expired(what: str, why: str = "the daemon no longer knows the session") -> SessionExpired:
    """The SessionExpired for `what`, saying why and what happens next."""
    return SessionExpired(
        f"{what}: the session expired ({why}); the daemon has stopped what it drove. "
        "The next motion call starts a new session (or connect with retry_on_expiry=True to retry at once)",
        code=grpc.StatusCode.INVALID_ARGUMENT, details=SESSION_EXPIRED)


def is_session_expired(error: grpc.RpcError) -> bool:
    """Whether a gRPC error is the daemon's SESSION_EXPIRED answer."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    return bool(code == grpc.StatusCode.INVALID_ARGUMENT and details == SESSION_EXPIRED)
