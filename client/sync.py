"""The blocking client: `connect()` and `Client`, a thin facade over the core's private event loop."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.message import Message

from . import calls, exits, sessions
from .calls import Call
from .connection import ConnectOptions, parse_address
from .core import Core
from .errors import Closed
from .loop import wait
from .profile import CONNECTION_FIELDS, ClientProfile
from .resources import Base, Motor
from .sessions import Session
from .status import Event, ResourceName, SessionInfo, Status

T = TypeVar("T")


def _result(core: Core, future: concurrent.futures.Future[T]) -> T:
    """Wait for a call on the core's loop; one cut off by close() raises Closed."""
    try:
        return wait(future)
    except concurrent.futures.CancelledError:
        if core.closed:
            raise Closed("the client was closed while the call ran") from None
        raise


def build_options(address: str | None, *, tls: bool | None, profile: ClientProfile | None,
                  **rest: Any) -> ConnectOptions:
    """ConnectOptions from `connect()`'s arguments; without an address, the profile (env / file) supplies them
    (each of CONNECTION_FIELDS the arguments leave None, and tls if None)."""
    if address is None:
        prof = profile if profile is not None else ClientProfile.load()
        given = prof.connect_kwargs()
        address = given["address"]
        for name in CONNECTION_FIELDS:
            if rest.get(name) is None:
                rest[name] = given.get(name)
        if tls is None:
            tls = bool(given["tls"])
    return ConnectOptions(address=parse_address(address), tls=True if tls is None else tls, **rest)


def connect(address: str | None = None, *, api_key: str | None = None, key_id: str | None = None,
            tls: bool | None = None, ca_file: str | None = None, tls_fingerprint: str | None = None,
            server_name: str | None = None, disable_sessions: bool = False, retry_on_expiry: bool = False,
            liveness_timeout: float | None = None, connect_timeout: float = 5.0, call_timeout: float | None = 10.0,
            close_timeout: float = 2.0, keepalive_time: float | None = None, handle_sigterm: bool = True,
            profile: ClientProfile | None = None) -> Client:
    """Connect to a rover-safety daemon (or any Viam-compatible server).

    address: "host:port" (port 8080 if none); None: from the profile (ClientProfile.load(): environment, then
      ~/.config/rover-safety/client.yaml).
    api_key, key_id: an API key and its id (AuthService/Authenticate); every call then carries the bearer token.
      Refused in plain text to a host that is not this machine.
    tls: TLS unless False (None: the profile's `insecure`, else TLS). Verified against ca_file, pinned by
      tls_fingerprint (the SHA-256 of the certificate, as `rover-safety gen-cert` prints), else the system's roots.
      server_name: the name to check the certificate against when the address is not one it carries.
    disable_sessions: no automatic session; use client.session_manager and `with client.session(s):`.
    retry_on_expiry: on SESSION_EXPIRED, retry the call once with a new session (as Viam's Go SDK) instead of
      raising SessionExpired.
    liveness_timeout: seconds; heartbeats stop when the program makes no call (and no client.keepalive()) for that
      long, so a hung program lets its session lapse and the robot stops. A call in progress (a blocking go_for)
      counts as alive until it returns.
    connect_timeout: seconds to wait for the channel; call_timeout: the deadline of quick calls (timed moves have
      none unless a call passes timeout=); close_timeout: for each CloseSession when closing.
    keepalive_time: seconds between keepalive pings (None: window / 2, so a dead link is noticed within the window;
      0: none). The daemon must accept pings that often (see connection.channel_options).
    handle_sigterm: close the client on SIGTERM (installed only from the main thread, only if the program has no
      SIGTERM handler; the default disposition then runs as before).
    """
    opts = build_options(address, api_key=api_key, key_id=key_id, tls=tls, ca_file=ca_file,
                         tls_fingerprint=tls_fingerprint, server_name=server_name, profile=profile,
                         disable_sessions=disable_sessions, retry_on_expiry=retry_on_expiry,
                         liveness_timeout=liveness_timeout, connect_timeout=connect_timeout,
                         call_timeout=call_timeout, close_timeout=close_timeout, keepalive_time=keepalive_time,
                         handle_sigterm=handle_sigterm)
    core = Core.connect(opts)
    exits.register(core, opts.handle_sigterm)
    return Client(core)


