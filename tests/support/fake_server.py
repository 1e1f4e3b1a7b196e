"""A small in-process gRPC server for the client's tests: sessions, a few motor and base methods, SafetyService,
AuthService; it records every call (arrival time on `time.monotonic()`, metadata, request) and answers failures on
demand (SESSION_EXPIRED, UNAVAILABLE, UNAUTHENTICATED, ...), in plain text or TLS."""

from __future__ import annotations

import datetime
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from rover_safety.api import (
    auth_pb2,
    auth_pb2_grpc,
    base_pb2,
    base_pb2_grpc,
    common_pb2,
    motor_pb2,
    motor_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
    safety_pb2,
    safety_pb2_grpc,
)

SESSION_EXPIRED = "SESSION_EXPIRED"
Context = grpc.ServicerContext

# Let clients ping as often as they like (the client's keepalive is window/2).
PERMISSIVE_KEEPALIVE: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10),
    ("grpc.http2.min_ping_interval_without_data_ms", 10),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass(frozen=True)
class Received:
    """One call as the server saw it."""

    method: str  # e.g. "RobotService/SendSessionHeartbeat"
    at: float  # time.monotonic() on arrival
    metadata: tuple[tuple[str, str], ...]
    request: Message
    peer: str

    def values(self, key: str) -> list[str]:
        """Every value of metadata `key`."""
        return [v for k, v in self.metadata if k == key]

    @property
    def sid(self) -> str | None:
        """The `viam-sid` sent, if any."""
        found = self.values("viam-sid")
        return found[0] if found else None

    @property
    def authorization(self) -> list[str]:
        """The `authorization` entries sent."""
        return self.values("authorization")

    @property
    def heartbeat_id(self) -> str:
        """The id a SendSessionHeartbeat named."""
        return str(getattr(self.request, "id", ""))


@dataclass
class FakeSession:
    """A session the fake server holds."""

    id: str
    owner: str
    window: float
    last: float
    ended: str = ""  # "", "expired", "closed"
    resources: set[str] = field(default_factory=set)


