"""The asyncio client: `await connect(...)` or `async with connect(...) as client:`; the same core as the blocking
client, on its own event-loop thread, so a busy or blocked event loop of the program cannot delay heartbeats (use
liveness_timeout if a stuck program should stop the robot)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Generator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from . import calls, exits, sessions
from .calls import Call
from .core import Core
from .errors import Closed
from .profile import ClientProfile
from .resources import AsyncBase, AsyncMotor
from .sessions import Session
from .status import Event, ResourceName, SessionInfo, Status
from .sync import build_options

T = TypeVar("T")


async def _result(core: Core, future: concurrent.futures.Future[T]) -> T:
    """Await a call on the core's loop; one cut off by close() raises Closed, not CancelledError."""
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if core.closed and task is not None and not task.cancelling():
            raise Closed("the client was closed while the call ran") from None
        raise


def connect(address: str | None = None, *, api_key: str | None = None, key_id: str | None = None,
            tls: bool | None = None, ca_file: str | None = None, tls_fingerprint: str | None = None,
            server_name: str | None = None, disable_sessions: bool = False, retry_on_expiry: bool = False,
            liveness_timeout: float | None = None, connect_timeout: float = 5.0, call_timeout: float | None = 10.0,
            close_timeout: float = 2.0, keepalive_time: float | None = None, handle_sigterm: bool = True,
            profile: ClientProfile | None = None) -> Connecting:
    """Connect to a daemon from asyncio; the arguments are those of `rover_safety.client.connect`."""
    opts = build_options(address, api_key=api_key, key_id=key_id, tls=tls, ca_file=ca_file,
                         tls_fingerprint=tls_fingerprint, server_name=server_name, profile=profile,
                         disable_sessions=disable_sessions, retry_on_expiry=retry_on_expiry,
                         liveness_timeout=liveness_timeout, connect_timeout=connect_timeout,
                         call_timeout=call_timeout, close_timeout=close_timeout, keepalive_time=keepalive_time,
                         handle_sigterm=handle_sigterm)
    return Connecting(opts)


class Connecting:
    """A connection under way: await it for the client, or use it as `async with`."""

    def __init__(self, opts: Any) -> None:
        self._opts = opts
        self._client: AsyncClient | None = None

    async def _connect(self) -> AsyncClient:
        core = await asyncio.to_thread(Core.connect, self._opts)  # TLS pinning and the handshake block
        exits.register(core, self._opts.handle_sigterm)  # from the program's thread: SIGTERM only from main
        return AsyncClient(core)

    def __await__(self) -> Generator[Any, None, AsyncClient]:
        return self._connect().__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._connect()
        return self._client

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.close()


class AsyncSessionManager:
    """Manual session management for asyncio programs (see `SessionManager`)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def start(self, window: float | None = None) -> Session:
        """A new session (the daemon's window; `window`, if given, must match it or Refused is raised)."""
        return await _result(self._core, self._core.submit(self._core.manual.start(window)))

    async def heartbeat(self, session: Session | str) -> None:
        """Keep `session` alive for another window; SessionExpired if it is over."""
        self._core.liveness.touch()
        await _result(self._core, self._core.submit(self._core.manual.heartbeat(session)))

    def all(self) -> list[Session]:
        """The sessions started here and not closed or found expired."""
        return self._core.manual.all()

    async def close(self, session: Session | str) -> bool:
        """End `session` now; True if it was live."""
        return await _result(self._core, self._core.submit(self._core.manual.close(session)))


class AsyncEventStream(AsyncIterator[Event]):
    """The daemon's events for `async for`; `aclose()` ends the stream."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._events = core.watch()
        self._done = False

    async def _next(self) -> Event | None:
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            return None

    async def __anext__(self) -> Event:
        if self._done or self._core.closed:
            raise StopAsyncIteration
        try:
            event = await _result(self._core, self._core.submit(self._next()))
        except Exception:  # Closed included
            if self._core.closed:
                self._done = True
                raise StopAsyncIteration from None
            raise
        if event is None:
            self._done = True
            raise StopAsyncIteration
        return event

    async def _aclose(self) -> None:
        await self._events.aclose()

    async def aclose(self) -> None:
        """End the stream."""
        if self._done:
            return
        self._done = True
        if not self._core.closed:
            try:
                await _result(self._core, self._core.submit(self._aclose()))
            except Exception:
                return


class AsyncClient:
    """A connected client for asyncio programs; `async with` closes the session at once on the way out."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.session_manager = AsyncSessionManager(core)

    async def _run(self, call: Call[T], timeout: float | None = None) -> T:
        attached = sessions.current()
        future = self._core.submit(self._core.unary(call, timeout=timeout,
                                                    session=attached.id if attached else None))
        return await _result(self._core, future)

    @property
    def address(self) -> str:
        """The gRPC target connected to."""
        return self._core.opts.address.target

    @property
    def session_id(self) -> str | None:
        """The automatic session's id, if one is live."""
        current = self._core.session
        return current.id if current else None

    async def motor(self, name: str) -> AsyncMotor:
        """The motor called `name` (NotFound if the daemon has none)."""
        await _result(self._core, self._core.submit(self._core.check_resource("motor", name)))
        return AsyncMotor(name, self._run)

    async def base(self, name: str) -> AsyncBase:
        """The base called `name` (NotFound if the daemon has none)."""
        await _result(self._core, self._core.submit(self._core.check_resource("base", name)))
        return AsyncBase(name, self._run)

    async def resource_names(self, *, timeout: float | None = None) -> list[ResourceName]:
        """Every resource the daemon has."""
        return await self._run(calls.resource_names(), timeout)

    async def stop_all(self, *, timeout: float | None = None) -> None:
        """Stop every resource (RobotService/StopAll)."""
        await self._run(calls.stop_all(), timeout)

    async def status(self, *, timeout: float | None = None) -> Status:
        """SafetyService/GetStatus."""
        return await self._run(calls.get_status(), timeout)

    async def sessions(self, *, timeout: float | None = None) -> list[SessionInfo]:
        """The daemon's live sessions (the full id only for this caller's own)."""
        return list((await self.status(timeout=timeout)).sessions)

    def watch(self) -> AsyncEventStream:
        """The daemon's events; survives a daemon restart with "reconnecting"/"reconnected" events."""
        return AsyncEventStream(self._core)

    def session(self, session: Session | str) -> AbstractContextManager[Session]:
        """`with client.session(s):` attaches a manual session to the calls made in the block (this task)."""
        return sessions.attached(session)

    def keepalive(self) -> None:
        """Tell the liveness check that the program is alive, without a call."""
        self._core.liveness.touch()

    async def close(self) -> None:
        """End the session(s) now (SafetyService/CloseSession) and the connection. Idempotent."""
        await asyncio.to_thread(self._core.close)
        exits.forget(self._core)  # again from this thread: from the main thread, it can restore SIGTERM

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._core.closed

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.address!r}{', closed' if self.closed else ''})"
