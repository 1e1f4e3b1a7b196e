"""Sessions: the automatic one (started lazily, heartbeaten, reset on expiry) and manual ones attached with a context.

A manual session travels with the code that runs inside `with client.session(s):` (a `contextvars` variable, like
Viam's `session.ToContext`): threads and asyncio tasks each see their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from rover_safety.api import robot_pb2

from .calls import heartbeat_window
from .connection import DEFAULT_WINDOW  # Viam's 2 s, if the daemon sends no window
from .errors import Refused, SessionExpired, Unsupported, session_expired
from .heartbeats import Heartbeater

log = logging.getLogger("rover_safety.client")

StartSession = Callable[[str], Awaitable[robot_pb2.StartSessionResponse]]


class SessionsUnsupported(RuntimeWarning):
    """The daemon does not implement sessions: the client runs without them."""


@dataclass(frozen=True)
class Session:
    """A session the program holds: its id and the heartbeat window the daemon gave it (seconds)."""

    id: str
    window: float

    def __str__(self) -> str:
        return f"session {self.id[:8]}… (window {self.window:g} s)"


_CURRENT: ContextVar[Session | None] = ContextVar("rover_safety_client_session", default=None)


@contextmanager
def attached(session: Session | str) -> Iterator[Session]:
    """Attach `session` to every call made in this block (in this thread or task), like Viam's session.ToContext."""
    s = session if isinstance(session, Session) else Session(str(session), 0.0)
    if not s.id:
        raise ValueError("cannot attach a session with an empty id")
    token = _CURRENT.set(s)
    try:
        yield s
    finally:
        _CURRENT.reset(token)


def current() -> Session | None:
    """The session attached to the running context, if any."""
    return _CURRENT.get()


class AutoSessions:
    """The client's automatic session: at most one, started before the first monitored call, heartbeaten by the one
    heartbeat loop, forgotten when it expires (the next monitored call then starts a new one)."""

    def __init__(self, heartbeater: Heartbeater, start: StartSession, enabled: bool) -> None:
        self._heartbeater = heartbeater
        self._start = start
        self.enabled = enabled
        self._lock = threading.Lock()
        self._id: str | None = None
        self._window = 0.0
        self._notice: str | None = None  # why the session ended, found outside a call: the next call raises it
        self._start_lock: asyncio.Lock | None = None

    @property
    def current(self) -> Session | None:
        """The live automatic session, if any."""
        with self._lock:
            return Session(self._id, self._window) if self._id else None

    def _take_notice(self, what: str) -> None:
        with self._lock:
            notice, self._notice = self._notice, None
        if notice is not None:
            raise session_expired(what, notice)

    async def ensure(self, what: str) -> str | None:
        """The id to send with monitored call `what`: the live session, or a new one (None: sessions are off).

        Raises SessionExpired once if the session ended since the last call (the robot stopped in between)."""
        self._take_notice(what)
        with self._lock:
            if self._id:
                return self._id
        if not self.enabled:
            return None
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            self._take_notice(what)
            with self._lock:
                if self._id:
                    return self._id
            t0 = time.monotonic()
            try:
                reply = await self._start("")
            except Unsupported:
                self.enabled = False
                warnings.warn("the daemon does not implement StartSession: running without sessions (motion will "
                              "not stop by itself if this program dies)", SessionsUnsupported, stacklevel=2)
                log.warning("rover-safety client: StartSession is not implemented; sessions are off")
                return None
            if not reply.id:
                raise Refused("StartSession returned an empty session id; is this a rover-safety or Viam server?")
            window = heartbeat_window(reply, DEFAULT_WINDOW)
            with self._lock:
                self._id, self._window = reply.id, window
            self._heartbeater.follow(reply.id, window, started=t0)
            log.debug("rover-safety client: started session %s, window %.3f s", reply.id[:8], window)
            return reply.id

    def expired(self, session_id: str) -> None:
        """A monitored call was answered SESSION_EXPIRED: forget the session and end its heartbeats."""
        with self._lock:
            if self._id != session_id:
                return
            self._id = None
        self._heartbeater.unfollow(session_id)

    def on_ended(self, session_id: str, why: str) -> None:
        """(heartbeat thread) The loop found the session over: the next monitored call raises SessionExpired."""
        with self._lock:
            if self._id != session_id:
                return
            self._id, self._notice = None, why
        log.warning("rover-safety client: session %s ended: %s; the daemon has stopped what it drove",
                    session_id[:8], why)

    def on_replaced(self, old: str, new: str, window: float) -> None:
        """(heartbeat thread) A resume returned another session: the old one is gone (and what it drove stopped)."""
        with self._lock:
            if self._id != old:
                return
            self._id, self._window = new, window
            self._notice = "the daemon lost it during a transient failure (a restart or a broken link)"
        self._heartbeater.follow(new, window)
        log.warning("rover-safety client: session %s was lost during a transient failure; now %s",
                    old[:8], new[:8])

    def take(self) -> str | None:
        """Forget the session (for close): its id, if one was live."""
        with self._lock:
            session_id, self._id, self._notice = self._id, None, None
        self._heartbeater.unfollow()
        return session_id


class ManualSessions:
    """The sessions a program manages itself (`client.session_manager`): started, heartbeaten and closed by it."""

    def __init__(self, start: StartSession, heartbeat: Callable[[str], Awaitable[None]],
                 close: Callable[[str], Awaitable[bool]]) -> None:
        self._start, self._heartbeat, self._close = start, heartbeat, close
        self._lock = threading.Lock()
        self._held: dict[str, Session] = {}

    async def start(self, window: float | None = None) -> Session:
        """StartSession. The daemon decides the window; if `window` is given and differs, the session is closed and
        Refused raised (the wire has no field to ask for one: set network.sessions.heartbeat_window)."""
        reply = await self._start("")
        if not reply.id:
            raise Unsupported("the daemon does not implement sessions")
        session = Session(reply.id, heartbeat_window(reply, DEFAULT_WINDOW))
        if window is not None and abs(session.window - window) > 0.001:
            await self._close(session.id)
            raise Refused(f"the daemon's heartbeat window is {session.window:g} s, not the {window:g} s asked for: "
                          "heartbeat at least once per that window, or change network.sessions.heartbeat_window")
        with self._lock:
            self._held[session.id] = session
        return session

    async def heartbeat(self, session: Session | str) -> None:
        """SendSessionHeartbeat; raises SessionExpired (and forgets the session) if it is over."""
        session_id = session.id if isinstance(session, Session) else session
        try:
            await self._heartbeat(session_id)
        except SessionExpired:
            self.forget(session_id)
            raise

    def all(self) -> list[Session]:
        """The sessions started here and not closed or found expired."""
        with self._lock:
            return list(self._held.values())

    async def close(self, session: Session | str) -> bool:
        """SafetyService/CloseSession: the daemon stops what the session drove at once. True if it was live."""
        session_id = session.id if isinstance(session, Session) else session
        self.forget(session_id)
        return await self._close(session_id)

    def forget(self, session_id: str) -> None:
        """Drop a session from `all()`."""
        with self._lock:
            self._held.pop(session_id, None)

    def take_all(self) -> list[str]:
        """Forget every held session (for close): their ids."""
        with self._lock:
            ids = list(self._held)
            self._held.clear()
        return ids