class SessionManager:
    """Manual session management (with disable_sessions=True): start, heartbeat, list and close sessions yourself;
    attach one to calls with `with client.session(s):`. Nothing heartbeats these for you."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def start(self, window: float | None = None) -> Session:
        """A new session (the daemon's window; `window`, if given, must match it or Refused is raised)."""
        return _result(self._core, self._core.submit(self._core.manual.start(window)))

    def heartbeat(self, session: Session | str) -> None:
        """Keep `session` alive for another window; SessionExpired if it is over."""
        self._core.liveness.touch()
        _result(self._core, self._core.submit(self._core.manual.heartbeat(session)))

    def all(self) -> list[Session]:
        """The sessions started here and not closed or found expired."""
        return self._core.manual.all()

    def close(self, session: Session | str) -> bool:
        """End `session` now (the daemon stops what it drove); True if it was live."""
        return _result(self._core, self._core.submit(self._core.manual.close(session)))


class EventStream(Iterator[Event]):
    """The daemon's events, as they happen; `close()` (or leaving `with`) ends the stream."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._events = core.watch()
        self._done = False

    async def _next(self) -> Event | None:
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            return None

    def __next__(self) -> Event:
        if self._done or self._core.closed:
            self._done = True
            raise StopIteration
        try:
            event = _result(self._core, self._core.submit(self._next()))
        except Exception:
            if self._core.closed:
                self._done = True
                raise StopIteration from None
            raise
        if event is None:
            self._done = True
            raise StopIteration
        return event

    async def _aclose(self) -> None:
        await self._events.aclose()

    def close(self) -> None:
        """End the stream."""
        if self._done:
            return
        self._done = True
        if not self._core.closed:
            with contextlib.suppress(Exception):
                wait(self._core.submit(self._aclose()), 2.0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A connected client (blocking). Use it as a context manager: leaving it closes the session at once."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.session_manager = SessionManager(core)

    def _run(self, call: Call[T], timeout: float | None = None) -> T:
        attached = sessions.current()
        return _result(self._core, self._core.submit(self._core.unary(call, timeout=timeout,
                                                       session=attached.id if attached else None)))

    @property
    def address(self) -> str:
        """The gRPC target connected to."""
        return self._core.opts.address.target

    @property
    def session_id(self) -> str | None:
        """The automatic session's id, if one is live."""
        current = self._core.session
        return current.id if current else None

    def motor(self, name: str) -> Motor:
        """The motor called `name` (NotFound if the daemon has none)."""
        _result(self._core, self._core.submit(self._core.check_resource("motor", name)))
        return Motor(name, self._run)

    def base(self, name: str) -> Base:
        """The base called `name` (NotFound if the daemon has none)."""
        _result(self._core, self._core.submit(self._core.check_resource("base", name)))
        return Base(name, self._run)

    def forward(self, path: str, request: Message, response: type[Message], *,
                timeout: float | None = None) -> Message:
        """Make any unary call of the API (`/package.Service/Method`); a monitored one carries this client's
        session like any other. For a primary part forwarding its users' calls to a sub-part."""
        return self._run(calls.forward(path, request, response), timeout)

    def forward_future(self, path: str, request: Message, response: type[Message], *,
                       timeout: float | None = None) -> concurrent.futures.Future[Message]:
        """`forward` without waiting: a future an asyncio program on another loop awaits with
        `asyncio.wrap_future`; cancelling it cancels the call."""
        attached = sessions.current()
        return self._core.submit(self._core.unary(calls.forward(path, request, response), timeout=timeout,
                                                  session=attached.id if attached else None))

    def resource_names(self, *, timeout: float | None = None) -> list[ResourceName]:
        """Every resource the daemon has."""
        return self._run(calls.resource_names(), timeout)

    def stop_all(self, *, timeout: float | None = None) -> None:
        """Stop every resource (RobotService/StopAll)."""
        self._run(calls.stop_all(), timeout)

    def status(self, *, timeout: float | None = None) -> Status:
        """SafetyService/GetStatus."""
        return self._run(calls.get_status(), timeout)

    def sessions(self, *, timeout: float | None = None) -> list[SessionInfo]:
        """The daemon's live sessions (the full id only for this caller's own)."""
        return list(self.status(timeout=timeout).sessions)

    def watch(self) -> EventStream:
        """The daemon's events (first a snapshot); survives a daemon restart with "reconnecting"/"reconnected"."""
        return EventStream(self._core)

    def session(self, session: Session | str) -> AbstractContextManager[Session]:
        """`with client.session(s):` attaches a manual session to the calls made in the block."""
        return sessions.attached(session)

    def keepalive(self) -> None:
        """Tell the liveness check that the program is alive (with liveness_timeout), without a call."""
        self._core.liveness.touch()

    def close(self) -> None:
        """End the session(s) now (SafetyService/CloseSession) and the connection. Idempotent."""
        self._core.close()

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._core.closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r}{', closed' if self.closed else ''})"
