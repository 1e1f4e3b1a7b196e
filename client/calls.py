"""The wire calls: method paths, the monitored set read from the descriptors, and typed request builders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf import struct_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from rover_safety.api import auth_pb2, base_pb2, common_pb2, motor_pb2, robot_pb2, safety_pb2

from .status import (
    BaseProperties,
    MotorProperties,
    PowerState,
    ResourceName,
    Status,
    resource_name_from_proto,
    status_from_proto,
)

T = TypeVar("T")

MOTOR = "viam.component.motor.v1.MotorService"
BASE = "viam.component.base.v1.BaseService"
ROBOT = "viam.robot.v1.RobotService"
SAFETY = "rover_safety.v1.SafetyService"
AUTH = "proto.rpc.v1.AuthService"

WATCH_EVENTS = f"/{SAFETY}/WatchEvents"
# The timed moves, which block until done: no default deadline.
TIMED = frozenset({f"/{MOTOR}/GoFor", f"/{MOTOR}/GoTo", f"/{BASE}/MoveStraight", f"/{BASE}/Spin"})


def monitored_methods(*files: FileDescriptor) -> frozenset[str]:
    """The paths (`/package.Service/Method`) of methods marked `safety_heartbeat_monitored` in `files`."""
    paths = set()
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                if method.GetOptions().Extensions[common_pb2.safety_heartbeat_monitored]:
                    paths.add(f"/{service.full_name}/{method.name}")
    return frozenset(paths)


MONITORED: frozenset[str] = monitored_methods(motor_pb2.DESCRIPTOR, base_pb2.DESCRIPTOR, robot_pb2.DESCRIPTOR,
                                              safety_pb2.DESCRIPTOR)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary call: its path, request, response type and how to turn the response into what the caller gets."""

    path: str
    request: Message
    response: type[Message]
    decode: Callable[[Any], T]
    label: str
    timed: bool = False  # a timed move that blocks until done: no default deadline

    @property
    def monitored(self) -> bool:
        """Whether the call needs a session (`viam-sid`)."""
        return self.path in MONITORED


def _none(_: Message) -> None:
    return None


