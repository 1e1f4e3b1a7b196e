"""The one implementation behind both flavours: a grpc.aio channel on a private event loop, calls with the auth
header and the session id, typed errors, the automatic and manual sessions, the event stream, and closing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any, TypeVar

import grpc
from rover_safety.api import robot_pb2, safety_pb2

from . import calls, exits
from .auth import Metadata, Token
from .calls import Call
from .connection import DEFAULT_WINDOW, ConnectOptions, aio_channel, make_tls, sync_channel
from .errors import (
    ClientError,
    Closed,
    NotFound,
    SessionExpired,
    Unauthenticated,
    Unavailable,
    Unsupported,
    from_status,
)
from .heartbeats import Heartbeater, Liveness
from .loop import LoopThread
from .sessions import AutoSessions, ManualSessions, Session
from .status import RECONNECTED, RECONNECTING, Event, ResourceName, event_from_proto

log = logging.getLogger("rover_safety.client")

T = TypeVar("T")
SESSION_KEY = "viam-sid"
# Codes after which the event stream is not retried: the daemon will answer the same again.
_FINAL_WATCH_CODES = {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED,
                      grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                      grpc.StatusCode.NOT_FOUND}


class Core:
    """A connected client: its loop, channel, token, sessions and heartbeat loop. Facades submit coroutines to it."""

    def __init__(self, opts: ConnectOptions) -> None:
        self.opts = opts
        self.tls = make_tls(opts)  # for a pinned certificate: fetched and checked here, before any call
        self.liveness = Liveness(opts.liveness_timeout)
        self.loop = LoopThread()
        self._token = Token(opts.key_id, opts.api_key)
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}
        self._streams: set[Any] = set()
        self._resources: list[ResourceName] | None = None
        self._close_lock = threading.Lock()
        self.closed = False
        self.heartbeater = Heartbeater(self._heartbeat_channel, Token(opts.key_id, opts.api_key), self.liveness,
                                       self._on_ended, self._on_replaced)
        self.sessions = AutoSessions(self.heartbeater, self._start_session, enabled=not opts.disable_sessions)
        self.manual = ManualSessions(self._start_session, self._send_heartbeat, self._close_session)

    # --- connecting ----------------------------------------------------------------------------------------------

    @classmethod
    def connect(cls, opts: ConnectOptions) -> Core:
        """Connect (blocking): TLS set-up, channel ready, API key exchanged, resource names read."""
        core = cls(opts)
        core.loop.start()
        try:
            core.loop.submit(core._connect()).result()
        except BaseException:
            core.loop.stop(1.0)
            raise
        return core

    async def _connect(self) -> None:
        self._channel = aio_channel(self.opts, self.tls, DEFAULT_WINDOW)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self.opts.connect_timeout)
        except TimeoutError:
            await self._channel.close(None)
            hint = ("if the daemon has a self-signed certificate, pass ca_file= or tls_fingerprint=; if it serves "
                    "plain text on loopback, pass tls=False") if self.tls.credentials else \
                "if the daemon serves TLS, drop tls=False"
            raise Unavailable(f"could not connect to {self.opts.address.target} ({self.tls.describe}) within "
                              f"{self.opts.connect_timeout:g} s: is the daemon running (systemctl status "
                              f"rover-safety), and is the address right? ({hint})") from None
        try:
            if self._token.enabled:
                await self._token.renew_async(self._channel, None, self.opts.connect_timeout)
            try:
                self._resources = await self.unary(calls.resource_names(), timeout=self.opts.connect_timeout)
            except Unsupported:
                self._resources = None
        except BaseException:
            await self._channel.close(None)
            raise

    def _heartbeat_channel(self, window: float) -> grpc.Channel:
        return sync_channel(self.opts, self.tls, window)

    # --- calls -----------------------------------------------------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the client's loop."""
        if self.closed:
            coro.close()
            raise Closed("this client is closed: connect again")
        return self.loop.submit(coro)

    def _method(self, call: Call[Any]) -> Any:
        method = self._methods.get(call.path)
        if method is None:
            assert self._channel is not None
            method = self._channel.unary_unary(call.path, request_serializer=type(call.request).SerializeToString,
                                               response_deserializer=call.response.FromString)
            self._methods[call.path] = method
        return method

    def _error(self, exc: grpc.aio.AioRpcError, what: str) -> ClientError:
        code, details = exc.code(), exc.details() or ""
        if self.closed and code == grpc.StatusCode.CANCELLED:
            return Closed(f"{what}: the client was closed while the call ran", code=code, details=details)
        return from_status(code, details, what)

    async def _invoke(self, call: Call[T], metadata: Metadata, timeout: float | None) -> T:
        """One call with this channel's bearer token (renewed and retried once on UNAUTHENTICATED)."""
        method = self._method(call)
        stale = self._token.value
        try:
            reply = await method(call.request, metadata=metadata + self._token.metadata(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED or not self._token.enabled:
                raise self._error(exc, call.label) from None
            await self._token.renew_async(self._method_channel(), stale, self.opts.connect_timeout)
            try:
                reply = await method(call.request, metadata=metadata + self._token.metadata(), timeout=timeout)
            except grpc.aio.AioRpcError as again:
                raise self._error(again, call.label) from None
        return call.decode(reply)

    def _method_channel(self) -> grpc.aio.Channel:
        assert self._channel is not None
        return self._channel

    def _timeout(self, call: Call[Any], timeout: float | None) -> float | None:
        if timeout is not None:
            return timeout
        return None if call.timed else self.opts.call_timeout

    async def unary(self, call: Call[T], *, timeout: float | None = None, session: str | None = None) -> T:
        """Make `call`; a monitored one carries `session` (a manual session's id) or the automatic session's id.

        On SESSION_EXPIRED the automatic session is forgotten and SessionExpired raised (with retry_on_expiry, the
        call is first retried once with a new session)."""
        if self.closed:
            raise Closed(f"{call.label}: this client is closed: connect again")
        deadline = self._timeout(call, timeout)
        with self.liveness.busy():
            if not call.monitored:
                return await self._invoke(call, (), deadline)
            retry = self.opts.retry_on_expiry and session is None
            while True:
                try:
                    sid = session if session is not None else await self.sessions.ensure(call.label)
                    metadata: Metadata = ((SESSION_KEY, sid),) if sid else ()
                    try:
                        return await self._invoke(call, metadata, deadline)
                    except SessionExpired:
                        if session is None and sid:
                            self.sessions.expired(sid)
                        elif session is not None:
                            self.manual.forget(session)
                        raise
                except SessionExpired:
                    if not retry:
                        raise
                    retry = False
                    log.info("rover-safety client: %s: session expired; retrying once with a new session",
                             call.label)

    async def _start_session(self, resume: str) -> robot_pb2.StartSessionResponse:
        return await self._invoke(calls.start_session(resume), (), self.opts.call_timeout)

    async def _send_heartbeat(self, session_id: str) -> None:
        await self._invoke(calls.heartbeat(session_id), (), self.opts.call_timeout)

    async def _close_session(self, session_id: str) -> bool:
        return await self._invoke(calls.close_session(session_id), (), self.opts.close_timeout)

    def _on_ended(self, session_id: str, why: str) -> None:
        self.sessions.on_ended(session_id, why)

    def _on_replaced(self, old: str, new: str, window: float) -> None:
        self.sessions.on_replaced(old, new, window)

    # --- resources -------------------------------------------------------------------------------------------------

    async def check_resource(self, subtype: str, name: str) -> None:
        """Raise NotFound unless the daemon has a `subtype` ("motor", "base") called `name` (re-reads once)."""
        for fresh in (False, True):
            if fresh or self._resources is None:
                try:
                    self._resources = await self.unary(calls.resource_names())
                except Unsupported:
                    return
            if any(r.subtype == subtype and r.name == name for r in self._resources or ()):
                return
        known = sorted(r.name for r in self._resources or () if r.subtype == subtype)
        raise NotFound(f"the daemon has no {subtype} {name!r} (its {subtype}s: {', '.join(known) or 'none'}); "
                       "check the name and the daemon's config", code=grpc.StatusCode.NOT_FOUND)

    # --- events ----------------------------------------------------------------------------------------------------

    async def watch(self) -> AsyncGenerator[Event, None]:
        """WatchEvents, reconnecting when the stream breaks (a daemon restart): a synthetic "reconnecting" event
        when it breaks, "reconnected" when a new stream answers."""
        assert self._channel is not None
        request = safety_pb2.WatchEventsRequest()
        method = self._channel.unary_stream(calls.WATCH_EVENTS,
                                            request_serializer=safety_pb2.WatchEventsRequest.SerializeToString,
                                            response_deserializer=safety_pb2.Event.FromString)
        lost, backoff, renewed = False, 0.1, False
        while not self.closed:
            stale = self._token.value
            stream = method(request, metadata=self._token.metadata(), wait_for_ready=lost or None)
            self._streams.add(stream)
            why = "the daemon ended the event stream"
            try:
                async for message in stream:
                    if lost:
                        lost = False
                        yield Event(time.time(), RECONNECTED, detail="the event stream is back")
                    backoff, renewed = 0.1, False
                    yield event_from_proto(message)
            except grpc.aio.AioRpcError as exc:
                if self.closed:
                    return
                code = exc.code()
                if code == grpc.StatusCode.UNAUTHENTICATED and self._token.enabled and not renewed:
                    renewed = True
                    try:
                        await self._token.renew_async(self._channel, stale, self.opts.connect_timeout)
                        continue
                    except Unauthenticated:
                        raise
                    except ClientError as renew_error:
                        why = str(renew_error)
                elif code in _FINAL_WATCH_CODES or code == grpc.StatusCode.UNAUTHENTICATED:
                    raise self._error(exc, "SafetyService/WatchEvents") from None
                else:
                    why = f"{code.name}: {exc.details() or ''}"
            except asyncio.CancelledError:
                if self.closed:
                    return
                raise
            finally:
                self._streams.discard(stream)
                stream.cancel()
            if self.closed:
                return
            if not lost:
                lost = True
                yield Event(time.time(), RECONNECTING, detail=why)
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    # --- closing ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """End the automatic session (and manual ones still held) with CloseSession, so the robot stops now."""
        if not self._close_lock.acquire(blocking=False):
            return  # another close runs (or this is a signal handler interrupting one)
        try:
            if self.closed:
                return
            self.closed = True
            self.heartbeater.stop(timeout=max(1.0, DEFAULT_WINDOW))
            if self.loop.running and not self.loop.inside:
                future = self.loop.submit(self._close())
                try:
                    future.result(self.opts.close_timeout * 2 + 1)
                except Exception as exc:
                    log.warning("rover-safety client: closing: %s", exc)
                    future.cancel()
            self.loop.stop(1.0)
            exits.forget(self)
        finally:
            self._close_lock.release()

    async def _close(self) -> None:
        for stream in list(self._streams):
            stream.cancel()
        ids = [sid for sid in (self.sessions.take(),) if sid] + self.manual.take_all()
        for session_id in ids:
            try:
                await self._close_session(session_id)
            except ClientError as exc:
                log.warning("rover-safety client: could not close session %s (%s); it lapses within its window",
                            session_id[:8], exc)
        if self._channel is not None:
            await self._channel.close(None)

    @property
    def session(self) -> Session | None:
        """The automatic session, if one is live."""
        return self.sessions.current
