"""Typed, immutable views of what the daemon answers: resource names, properties, status, sessions and events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Kinds of the synthetic events `watch()` yields around a lost stream (never sent by the daemon).
RECONNECTING = "reconnecting"
RECONNECTED = "reconnected"


@dataclass(frozen=True)
class ResourceName:
    """A resource's full name, e.g. ("rdk", "component", "motor", "left")."""

    namespace: str
    type: str
    subtype: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.type}:{self.subtype}/{self.name}"


@dataclass(frozen=True)
class PowerState:
    """MotorService/IsPowered: whether the motor is on and its power, -1..1."""

    is_on: bool
    power_pct: float


@dataclass(frozen=True)
class MotorProperties:
    """MotorService/GetProperties."""

    position_reporting: bool


@dataclass(frozen=True)
class BaseProperties:
    """BaseService/GetProperties."""

    width_meters: float
    turning_radius_meters: float
    wheel_circumference_meters: float


@dataclass(frozen=True)
class SessionInfo:
    """One live session as the daemon reports it; `id` is "" unless it is the caller's own (`mine`)."""

    id: str
    tag: str
    owner: str
    peer: str
    age_seconds: float
    since_heartbeat_seconds: float
    window_seconds: float
    resources: tuple[str, ...]
    mine: bool


@dataclass(frozen=True)
class ResourceInfo:
    """One resource: kind ("motor" or "base"), whether it moves, the power applied, who drove it last."""

    name: str
    kind: str
    moving: bool
    power: float
    session_tag: str
    available: bool
    part: str


@dataclass(frozen=True)
class PartInfo:
    """A sub-part: its state is "connected", "lost" or "connecting"."""

    name: str
    address: str
    state: str
    detail: str


@dataclass(frozen=True)
class ExpiryInfo:
    """One recent end of a session ("expired" or "closed") and what it stopped."""

    unix_time: float
    session_tag: str
    peer: str
    stopped: tuple[str, ...]
    moving: tuple[str, ...]
    latency_ms: float | None
    reason: str


@dataclass(frozen=True)
class Status:
    """SafetyService/GetStatus: everything an operator's screen shows."""

    sessions: tuple[SessionInfo, ...]
    resources: tuple[ResourceInfo, ...]
    gpio_up: bool
    gpio_backend: str
    heartbeat_window_seconds: float
    parts: tuple[PartInfo, ...]
    recent_expiries: tuple[ExpiryInfo, ...]
    version: str
    motion_refused: str


@dataclass(frozen=True)
class Event:
    """One WatchEvents event (or a synthetic "reconnecting"/"reconnected" one); `status` is the state after it."""

    unix_time: float
    kind: str
    session_tag: str = ""
    peer: str = ""
    resources: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    latency_ms: float | None = None
    detail: str = ""
    status: Status | None = None

    @property
    def synthetic(self) -> bool:
        """True for the events the client makes up around a lost stream."""
        return self.kind in (RECONNECTING, RECONNECTED)


def resource_name_from_proto(m: Any) -> ResourceName:
    """viam.common.v1.ResourceName -> ResourceName."""
    return ResourceName(str(m.namespace), str(m.type), str(m.subtype), str(m.name))


def _optional(m: Any, field: str) -> float | None:
    return float(getattr(m, field)) if m.HasField(field) else None


def status_from_proto(m: Any) -> Status:
    """rover_safety.v1.Status -> Status."""
    return Status(
        sessions=tuple(
            SessionInfo(str(s.id), str(s.tag), str(s.owner), str(s.peer), float(s.age_seconds),
                        float(s.since_heartbeat_seconds), float(s.window_seconds), tuple(s.resources), bool(s.mine))
            for s in m.sessions),
        resources=tuple(
            ResourceInfo(str(r.name), str(r.kind), bool(r.moving), float(r.power), str(r.session_tag),
                         bool(r.available), str(r.part))
            for r in m.resources),
        gpio_up=bool(m.gpio_up),
        gpio_backend=str(m.gpio_backend),
        heartbeat_window_seconds=float(m.heartbeat_window_seconds),
        parts=tuple(PartInfo(str(p.name), str(p.address), str(p.state), str(p.detail)) for p in m.parts),
        recent_expiries=tuple(
            ExpiryInfo(float(e.unix_time), str(e.session_tag), str(e.peer), tuple(e.stopped), tuple(e.moving),
                       _optional(e, "latency_ms"), str(e.reason))
            for e in m.recent_expiries),
        version=str(m.version),
        motion_refused=str(m.motion_refused),
    )


def event_from_proto(m: Any) -> Event:
    """rover_safety.v1.Event -> Event."""
    return Event(
        unix_time=float(m.unix_time), kind=str(m.kind), session_tag=str(m.session_tag), peer=str(m.peer),
        resources=tuple(m.resources), moving=tuple(m.moving), latency_ms=_optional(m, "latency_ms"),
        detail=str(m.detail), status=status_from_proto(m.status) if m.HasField("status") else None)