def _extra(extra: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if not extra:
        return None
    s = struct_pb2.Struct()
    s.update(dict(extra))
    return s


def _call(service: str, method: str, request: Message, response: type[Message], decode: Callable[[Any], T],
          name: str = "") -> Call[T]:
    short = service.rsplit(".", 1)[-1]
    label = f"{short}/{method}" + (f"({name})" if name else "")
    path = f"/{service}/{method}"
    return Call(path, request, response, decode, label, path in TIMED)


def _vector(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> common_pb2.Vector3:
    return common_pb2.Vector3(x=float(x), y=float(y), z=float(z))


# --- motor ---------------------------------------------------------------------------------------------------------

def motor_set_power(name: str, power: float, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """MotorService/SetPower: power -1..1."""
    req = motor_pb2.SetPowerRequest(name=name, power_pct=float(power), extra=_extra(extra))
    return _call(MOTOR, "SetPower", req, motor_pb2.SetPowerResponse, _none, name)


def motor_go_for(name: str, rpm: float, revolutions: float, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """MotorService/GoFor (blocks until the move is done; 0 revolutions: indefinitely)."""
    req = motor_pb2.GoForRequest(name=name, rpm=float(rpm), revolutions=float(revolutions), extra=_extra(extra))
    return _call(MOTOR, "GoFor", req, motor_pb2.GoForResponse, _none, name)


def motor_set_rpm(name: str, rpm: float, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """MotorService/SetRPM."""
    req = motor_pb2.SetRPMRequest(name=name, rpm=float(rpm), extra=_extra(extra))
    return _call(MOTOR, "SetRPM", req, motor_pb2.SetRPMResponse, _none, name)


def motor_go_to(name: str, rpm: float, position_revolutions: float,
                extra: Mapping[str, Any] | None = None) -> Call[None]:
    """MotorService/GoTo (blocks until the move is done)."""
    req = motor_pb2.GoToRequest(name=name, rpm=float(rpm), position_revolutions=float(position_revolutions),
                                extra=_extra(extra))
    return _call(MOTOR, "GoTo", req, motor_pb2.GoToResponse, _none, name)


def motor_stop(name: str, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """MotorService/Stop."""
    return _call(MOTOR, "Stop", motor_pb2.StopRequest(name=name, extra=_extra(extra)), motor_pb2.StopResponse,
                 _none, name)


def motor_is_moving(name: str) -> Call[bool]:
    """MotorService/IsMoving."""
    return _call(MOTOR, "IsMoving", motor_pb2.IsMovingRequest(name=name), motor_pb2.IsMovingResponse,
                 lambda r: bool(r.is_moving), name)


def motor_is_powered(name: str, extra: Mapping[str, Any] | None = None) -> Call[PowerState]:
    """MotorService/IsPowered."""
    return _call(MOTOR, "IsPowered", motor_pb2.IsPoweredRequest(name=name, extra=_extra(extra)),
                 motor_pb2.IsPoweredResponse, lambda r: PowerState(bool(r.is_on), float(r.power_pct)), name)


def motor_get_properties(name: str, extra: Mapping[str, Any] | None = None) -> Call[MotorProperties]:
    """MotorService/GetProperties."""
    return _call(MOTOR, "GetProperties", motor_pb2.GetPropertiesRequest(name=name, extra=_extra(extra)),
                 motor_pb2.GetPropertiesResponse, lambda r: MotorProperties(bool(r.position_reporting)), name)


def motor_get_position(name: str, extra: Mapping[str, Any] | None = None) -> Call[float]:
    """MotorService/GetPosition (revolutions)."""
    return _call(MOTOR, "GetPosition", motor_pb2.GetPositionRequest(name=name, extra=_extra(extra)),
                 motor_pb2.GetPositionResponse, lambda r: float(r.position), name)


# --- base ----------------------------------------------------------------------------------------------------------

def base_set_power(name: str, linear: float, angular: float, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """BaseService/SetPower: linear.y and angular.z, each -1..1 (counter-clockwise positive)."""
    req = base_pb2.SetPowerRequest(name=name, linear=_vector(y=linear), angular=_vector(z=angular),
                                   extra=_extra(extra))
    return _call(BASE, "SetPower", req, base_pb2.SetPowerResponse, _none, name)


def base_set_velocity(name: str, linear_mm_s: float, angular_deg_s: float,
                      extra: Mapping[str, Any] | None = None) -> Call[None]:
    """BaseService/SetVelocity: linear.y in mm/s, angular.z in deg/s."""
    req = base_pb2.SetVelocityRequest(name=name, linear=_vector(y=linear_mm_s), angular=_vector(z=angular_deg_s),
                                      extra=_extra(extra))
    return _call(BASE, "SetVelocity", req, base_pb2.SetVelocityResponse, _none, name)


def base_move_straight(name: str, distance_mm: int, mm_per_sec: float,
                       extra: Mapping[str, Any] | None = None) -> Call[None]:
    """BaseService/MoveStraight (blocks until the move is done)."""
    req = base_pb2.MoveStraightRequest(name=name, distance_mm=int(distance_mm), mm_per_sec=float(mm_per_sec),
                                       extra=_extra(extra))
    return _call(BASE, "MoveStraight", req, base_pb2.MoveStraightResponse, _none, name)


def base_spin(name: str, angle_deg: float, degs_per_sec: float, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """BaseService/Spin (blocks until the move is done)."""
    req = base_pb2.SpinRequest(name=name, angle_deg=float(angle_deg), degs_per_sec=float(degs_per_sec),
                               extra=_extra(extra))
    return _call(BASE, "Spin", req, base_pb2.SpinResponse, _none, name)


def base_stop(name: str, extra: Mapping[str, Any] | None = None) -> Call[None]:
    """BaseService/Stop."""
    return _call(BASE, "Stop", base_pb2.StopRequest(name=name, extra=_extra(extra)), base_pb2.StopResponse,
                 _none, name)


def base_is_moving(name: str) -> Call[bool]:
    """BaseService/IsMoving."""
    return _call(BASE, "IsMoving", base_pb2.IsMovingRequest(name=name), base_pb2.IsMovingResponse,
                 lambda r: bool(r.is_moving), name)


def base_get_properties(name: str, extra: Mapping[str, Any] | None = None) -> Call[BaseProperties]:
    """BaseService/GetProperties."""
    return _call(BASE, "GetProperties", base_pb2.GetPropertiesRequest(name=name, extra=_extra(extra)),
                 base_pb2.GetPropertiesResponse,
                 lambda r: BaseProperties(float(r.width_meters), float(r.turning_radius_meters),
                                          float(r.wheel_circumference_meters)), name)


# --- robot, safety, auth -------------------------------------------------------------------------------------------

def forward(path: str, request: Message, response: type[Message]) -> Call[Message]:
    """Any unary call of the API, its response as it comes (for a primary part forwarding its users' calls)."""
    return Call(path, request, response, _same, path.rsplit("/", 1)[-1], timed=path in TIMED)


def _same(message: Message) -> Message:
    return message


def resource_names() -> Call[list[ResourceName]]:
    """RobotService/ResourceNames."""
    return _call(ROBOT, "ResourceNames", robot_pb2.ResourceNamesRequest(), robot_pb2.ResourceNamesResponse,
                 lambda r: [resource_name_from_proto(n) for n in r.resources])


def stop_all() -> Call[None]:
    """RobotService/StopAll."""
    return _call(ROBOT, "StopAll", robot_pb2.StopAllRequest(), robot_pb2.StopAllResponse, _none)


def start_session(resume: str = "") -> Call[robot_pb2.StartSessionResponse]:
    """RobotService/StartSession (resume: a previous id, or "")."""
    return _call(ROBOT, "StartSession", robot_pb2.StartSessionRequest(resume=resume),
                 robot_pb2.StartSessionResponse, lambda r: r)


def heartbeat_window(reply: robot_pb2.StartSessionResponse, default: float) -> float:
    """The heartbeat window of a StartSession reply, seconds (`default` if the daemon sent none, or zero)."""
    window = reply.heartbeat_window.ToTimedelta().total_seconds() if reply.HasField("heartbeat_window") else 0.0
    return float(window) or default


def heartbeat(session_id: str) -> Call[None]:
    """RobotService/SendSessionHeartbeat."""
    return _call(ROBOT, "SendSessionHeartbeat", robot_pb2.SendSessionHeartbeatRequest(id=session_id),
                 robot_pb2.SendSessionHeartbeatResponse, _none)


def close_session(session_id: str) -> Call[bool]:
    """SafetyService/CloseSession: True if it ended a live session."""
    return _call(SAFETY, "CloseSession", safety_pb2.CloseSessionRequest(id=session_id),
                 safety_pb2.CloseSessionResponse, lambda r: bool(r.success))


def get_status() -> Call[Status]:
    """SafetyService/GetStatus."""
    return _call(SAFETY, "GetStatus", safety_pb2.GetStatusRequest(), safety_pb2.Status, status_from_proto)


def authenticate(key_id: str, api_key: str) -> Call[str]:
    """AuthService/Authenticate with an API key: the access token."""
    req = auth_pb2.AuthenticateRequest(entity=key_id, credentials=auth_pb2.Credentials(type="api-key",
                                                                                      payload=api_key))
    return _call(AUTH, "Authenticate", req, auth_pb2.AuthenticateResponse, lambda r: str(r.access_token))
