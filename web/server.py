"""The operator page's HTTP side: aiohttp on the daemon's serving loop, a client of the daemon's gRPC port.

Nothing here decides what a browser may do: each request becomes the gRPC call it stands for, made with that
browser's bearer token and address (see upstream.py), and the daemon's answer is passed back. What the page adds is
what a browser needs and gRPC clients do not: cookie sessions that hold the token server-side (visits.py), CSRF
protection on every state-changing request, a refusal of Host names other than loopback ones while the page is on
loopback (a DNS-rebinding site could otherwise drive a rover that has no API keys), and the event stream as
server-sent events.

The page never heartbeats on its own: a drive session lives exactly as long as the browser sends heartbeats
(`POST /api/sessions/heartbeat`), so a closed or crashed tab, or a lost network, lets it lapse and the daemon stops
what it drove at the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler
from rover_safety.api import auth_pb2, base_pb2, common_pb2, robot_pb2, safety_pb2, safety_pb2_grpc

from .upstream import CALL_TIMEOUT, CallFailed, Metadata, Upstream, UpstreamSettings, grpc_peer
from .visits import COOKIE, Visit, Visits

log = logging.getLogger("rover-safety")

T = TypeVar("T")
STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024
MAX_WATCHERS = 32  # event streams for all browsers together (each is a gRPC connection of its own)
WATCHERS_PER_VISIT = 4
FIRST_EVENT_TIMEOUT = 5.0
STREAMS_GRACE = 0.25  # seconds the event streams get to relay the daemon's last event when it stops
CSRF_HEADER = "X-CSRF-Token"
VISIT_KEY = web.RequestKey("visit", Visit)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class PageSettings:
    upstream: UpstreamSettings
    ssl_context: ssl.SSLContext | None = None
    loopback_only: bool = True  # the page listens on loopback: refuse other Host names (DNS rebinding)
    auth_enabled: Callable[[], bool] = lambda: False  # the daemon has API keys now (a reload may change it)
    public_stop: Callable[[], bool] = lambda: False


def loopback_host(host_header: str) -> bool:
    """Whether a Host header names this machine's loopback: localhost, 127.x.y.z or [::1], with any port."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in ("localhost", "::1"):
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class OperatorPage:
    """The page's HTTP server; start and stop it on the daemon's serving loop."""

    def __init__(self, settings: PageSettings) -> None:
        self.settings = settings
        self.visits = Visits()
        self._upstream: Upstream | None = None
        self._runner: web.AppRunner | None = None
        self._streams: set[grpc.aio.UnaryStreamCall[Any, Any]] = set()
        self._closing = False
        self.port = 0
        self.heartbeats = 0  # heartbeats forwarded from browsers (the page sends none of its own)
        self.last_heartbeat = 0.0  # time.monotonic() when the last one was forwarded

    @property
    def upstream(self) -> Upstream:
        assert self._upstream is not None, "the page is not started"
        return self._upstream

    async def start(self, sock: socket.socket) -> None:
        self._upstream = Upstream(self.settings.upstream)
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.on_response_prepare.append(self._headers)
        routes = app.router
        routes.add_get("/", self._index)
        routes.add_static("/static/", STATIC)
        routes.add_get("/api/state", self._state)
        routes.add_post("/api/login", self._login)
        routes.add_post("/api/logout", self._logout)
        routes.add_get("/api/events", self._events)
        routes.add_post("/api/stop_all", self._stop_all)
        routes.add_post("/api/sessions", self._start_session)
        routes.add_post("/api/sessions/heartbeat", self._heartbeat)
        routes.add_post("/api/sessions/close", self._close_session)
        routes.add_post("/api/bases/{name}/power", self._base_power)
        routes.add_post("/api/bases/{name}/stop", self._base_stop)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock, ssl_context=self.settings.ssl_context).start()
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """End every event stream, stop serving (at most a second for requests in flight), close the channels.

        The daemon has published "shutting_down" by now: its streams end after relaying it, given a moment."""
        deadline = asyncio.get_running_loop().time() + STREAMS_GRACE
        while self._streams and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._closing = True
        for call in list(self._streams):
            call.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    # --- what every request passes ------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.settings.loopback_only and not loopback_host(request.host):
            return _error(403, "HOST", "the page is served on loopback only: open it as localhost or 127.0.0.1")
        if request.method not in ("GET", "HEAD"):
            if (request.content_length or 0) > MAX_BODY:
                return _error(413, "TOO_LARGE", f"a request body is at most {MAX_BODY} bytes")
            refused = self._check_csrf(request)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except CallFailed as failed:
            return _error(failed.http_status, failed.code, failed.message)

    def _check_csrf(self, request: web.Request) -> web.Response | None:
        """A state-changing request must come from the page itself: the visit's token in a header, JSON, and no
        foreign Origin (a cross-site form or fetch can do none of these)."""
        visit = self.visits.find(request.cookies.get(COOKIE))
        if visit is None:
            return _error(403, "NO_VISIT", "no page session: reload the page")
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), visit.csrf.encode()):
            return _error(403, "CSRF", f"missing or wrong {CSRF_HEADER} header: reload the page")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _error(403, "CSRF", "cross-origin request refused")
        if request.content_type != "application/json":
            return _error(415, "CONTENT_TYPE", "send application/json")
        request[VISIT_KEY] = visit
        return None

    async def _headers(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/") or request.path == "/":
            response.headers["Cache-Control"] = "no-store"

    def _set_cookie(self, response: web.StreamResponse, cookie: str) -> None:
        response.set_cookie(COOKIE, cookie, httponly=True, secure=True, samesite="Strict", path="/")

    @staticmethod
    def _visit(request: web.Request) -> Visit:
        return request[VISIT_KEY]  # set by _check_csrf, which every state-changing request passes

    @staticmethod
    def _peer(request: web.Request) -> str:
        transport = request.transport
        return grpc_peer(transport.get_extra_info("peername") if transport is not None else None)

    async def _call(self, request: web.Request, visit: Visit | None, call: Callable[[Metadata], Awaitable[T]],
                    session: str | None = None) -> T:
        """Make one gRPC call for this browser; its failure as CallFailed (a refused token logs the visit out)."""
        token = visit.token if visit is not None else None
        try:
            return await call(self.upstream.metadata(self._peer(request), token, session))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc, token) from None

    def _failed(self, error: grpc.aio.AioRpcError, token: str | None) -> CallFailed:
        """A gRPC call's failure as CallFailed; a refused token logs its visit out."""
        failed = CallFailed.of(error)
        if failed.code == "UNAUTHENTICATED" and token is not None:
            self.visits.end_token(token)
        return failed

    # --- the page and its state ---------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _state(self, request: web.Request) -> web.Response:
        """Who this browser is to the page (starting a visit if it has none) and what it must do first."""
        cookie = request.cookies.get(COOKIE)
        visit = self.visits.find(cookie)
        fresh = None
        if visit is None:
            fresh, visit = self.visits.new()
        response = web.json_response(self._describe(visit))
        if fresh is not None:
            self._set_cookie(response, fresh)
        return response

    def _describe(self, visit: Visit) -> dict[str, Any]:
        return {"csrf": visit.csrf, "auth_required": self.settings.auth_enabled(), "logged_in": visit.logged_in,
                "key_id": visit.key_id or "", "public_stop": self.settings.public_stop()}

    async def _login(self, request: web.Request) -> web.Response:
        """An API key in, a logged-in visit out: the daemon's Authenticate, from the browser's address (so a failure
        is limited and logged as any failed Authenticate is); the token stays here."""
        if not self.settings.auth_enabled():
            raise CallFailed("NO_KEYS", "this daemon has no API keys: no login is needed", 400)
        body = await _body(request)
        key_id, key = _text(body, "key_id", 64), _text(body, "key", 512)
        reply = await self._call(request, None, lambda md: self.upstream.auth.Authenticate(
            auth_pb2.AuthenticateRequest(entity=key_id, credentials=auth_pb2.Credentials(type="api-key",
                                                                                          payload=key)),
            metadata=md, timeout=CALL_TIMEOUT))
        cookie, visit = self.visits.log_in(request.cookies.get(COOKIE), key_id, reply.access_token)
        response = web.json_response(self._describe(visit))
        self._set_cookie(response, cookie)
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        self.visits.end(request.cookies.get(COOKIE))
        cookie, visit = self.visits.new()
        response = web.json_response(self._describe(visit))
        self._set_cookie(response, cookie)
        return response

    # --- the live view: SafetyService/WatchEvents as server-sent events ------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        visit = self.visits.find(request.cookies.get(COOKIE))
        if visit is None:
            raise CallFailed("NO_VISIT", "no page session: reload the page", 403)
        if visit.watchers >= WATCHERS_PER_VISIT or len(self._streams) >= MAX_WATCHERS:
            raise CallFailed("RESOURCE_EXHAUSTED", "too many event streams open: close other tabs", 429)
        channel = self.upstream.channel()
        call = safety_pb2_grpc.SafetyServiceStub(channel).WatchEvents(
            safety_pb2.WatchEventsRequest(), metadata=self.upstream.metadata(self._peer(request), visit.token))
        self._streams.add(call)
        visit.watchers += 1
        messages = aiter(call)
        try:
            try:  # the first event (a snapshot) before answering, so that a refusal is the HTTP status
                first = await asyncio.wait_for(anext(messages), FIRST_EVENT_TIMEOUT)
            except StopAsyncIteration:
                raise CallFailed("UNAVAILABLE", "the daemon ended the event stream", 503) from None
            except grpc.aio.AioRpcError as exc:
                raise self._failed(exc, visit.token) from None
            except TimeoutError:
                raise CallFailed("DEADLINE_EXCEEDED", "the daemon sent no events", 504) from None
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
            await response.prepare(request)
            await self._relay(response, messages, first, visit)
            return response
        finally:
            visit.watchers -= 1
            self._streams.discard(call)
            call.cancel()
            await channel.close(grace=None)

    async def _relay(self, response: web.StreamResponse, messages: AsyncIterator[safety_pb2.Event],
                     first: safety_pb2.Event, visit: Visit) -> None:
        """Each event as one `data:` line of JSON, until the daemon ends the stream, the browser goes away, or the
        visit ends (then an `ended` event tells the page to ask who it is again)."""
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            try:
                await response.write(_sse(first))
                async for message in messages:
                    if visit.ended or self._closing:
                        await response.write(b"event: ended\ndata: {}\n\n")
                        return
                    await response.write(_sse(message))
            except grpc.aio.AioRpcError as exc:
                failed = self._failed(exc, visit.token)
                data = json.dumps({"code": failed.code, "message": failed.message})
                await response.write(f"event: failed\ndata: {data}\n\n".encode())

    # --- commands: each one gRPC call ----------------------------------------------------------------------

    async def _stop_all(self, request: web.Request) -> web.Response:
        """RobotService/StopAll on the stops channel; before login it works when the daemon has public_stop."""
        await self._call(request, self._visit(request), lambda md: self.upstream.robot_stops.StopAll(
            robot_pb2.StopAllRequest(), metadata=md, timeout=CALL_TIMEOUT))
        return web.json_response({"ok": True})

    async def _start_session(self, request: web.Request) -> web.Response:
        reply = await self._call(request, self._visit(request), lambda md: self.upstream.robot.StartSession(
            robot_pb2.StartSessionRequest(), metadata=md, timeout=CALL_TIMEOUT))
        window = reply.heartbeat_window.seconds + reply.heartbeat_window.nanos / 1e9
        return web.json_response({"id": reply.id, "window_seconds": window})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        """Forward one heartbeat from the browser: the only way a drive session of the page stays alive."""
        session = _text(await _body(request), "id", 64)
        self.heartbeats += 1
        self.last_heartbeat = time.monotonic()
        await self._call(request, self._visit(request), lambda md: self.upstream.robot.SendSessionHeartbeat(
            robot_pb2.SendSessionHeartbeatRequest(id=session), metadata=md, timeout=CALL_TIMEOUT))
        return web.json_response({"ok": True})

    async def _close_session(self, request: web.Request) -> web.Response:
        session = _text(await _body(request), "id", 64)
        reply = await self._call(request, self._visit(request), lambda md: self.upstream.safety.CloseSession(
            safety_pb2.CloseSessionRequest(id=session), metadata=md, timeout=CALL_TIMEOUT))
        return web.json_response({"success": reply.success})

    async def _base_power(self, request: web.Request) -> web.Response:
        """BaseService/SetPower(linear.y, angular.z) in the browser's drive session (a heartbeat of it, too)."""
        name = _name(request)
        body = await _body(request)
        session = _text(body, "session", 64)
        linear, angular = _number(body, "linear"), _number(body, "angular")
        await self._call(request, self._visit(request), lambda md: self.upstream.base.SetPower(
            base_pb2.SetPowerRequest(name=name, linear=common_pb2.Vector3(y=linear),
                                     angular=common_pb2.Vector3(z=angular)),
            metadata=md, timeout=CALL_TIMEOUT), session)
        return web.json_response({"ok": True})

    async def _base_stop(self, request: web.Request) -> web.Response:
        name = _name(request)
        await self._call(request, self._visit(request), lambda md: self.upstream.base_stops.Stop(
            base_pb2.StopRequest(name=name), metadata=md, timeout=CALL_TIMEOUT))
        return web.json_response({"ok": True})


