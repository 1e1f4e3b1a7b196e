"""What every service shares: error mapping, resource lookup, the session of a call, and running a monitored
command off the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from rover_safety.drivers import Motor, Resource, TimedMotion
from rover_safety.parts import RemoteResource
from rover_safety.sessions import Session, SessionManager, session_context

from ..auth import Authenticator
from ..events import EventHub
from ..overview import Overview
from . import forwarding
from .calls import SESSION_METADATA_KEY, Caller, current_caller, peer_host
from .quoting import brief
from .status import Abort, status_of

R = TypeVar("R", bound=Resource)
FATAL_WAIT = 1.0  # seconds a call that hit a bug waits for the daemon to stop everything before it is answered
T = TypeVar("T")

log = logging.getLogger("rover-safety")


class App(Protocol):
    """What the gRPC layer needs from the daemon."""

    sessions: SessionManager
    lock: threading.RLock  # held by every motion command and by a reload: a reload never races a command
    events: EventHub
    auth: Authenticator

    @property
    def commands(self) -> Executor:
        """Where driver commands run, off the event loop (a GPIO write can block)."""

    def resource(self, name: str) -> Resource | RemoteResource | None: ...

    def resources(self) -> dict[str, Resource | RemoteResource]: ...

    def overview(self, viewer: str) -> Overview:
        """What an operator sees, with the full session ids only of `viewer`'s own sessions."""

    def stop_all(self) -> list[str]: ...

    def motion_refused(self) -> str | None:
        """Why motion is refused right now (backend lost, shutting down), or None."""

    def fatal(self, reason: str, exc: BaseException | None = None) -> None: ...

    def refresh_status(self) -> None:
        """Update the service manager's one-line status after something moved or stopped."""


if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext
Handler = Callable[[Any, Any, Context], Awaitable[Any]]


def handler(method: Handler) -> Handler:
    """Map errors to gRPC statuses; an unexpected exception is a bug: report it and let the daemon fail safe."""

    @functools.wraps(method)
    async def wrapped(self: Servicer, request: Any, context: Context) -> Any:
        try:
            if self.SERVICE:
                resource = self.app.resource(getattr(request, "name", ""))
                if isinstance(resource, RemoteResource):  # a sub-part's: the part does the work
                    return await forwarding.forward(self, self.SERVICE, method.__name__, request, context,
                                                    resource)
            return await method(self, request, context)
        except Exception as exc:
            failure = status_of(exc)
            if failure is None:
                # Stop everything before answering (off the loop; a stop that hangs does not hold the answer long)
                fatal = threading.Thread(target=self.app.fatal, args=(f"unexpected error in {method.__name__}", exc),
                                         name="fatal", daemon=True)
                fatal.start()
                await asyncio.get_running_loop().run_in_executor(None, fatal.join, FATAL_WAIT)
                failure = Abort(grpc.StatusCode.INTERNAL,
                                f"internal error in {method.__name__}; the daemon is stopping")
        await context.abort(failure.code, failure.message)

    return wrapped


def caller_of(context: Context) -> Caller:
    """The call's client, as the front door recorded it (or from the peer alone, outside the front door)."""
    caller = current_caller()
    if caller is None:
        peer = context.peer()
        caller = Caller(peer, peer_host(peer))
    return caller


def heartbeat(sessions: SessionManager, session_id: str, context: Context) -> Session:
    """Count a call as a heartbeat of its session, from when it reached the front door; a call whose own deadline
    has passed before it was handled (the client has given up on it) is refused instead of stretching the session."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call waited past its deadline; not counted")
    caller = caller_of(context)
    return sessions.find_by_id(session_id, caller.owner, heard_at=caller.arrived or None)


class Servicer:
    """Base of the services: the daemon, and the helpers every handler uses."""

    SERVICE = ""  # the full name of a service whose calls name a resource, which may be a sub-part's

    def __init__(self, app: App) -> None:
        self.app = app

    async def run(self, call: Callable[[], T]) -> T:
        """Run a driver call on the daemon's command threads: a GPIO write must never block the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.app.commands, call)

    async def stop(self, stop: Callable[[], T]) -> T:
        """A Stop call: run `stop` on a command thread, then refresh the status there too (one hop, not two)."""

        def stop_then_refresh() -> T:
            try:
                return stop()
            finally:
                self.app.refresh_status()

        return await self.run(stop_then_refresh)

    def find(self, name: str, kind: type[R]) -> R:
        resource = self.app.resource(name)
        if not isinstance(resource, kind):
            what = "motor" if kind is Motor else "base"
            raise Abort(grpc.StatusCode.NOT_FOUND, f"no {what} named {brief(name)}")
        return resource

    def session(self, context: Context) -> Session | None:
        """The live session named by the call's `viam-sid` (counted as a heartbeat), None without one."""
        values = [v for k, v in context.invocation_metadata() or () if k == SESSION_METADATA_KEY]
        if len(values) > 1:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"more than one {SESSION_METADATA_KEY} metadata value")
        if not values or not values[0]:
            return None
        return heartbeat(self.app.sessions, str(values[0]), context)

    async def monitored(self, name: str, kind: type[R], context: Context,
                        command: Callable[[R], TimedMotion | None]) -> None:
        """Run a command that moves a resource for the call's session; await a timed motion to its end.

        A timed move ends early when it is stopped (Stop, an expiry, a newer command) or when the call is cancelled
        (the client went away or gave up): then the resource is stopped at once, not a heartbeat window later.
        """
        resource = self.find(name, kind)
        session = self.session(context)  # the heartbeat, on the event loop: never behind a GPIO write

        def run_command() -> TimedMotion | None:
            try:
                with self.app.lock:
                    refused = self.app.motion_refused()
                    if refused:
                        raise Abort(grpc.StatusCode.UNAVAILABLE, f"motion refused: {refused}")
                    with session_context(session):
                        return self.app.sessions.run_monitored(name, lambda: command(resource))
            finally:
                self.app.refresh_status()  # outside the lock that commands and reloads share

        motion = await self.run(run_command)
        if motion is not None:
            await self._until_done(motion, resource)

    async def _until_done(self, motion: TimedMotion, resource: Resource) -> None:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def end() -> None:
            if not ended.done():
                ended.set_result(None)

        def done() -> None:
            loop.call_soon_threadsafe(end)

        motion.add_done_callback(done)
        try:
            await ended
        except asyncio.CancelledError:
            if motion.running:  # abandoned mid-motion: stop it now (on a command thread; the call is over)
                loop.run_in_executor(self.app.commands, resource.stop)
            raise
        finally:
            await self.run(self.app.refresh_status)
        if motion.error is not None:  # the stop at the end of the move failed: the outputs may still be on
            raise motion.error
