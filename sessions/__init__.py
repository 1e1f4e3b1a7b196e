"""Sessions: who is driving what, until when; and the stop path when a session ends.

Imports nothing of gRPC or GPIO: resources are things with a `name` and a `stop()`.
"""

from .context import from_context, session_context, to_context
from .errors import ManagerClosed, NoSession, SessionError, SessionExpired, TooManySessions
from .hooks import LoopHooks
from .manager import MAX_SESSIONS, Claim, SessionManager
from .resource import CutPower, ForceOff, Stoppable
from .session import NIL, Session, SessionEvent, session_tag
from .stopping import STOP_TIMEOUT, StopReport

__all__ = [
    "MAX_SESSIONS",
    "NIL",
    "STOP_TIMEOUT",
    "Claim",
    "CutPower",
    "ForceOff",
    "LoopHooks",
    "ManagerClosed",
    "NoSession",
    "Session",
    "SessionError",
    "SessionEvent",
    "SessionExpired",
    "SessionManager",
    "StopReport",
    "Stoppable",
    "TooManySessions",
    "from_context",
    "session_context",
    "session_tag",
    "to_context",
]