# --- request bodies ---------------------------------------------------------------------------------------------

async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise CallFailed("INVALID_ARGUMENT", "the body is not JSON", 400) from None
    if not isinstance(data, dict):
        raise CallFailed("INVALID_ARGUMENT", "the body is not a JSON object", 400)
    return data


def _text(body: dict[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise CallFailed("INVALID_ARGUMENT", f"{key}: expected a string of 1..{limit} characters", 400)
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CallFailed("INVALID_ARGUMENT", f"{key}: expected a number", 400)
    return float(value)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not name or len(name) > 128:
        raise CallFailed("INVALID_ARGUMENT", "a resource name of 1..128 characters", 400)
    return name


# --- safety.proto's Event and Status as the page's JSON ---------------------------------------------------------

def _sse(event: safety_pb2.Event) -> bytes:
    return b"data: " + json.dumps(event_json(event), separators=(",", ":")).encode() + b"\n\n"


def event_json(event: safety_pb2.Event) -> dict[str, Any]:
    data: dict[str, Any] = {
        "unix_time": event.unix_time, "kind": event.kind, "session_tag": event.session_tag, "peer": event.peer,
        "resources": list(event.resources), "moving": list(event.moving), "detail": event.detail,
        "latency_ms": event.latency_ms if event.HasField("latency_ms") else None,
    }
    if event.HasField("status"):
        data["status"] = status_json(event.status)
    return data


def status_json(status: safety_pb2.Status) -> dict[str, Any]:
    """The status for the page; session ids are left out (the page knows its own, and others' are secrets)."""
    return {
        "sessions": [{"tag": s.tag, "owner": s.owner, "peer": s.peer, "age_seconds": s.age_seconds,
                      "since_heartbeat_seconds": s.since_heartbeat_seconds, "window_seconds": s.window_seconds,
                      "resources": list(s.resources), "mine": s.mine} for s in status.sessions],
        "resources": [{"name": r.name, "kind": r.kind, "moving": r.moving, "power": r.power,
                       "session_tag": r.session_tag, "available": r.available, "part": r.part}
                      for r in status.resources],
        "gpio_up": status.gpio_up,
        "gpio_backend": status.gpio_backend,
        "heartbeat_window_seconds": status.heartbeat_window_seconds,
        "parts": [{"name": p.name, "address": p.address, "state": p.state, "detail": p.detail}
                  for p in status.parts],
        "recent_expiries": [{"unix_time": e.unix_time, "session_tag": e.session_tag, "peer": e.peer,
                             "stopped": list(e.stopped), "moving": list(e.moving),
                             "latency_ms": e.latency_ms if e.HasField("latency_ms") else None,
                             "reason": e.reason} for e in status.recent_expiries],
        "version": status.version,
        "motion_refused": status.motion_refused,
    }