@dataclass
class _Failure:
    code: grpc.StatusCode
    details: str
    times: int


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class FakeServer:
    """The server; `start()` it (or use `with`), read `received`, and steer it with fail/expire/revoke_tokens."""

    def __init__(self, *, window: float = 0.2, api_keys: dict[str, str] | None = None,
                 tls: tuple[bytes, bytes] | None = None, port: int = 0, sessions: bool = True,
                 motors: tuple[str, ...] = ("left", "right"), bases: tuple[str, ...] = ("base",),
                 options: list[tuple[str, int]] | None = None) -> None:
        self.window = window
        self.api_keys = api_keys
        self.sessions_enabled = sessions
        self.motors = {name: 0.0 for name in motors}
        self.bases = {name: 0.0 for name in bases}
        self.received: list[Received] = []
        self.sessions: dict[str, FakeSession] = {}
        self.tokens: dict[str, str] = {}  # token -> key id
        self._tls = tls
        self._lock = threading.RLock()
        self._failures: dict[str, list[_Failure]] = {}
        self._delays: dict[str, float] = {}
        self._watchers: list[queue.Queue[safety_pb2.Event | None]] = []
        self._stopping = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="fake-server"),
                                   options=PERMISSIVE_KEEPALIVE if options is None else options)
        robot_pb2_grpc.add_RobotServiceServicer_to_server(_Robot(self), self._server)
        motor_pb2_grpc.add_MotorServiceServicer_to_server(_Motor(self), self._server)
        base_pb2_grpc.add_BaseServiceServicer_to_server(_Base(self), self._server)
        safety_pb2_grpc.add_SafetyServiceServicer_to_server(_Safety(self), self._server)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(_Auth(self), self._server)
        bind = f"127.0.0.1:{port}"
        if tls is None:
            self.port = self._server.add_insecure_port(bind)
        else:
            cert_pem, key_pem = tls
            self.port = self._server.add_secure_port(bind, grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        if not self.port:
            raise RuntimeError(f"fake server: could not bind {bind}")

    @property
    def address(self) -> str:
        """host:port to connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (ends event streams)."""
        self._stopping.set()
        with self._lock:
            for q in self._watchers:
                q.put(None)
        self._server.stop(grace).wait(5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- steering ------------------------------------------------------------------------------------------------

    def fail(self, method: str, code: grpc.StatusCode, details: str = "", times: int = 1) -> None:
        """The next `times` calls of `method` (e.g. "RobotService/SendSessionHeartbeat") answer `code`."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(code, details or code.name.lower(), times))

    def delay(self, method: str, seconds: float) -> None:
        """Make `method` take `seconds` before answering (a slow command)."""
        with self._lock:
            self._delays[method] = seconds

    def expire(self, session_id: str) -> None:
        """End a session as if its window had lapsed."""
        with self._lock:
            self.sessions[session_id].ended = "expired"

    def revoke_tokens(self) -> None:
        """Forget every token (as a restarted daemon does): the next calls get UNAUTHENTICATED."""
        with self._lock:
            self.tokens.clear()

    def push_event(self, kind: str, **fields: Any) -> None:
        """Send an event to every WatchEvents stream."""
        event = safety_pb2.Event(unix_time=time.time(), kind=kind, **fields)
        with self._lock:
            for q in self._watchers:
                q.put(event)

    # --- reading -------------------------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Received]:
        """The calls received (of `method`, if given), in order."""
        with self._lock:
            return [r for r in self.received if method is None or r.method == method]

    def heartbeats(self, session_id: str | None = None) -> list[Received]:
        """The heartbeats received (for `session_id`, if given)."""
        return [r for r in self.calls("RobotService/SendSessionHeartbeat")
                if session_id is None or r.heartbeat_id == session_id]

    def session_ids(self) -> list[str]:
        """The ids of the sessions started, in order."""
        with self._lock:
            return list(self.sessions)

    def watchers(self) -> int:
        """How many WatchEvents streams are open."""
        with self._lock:
            return len(self._watchers)

    # --- serving -------------------------------------------------------------------------------------------------

    def enter(self, context: Context, method: str, request: Message, monitored: bool = False) -> str:
        """Record the call, apply injected failures and auth, check the session; the caller's owner name."""
        now = time.monotonic()
        metadata = tuple((str(k), str(v)) for k, v in context.invocation_metadata())
        record = Received(method, now, metadata, request, context.peer())
        with self._lock:
            self.received.append(record)
        try:
            owner = self._gate(record, monitored)
        except _Abort as abort:
            context.abort(abort.code, abort.details)
        delay = self._delays.get(method, 0.0)
        if delay:
            self.sleep(context, delay)
        return owner

    def _gate(self, record: Received, monitored: bool) -> str:
        with self._lock:
            queue_ = self._failures.get(record.method)
            if queue_:
                failure = queue_[0]
                failure.times -= 1
                if failure.times <= 0:
                    queue_.pop(0)
                raise _Abort(failure.code, failure.details)
            owner = record.peer.rsplit(":", 1)[0]
            if self.api_keys is not None:
                if record.method == "AuthService/Authenticate":
                    if record.authorization:
                        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                                     "already authenticated; cannot re-authenticate")
                    return ""
                if len(record.authorization) != 1 or not record.authorization[0].startswith("Bearer "):
                    raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "authentication required")
                key_id = self.tokens.get(record.authorization[0].removeprefix("Bearer "))
                if key_id is None:
                    raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
                owner = key_id
            if monitored and self.sessions_enabled:
                sids = record.values("viam-sid")
                if not sids:
                    raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                                 "motion needs a session: send viam-sid (RobotService/StartSession)")
                session = self.live(sids[0], owner)
                if session is None:
                    raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, SESSION_EXPIRED)
                session.last = record.at
                name = getattr(record.request, "name", "")
                session.resources.add(name)
            return owner

    def live(self, session_id: str, owner: str) -> FakeSession | None:
        """The session if it is live and `owner`'s (expires it lazily when its window has lapsed)."""
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None or session.ended or session.owner != owner:
                return None
            if time.monotonic() - session.last > session.window:
                session.ended = "expired"
                return None
            return session

    def sleep(self, context: Context, seconds: float) -> None:
        """Sleep like a timed move: cut short when the client cancels or the server stops."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and context.is_active() and not self._stopping.is_set():
            time.sleep(min(0.005, max(0.0, end - time.monotonic())))

    def status(self, owner: str) -> safety_pb2.Status:
        """The Status as `owner` sees it."""
        with self._lock:
            sessions = []
            now = time.monotonic()
            for s in self.sessions.values():
                if s.ended or now - s.last > s.window:
                    continue
                mine = s.owner == owner
                sessions.append(safety_pb2.SessionInfo(
                    id=s.id if mine else "", tag=s.id[:8], owner=s.owner, peer="ipv4:" + s.owner,
                    age_seconds=0.0, since_heartbeat_seconds=now - s.last, window_seconds=s.window,
                    resources=sorted(s.resources), mine=mine))
            resources = [safety_pb2.ResourceInfo(name=n, kind="motor", moving=p != 0, power=p, available=True)
                         for n, p in self.motors.items()]
            resources += [safety_pb2.ResourceInfo(name=n, kind="base", moving=p != 0, power=p, available=True)
                          for n, p in self.bases.items()]
            return safety_pb2.Status(sessions=sessions, resources=resources, gpio_up=True, gpio_backend="mock",
                                     heartbeat_window_seconds=self.window, version="fake",
                                     recent_expiries=[safety_pb2.ExpiryInfo(unix_time=1.0, session_tag="abcd",
                                                                            stopped=["left"], reason="expired",
                                                                            latency_ms=0.5)])

    def watch(self, context: Context, owner: str) -> Iterator[safety_pb2.Event]:
        """A WatchEvents stream: a snapshot, then pushed events, until the server stops."""
        q: queue.Queue[safety_pb2.Event | None] = queue.Queue()
        with self._lock:
            self._watchers.append(q)
        try:
            yield safety_pb2.Event(unix_time=time.time(), kind="snapshot", status=self.status(owner))
            while context.is_active() and not self._stopping.is_set():
                try:
                    event = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if event is None:
                    return
                yield event
        finally:
            with self._lock:
                self._watchers.remove(q)

    def _motor(self, context: Context, name: str) -> None:
        if name not in self.motors:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no motor {name!r}")

    def _base(self, context: Context, name: str) -> None:
        if name not in self.bases:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no base {name!r}")


class _Robot(robot_pb2_grpc.RobotServiceServicer):
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def ResourceNames(self, request: robot_pb2.ResourceNamesRequest, context: Context) -> Any:
        self.s.enter(context, "RobotService/ResourceNames", request)
        names = [common_pb2.ResourceName(namespace="rdk", type="component", subtype="motor", name=n)
                 for n in self.s.motors]
        names += [common_pb2.ResourceName(namespace="rdk", type="component", subtype="base", name=n)
                  for n in self.s.bases]
        return robot_pb2.ResourceNamesResponse(resources=names)

    def StartSession(self, request: robot_pb2.StartSessionRequest, context: Context) -> Any:
        owner = self.s.enter(context, "RobotService/StartSession", request)
        if not self.s.sessions_enabled:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "method StartSession not implemented")
        window = duration_pb2.Duration()
        window.FromTimedelta(datetime.timedelta(seconds=self.s.window))
        with self.s._lock:
            if request.resume:
                session = self.s.live(request.resume, owner)
                if session is not None:
                    session.last = time.monotonic()
                    return robot_pb2.StartSessionResponse(id=session.id, heartbeat_window=window)
            sid = str(uuid.uuid4())
            self.s.sessions[sid] = FakeSession(sid, owner, self.s.window, time.monotonic())
        return robot_pb2.StartSessionResponse(id=sid, heartbeat_window=window)

    def SendSessionHeartbeat(self, request: robot_pb2.SendSessionHeartbeatRequest, context: Context) -> Any:
        owner = self.s.enter(context, "RobotService/SendSessionHeartbeat", request)
        with self.s._lock:
            session = self.s.live(request.id, owner)
            if session is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, SESSION_EXPIRED)
            session.last = time.monotonic()
        return robot_pb2.SendSessionHeartbeatResponse()

    def GetSessions(self, request: robot_pb2.GetSessionsRequest, context: Context) -> Any:
        self.s.enter(context, "RobotService/GetSessions", request)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    def StopAll(self, request: robot_pb2.StopAllRequest, context: Context) -> Any:
        self.s.enter(context, "RobotService/StopAll", request)
        for name in self.s.motors:
            self.s.motors[name] = 0.0
        return robot_pb2.StopAllResponse()


class _Motor(motor_pb2_grpc.MotorServiceServicer):
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def _enter(self, context: Context, method: str, request: Any, monitored: bool = False) -> None:
        self.s.enter(context, f"MotorService/{method}", request, monitored)
        self.s._motor(context, request.name)

    def SetPower(self, request: motor_pb2.SetPowerRequest, context: Context) -> Any:
        self._enter(context, "SetPower", request, True)
        if abs(request.power_pct) > 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"power_pct {request.power_pct} is out of range -1..1")
        self.s.motors[request.name] = request.power_pct
        return motor_pb2.SetPowerResponse()

    def GoFor(self, request: motor_pb2.GoForRequest, context: Context) -> Any:
        self._enter(context, "GoFor", request, True)
        if request.rpm == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rpm must not be 0")
        self.s.motors[request.name] = 0.5
        self.s.sleep(context, abs(request.revolutions / request.rpm) * 60)
        self.s.motors[request.name] = 0.0
        return motor_pb2.GoForResponse()

    def GoTo(self, request: motor_pb2.GoToRequest, context: Context) -> Any:
        self._enter(context, "GoTo", request, True)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "GoTo needs an encoder: this motor has none")

    def SetRPM(self, request: motor_pb2.SetRPMRequest, context: Context) -> Any:
        self._enter(context, "SetRPM", request, True)
        self.s.motors[request.name] = request.rpm / 120
        return motor_pb2.SetRPMResponse()

    def Stop(self, request: motor_pb2.StopRequest, context: Context) -> Any:
        self._enter(context, "Stop", request)
        self.s.motors[request.name] = 0.0
        return motor_pb2.StopResponse()

    def IsMoving(self, request: motor_pb2.IsMovingRequest, context: Context) -> Any:
        self._enter(context, "IsMoving", request)
        return motor_pb2.IsMovingResponse(is_moving=self.s.motors[request.name] != 0)

    def IsPowered(self, request: motor_pb2.IsPoweredRequest, context: Context) -> Any:
        self._enter(context, "IsPowered", request)
        power = self.s.motors[request.name]
        return motor_pb2.IsPoweredResponse(is_on=power != 0, power_pct=power)

    def GetProperties(self, request: motor_pb2.GetPropertiesRequest, context: Context) -> Any:
        self._enter(context, "GetProperties", request)
        return motor_pb2.GetPropertiesResponse(position_reporting=False)

    def GetPosition(self, request: motor_pb2.GetPositionRequest, context: Context) -> Any:
        self._enter(context, "GetPosition", request)
        return motor_pb2.GetPositionResponse(position=1.25)

    def ResetZeroPosition(self, request: motor_pb2.ResetZeroPositionRequest, context: Context) -> Any:
        self._enter(context, "ResetZeroPosition", request)
        return motor_pb2.ResetZeroPositionResponse()

    def DoCommand(self, request: common_pb2.DoCommandRequest, context: Context) -> Any:
        self._enter(context, "DoCommand", request)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "DoCommand is not implemented")


class _Base(base_pb2_grpc.BaseServiceServicer):
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def _enter(self, context: Context, method: str, request: Any, monitored: bool = False) -> None:
        self.s.enter(context, f"BaseService/{method}", request, monitored)
        self.s._base(context, request.name)

    def MoveStraight(self, request: base_pb2.MoveStraightRequest, context: Context) -> Any:
        self._enter(context, "MoveStraight", request, True)
        self.s.sleep(context, abs(request.distance_mm / request.mm_per_sec) if request.mm_per_sec else 0)
        return base_pb2.MoveStraightResponse()

    def Spin(self, request: base_pb2.SpinRequest, context: Context) -> Any:
        self._enter(context, "Spin", request, True)
        self.s.sleep(context, abs(request.angle_deg / request.degs_per_sec) if request.degs_per_sec else 0)
        return base_pb2.SpinResponse()

    def SetPower(self, request: base_pb2.SetPowerRequest, context: Context) -> Any:
        self._enter(context, "SetPower", request, True)
        self.s.bases[request.name] = request.linear.y
        return base_pb2.SetPowerResponse()

    def SetVelocity(self, request: base_pb2.SetVelocityRequest, context: Context) -> Any:
        self._enter(context, "SetVelocity", request, True)
        self.s.bases[request.name] = request.linear.y / 1000
        return base_pb2.SetVelocityResponse()

    def Stop(self, request: base_pb2.StopRequest, context: Context) -> Any:
        self._enter(context, "Stop", request)
        self.s.bases[request.name] = 0.0
        return base_pb2.StopResponse()

    def IsMoving(self, request: base_pb2.IsMovingRequest, context: Context) -> Any:
        self._enter(context, "IsMoving", request)
        return base_pb2.IsMovingResponse(is_moving=self.s.bases[request.name] != 0)

    def GetProperties(self, request: base_pb2.GetPropertiesRequest, context: Context) -> Any:
        self._enter(context, "GetProperties", request)
        return base_pb2.GetPropertiesResponse(width_meters=0.26, turning_radius_meters=0.0,
                                              wheel_circumference_meters=0.22)

    def DoCommand(self, request: common_pb2.DoCommandRequest, context: Context) -> Any:
        self._enter(context, "DoCommand", request)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "DoCommand is not implemented")


class _Safety(safety_pb2_grpc.SafetyServiceServicer):
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def CloseSession(self, request: safety_pb2.CloseSessionRequest, context: Context) -> Any:
        owner = self.s.enter(context, "SafetyService/CloseSession", request)
        with self.s._lock:
            session = self.s.live(request.id, owner)
            if session is None:
                return safety_pb2.CloseSessionResponse(success=False)
            session.ended = "closed"
        return safety_pb2.CloseSessionResponse(success=True)

    def GetStatus(self, request: safety_pb2.GetStatusRequest, context: Context) -> Any:
        owner = self.s.enter(context, "SafetyService/GetStatus", request)
        return self.s.status(owner)

    def WatchEvents(self, request: safety_pb2.WatchEventsRequest, context: Context) -> Any:
        owner = self.s.enter(context, "SafetyService/WatchEvents", request)
        yield from self.s.watch(context, owner)


class _Auth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, server: FakeServer) -> None:
        self.s = server

    def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Context) -> Any:
        self.s.enter(context, "AuthService/Authenticate", request)
        keys = self.s.api_keys or {}
        if request.credentials.type != "api-key" or keys.get(request.entity) != request.credentials.payload:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
        token = f"token-{uuid.uuid4().hex[:12]}"
        with self.s._lock:
            self.s.tokens[token] = request.entity
        return auth_pb2.AuthenticateResponse(access_token=token)
