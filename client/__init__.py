"""The Python client of rover-safety: sessions kept right, typed errors, API keys and TLS.

    from rover_safety.client import connect

    with connect("rover.local:8080", key_id=KEY_ID, api_key=KEY, tls_fingerprint=FP) as rover:
        left = rover.motor("left")
        left.set_power(0.5)      # starts a session; heartbeats run on their own thread and channel
        ...
    # leaving the block closes the session: the daemon stops `left` now, not a window later

asyncio programs use `rover_safety.client.aio.connect` (same arguments, awaitable methods).
"""

from .errors import (
    Cancelled,
    ClientError,
    Closed,
    InsecureCredentials,
    NotFound,
    PermissionDenied,
    ProfileError,
    Refused,
    SessionExpired,
    Timeout,
    TlsError,
    TlsMismatch,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from .profile import ClientProfile
from .resources import AsyncBase, AsyncMotor, Base, Motor
from .sessions import Session, SessionsUnsupported
from .status import (
    RECONNECTED,
    RECONNECTING,
    BaseProperties,
    Event,
    ExpiryInfo,
    MotorProperties,
    PartInfo,
    PowerState,
    ResourceInfo,
    ResourceName,
    SessionInfo,
    Status,
)
from .sync import Client, EventStream, SessionManager, connect
from .tls import fingerprint, normalize_fingerprint

__all__ = [
    "RECONNECTED",
    "RECONNECTING",
    "AsyncBase",
    "AsyncMotor",
    "Base",
    "BaseProperties",
    "Cancelled",
    "Client",
    "ClientError",
    "ClientProfile",
    "Closed",
    "Event",
    "EventStream",
    "ExpiryInfo",
    "InsecureCredentials",
    "Motor",
    "MotorProperties",
    "NotFound",
    "PartInfo",
    "PermissionDenied",
    "PowerState",
    "ProfileError",
    "Refused",
    "ResourceInfo",
    "ResourceName",
    "Session",
    "SessionExpired",
    "SessionInfo",
    "SessionManager",
    "SessionsUnsupported",
    "Status",
    "Timeout",
    "TlsError",
    "TlsMismatch",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
    "connect",
    "fingerprint",
    "normalize_fingerprint",
]
