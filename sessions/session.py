"""A client session and the events the table reports about sessions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

NIL = ""  # the nil session id: associating it only disassociates


@dataclass(eq=False)
class Session:
    """One client's presence: it lives while heartbeats keep arriving within its window."""

    id: str
    owner: str
    peer: str
    window: float
    deadline: float
    ended: str | None = None  # None while live, else "expired" or "closed"
    own_window: bool = False  # started with a window of its own, which a reload does not change
    queued: float = 0.0  # the deadline this session is filed under in the heap
    started: float = 0.0  # when it started, on the table's clock
    heard: float = 0.0  # when it was last heard from (its start, a heartbeat or a monitored call)

    def live_at(self, now: float) -> bool:
        return self.ended is None and now < self.deadline

    @property
    def tag(self) -> str:
        """A short handle for logs and operator screens that cannot be used as the id (which is a secret)."""
        return session_tag(self.id)


def session_tag(session_id: str) -> str:
    """The tag of a session id: 8 hex digits of its SHA-256."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SessionEvent:
    """Something the operator should see: started, resumed, expired, closed, stop_failed, forced_off, unmonitored."""

    kind: str
    session_id: str
    peer: str = ""
    window: float = 0.0
    resources: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    latency: float | None = None  # seconds from the deadline (or close) to the last output off
    detail: str = ""
