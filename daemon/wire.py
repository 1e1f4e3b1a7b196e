"""The gRPC surface: translates Viam's wire API (and our SafetyService) into session and driver calls, nothing else."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from rover_safety.api import (
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
from rover_safety.drivers import InvalidCommand, Motor, Resource, TimedMotion, Unsupported, WheeledBase
from rover_safety.sessions import NoSession, Session, SessionExpired, SessionManager, TooManySessions, session_context

SESSION_METADATA_KEY = "viam-sid"
R = TypeVar("R", bound=Resource)

log = logging.getLogger("rover-safety")


class App(Protocol):
    """What the gRPC layer needs from the daemon."""

    sessions: SessionManager
    lock: threading.RLock  # held by every motion command and by a reload: a reload never races a command

    def resource(self, name: str) -> Resource | None: ...

    def resources(self) -> dict[str, Resource]: ...

    def stop_all(self) -> list[str]: ...

    def motion_refused(self) -> str | None:
        """Why motion is refused right now (backend lost, shutting down), or None."""

    def fatal(self, reason: str, exc: BaseException | None = None) -> None: ...

    def refresh_status(self) -> None:
        """Update the service manager's one-line status after something moved or stopped."""


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.5:41234` -> `10.0.0.5`; `ipv6:[::1]:5` -> `::1`; anything else unchanged."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]")
    return peer


def owner_of(context: grpc.ServicerContext) -> str:
    """Sessions belong to the client host: a session id is useless from another machine."""
    return peer_host(context.peer())


def handler(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map errors to gRPC statuses; an unexpected exception is a bug: report it and let the daemon fail safe."""

    @functools.wraps(method)
    def wrapped(self: _Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except _Abort as exc:
            failure = exc
        except SessionExpired:
            failure = _Abort(grpc.StatusCode.INVALID_ARGUMENT, "SESSION_EXPIRED")
        except (InvalidCommand, TooManySessions, NoSession, Unsupported) as exc:
            code = {
                InvalidCommand: grpc.StatusCode.INVALID_ARGUMENT,
                TooManySessions: grpc.StatusCode.RESOURCE_EXHAUSTED,
                NoSession: grpc.StatusCode.FAILED_PRECONDITION,
                Unsupported: grpc.StatusCode.FAILED_PRECONDITION,
            }[type(exc)]
            failure = _Abort(code, str(exc))
        except Exception as exc:
            self.app.fatal(f"unexpected error in {method.__name__}", exc)
            failure = _Abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; the daemon is stopping")
        context.abort(failure.code, failure.message)

    return wrapped


class _Servicer:
    def __init__(self, app: App) -> None:
        self.app = app

    @handler
    def DoCommand(self, request: Any, context: grpc.ServicerContext) -> common_pb2.DoCommandResponse:
        raise _Abort(grpc.StatusCode.UNIMPLEMENTED, "DoCommand is not supported by rover-safety")

    def _find(self, name: str, kind: type[R], context: grpc.ServicerContext) -> R:
        resource = self.app.resource(name)
        if not isinstance(resource, kind):
            what = "motor" if kind is Motor else "base"
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"no {what} named {name!r}")
        return resource

    def _session(self, context: grpc.ServicerContext) -> Session | None:
        values = [v for k, v in context.invocation_metadata() if k == SESSION_METADATA_KEY]
        if len(values) > 1:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"more than one {SESSION_METADATA_KEY} metadata value")
        if not values or not values[0]:
            return None
        return self.app.sessions.find_by_id(str(values[0]), owner_of(context))

    def _monitored(
        self, name: str, kind: type[R], context: grpc.ServicerContext, command: Callable[[R], TimedMotion | None]
    ) -> None:
        """Run a command that moves a resource, on behalf of the request's session; wait for timed motion to end."""
        try:
            with self.app.lock:
                resource = self._find(name, kind, context)
                refused = self.app.motion_refused()
                if refused:
                    raise _Abort(grpc.StatusCode.UNAVAILABLE, f"motion refused: {refused}")
                with session_context(self._session(context)):
                    motion = self.app.sessions.run_monitored(name, lambda: command(resource))
        finally:
            self.app.refresh_status()  # outside the lock that commands and reloads share
        if motion is not None:
            # A client that goes away mid-motion must not leave it running until its session lapses. The callback
            # runs on gRPC's polling thread, so the stop goes to a thread of its own; if the call has already ended,
            # add_callback refuses and the stop happens now.
            def stop_if_abandoned() -> None:
                if motion.running:
                    threading.Thread(target=resource.stop, name="abandoned-stop", daemon=True).start()

            if not context.add_callback(stop_if_abandoned):
                stop_if_abandoned()
            try:
                motion.wait()
            finally:
                self.app.refresh_status()
            if motion.error is not None:  # the stop at the end of the move failed: the outputs may still be on
                raise motion.error


class RobotService(_Servicer, robot_pb2_grpc.RobotServiceServicer):
    @handler
    def ResourceNames(self, request: Any, context: grpc.ServicerContext) -> robot_pb2.ResourceNamesResponse:
        names = []
        for name, resource in sorted(self.app.resources().items()):
            subtype = "motor" if isinstance(resource, Motor) else "base"
            names.append(common_pb2.ResourceName(namespace="rdk", type="component", subtype=subtype, name=name))
        return robot_pb2.ResourceNamesResponse(resources=names)

    @handler
    def StartSession(self, request: Any, context: grpc.ServicerContext) -> robot_pb2.StartSessionResponse:
        owner, peer = owner_of(context), context.peer()
        sessions = self.app.sessions
        if request.resume:
            session = sessions.resume(request.resume, owner=owner, peer=peer)
        else:
            session = sessions.start(owner=owner, peer=peer)
        window = Duration()
        window.FromNanoseconds(round(session.window * 1e9))
        return robot_pb2.StartSessionResponse(id=session.id, heartbeat_window=window)

    @handler
    def SendSessionHeartbeat(
        self, request: Any, context: grpc.ServicerContext
    ) -> robot_pb2.SendSessionHeartbeatResponse:
        self.app.sessions.find_by_id(request.id, owner_of(context))
        return robot_pb2.SendSessionHeartbeatResponse()

    @handler
    def GetSessions(self, request: Any, context: grpc.ServicerContext) -> robot_pb2.GetSessionsResponse:
        grpc_peer = robot_pb2.PeerConnectionType.PEER_CONNECTION_TYPE_GRPC
        return robot_pb2.GetSessionsResponse(
            sessions=[
                robot_pb2.Session(
                    id=s.id, peer_connection_info=robot_pb2.PeerConnectionInfo(type=grpc_peer, remote_address=s.peer)
                )
                for s in self.app.sessions.all()
            ]
        )

    @handler
    def StopAll(self, request: Any, context: grpc.ServicerContext) -> robot_pb2.StopAllResponse:
        moving = self.app.stop_all()
        self.app.refresh_status()
        log.info("StopAll from %s: stopped everything (moving: %s)", context.peer(), ", ".join(moving) or "nothing")
        return robot_pb2.StopAllResponse()


class MotorService(_Servicer, motor_pb2_grpc.MotorServiceServicer):
    @handler
    def SetPower(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.SetPowerResponse:
        self._monitored(request.name, Motor, context, lambda m: m.set_power(request.power_pct))
        return motor_pb2.SetPowerResponse()

    @handler
    def GoFor(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.GoForResponse:
        self._monitored(request.name, Motor, context, lambda m: m.go_for(request.rpm, request.revolutions))
        return motor_pb2.GoForResponse()

    @handler
    def GoTo(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.GoToResponse:
        self._monitored(request.name, Motor, context, lambda m: m.go_to())
        return motor_pb2.GoToResponse()

    @handler
    def SetRPM(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.SetRPMResponse:
        self._monitored(request.name, Motor, context, lambda m: m.set_rpm(request.rpm))
        return motor_pb2.SetRPMResponse()

    @handler
    def ResetZeroPosition(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.ResetZeroPositionResponse:
        self._find(request.name, Motor, context).reset_zero_position()
        return motor_pb2.ResetZeroPositionResponse()

    @handler
    def GetPosition(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.GetPositionResponse:
        self._find(request.name, Motor, context)
        return motor_pb2.GetPositionResponse(position=0.0)  # no encoder: as Viam's gpio motor, always 0

    @handler
    def GetProperties(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.GetPropertiesResponse:
        self._find(request.name, Motor, context)
        return motor_pb2.GetPropertiesResponse(position_reporting=False)

    @handler
    def Stop(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.StopResponse:
        self._find(request.name, Motor, context).stop()
        self.app.refresh_status()
        return motor_pb2.StopResponse()

    @handler
    def IsPowered(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.IsPoweredResponse:
        motor = self._find(request.name, Motor, context)
        return motor_pb2.IsPoweredResponse(is_on=motor.is_moving(), power_pct=motor.power)

    @handler
    def IsMoving(self, request: Any, context: grpc.ServicerContext) -> motor_pb2.IsMovingResponse:
        return motor_pb2.IsMovingResponse(is_moving=self._find(request.name, Motor, context).is_moving())


class BaseService(_Servicer, base_pb2_grpc.BaseServiceServicer):
    @handler
    def MoveStraight(self, request: Any, context: grpc.ServicerContext) -> base_pb2.MoveStraightResponse:
        self._monitored(
            request.name, WheeledBase, context, lambda b: b.move_straight(request.distance_mm, request.mm_per_sec)
        )
        return base_pb2.MoveStraightResponse()

    @handler
    def Spin(self, request: Any, context: grpc.ServicerContext) -> base_pb2.SpinResponse:
        self._monitored(request.name, WheeledBase, context, lambda b: b.spin(request.angle_deg, request.degs_per_sec))
        return base_pb2.SpinResponse()

    @handler
    def SetPower(self, request: Any, context: grpc.ServicerContext) -> base_pb2.SetPowerResponse:
        self._monitored(
            request.name, WheeledBase, context, lambda b: b.set_power(request.linear.y, request.angular.z)
        )
        return base_pb2.SetPowerResponse()

    @handler
    def SetVelocity(self, request: Any, context: grpc.ServicerContext) -> base_pb2.SetVelocityResponse:
        self._monitored(
            request.name, WheeledBase, context, lambda b: b.set_velocity(request.linear.y, request.angular.z)
        )
        return base_pb2.SetVelocityResponse()

    @handler
    def Stop(self, request: Any, context: grpc.ServicerContext) -> base_pb2.StopResponse:
        self._find(request.name, WheeledBase, context).stop()
        self.app.refresh_status()
        return base_pb2.StopResponse()

    @handler
    def IsMoving(self, request: Any, context: grpc.ServicerContext) -> base_pb2.IsMovingResponse:
        return base_pb2.IsMovingResponse(is_moving=self._find(request.name, WheeledBase, context).is_moving())

    @handler
    def GetProperties(self, request: Any, context: grpc.ServicerContext) -> base_pb2.GetPropertiesResponse:
        base = self._find(request.name, WheeledBase, context)
        return base_pb2.GetPropertiesResponse(
            width_meters=base.width_m, turning_radius_meters=0.0, wheel_circumference_meters=base.wheel_circumference_m
        )


class SafetyService(_Servicer, safety_pb2_grpc.SafetyServiceServicer):
    @handler
    def CloseSession(self, request: Any, context: grpc.ServicerContext) -> safety_pb2.CloseSessionResponse:
        report = self.app.sessions.end(request.id, owner_of(context))
        return safety_pb2.CloseSessionResponse(success=report is not None)


def add_services(server: grpc.Server, app: App) -> None:
    robot_pb2_grpc.add_RobotServiceServicer_to_server(RobotService(app), server)
    motor_pb2_grpc.add_MotorServiceServicer_to_server(MotorService(app), server)
    base_pb2_grpc.add_BaseServiceServicer_to_server(BaseService(app), server)
    safety_pb2_grpc.add_SafetyServiceServicer_to_server(SafetyService(app), server)
