"""What an operator sees: the sessions, the resources, the GPIO backend, the parts and the last expiries, as plain
data (the gRPC and web layers each render it their own way)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rover_safety.drivers import Motor, Resource
from rover_safety.parts import RemoteResource
from rover_safety.sessions import SessionManager, session_tag

from .events import Event


@dataclass(frozen=True)
class SessionView:
    id: str  # "" unless the viewer owns it
    tag: str
    owner: str
    peer: str
    age: float
    since_heartbeat: float
    window: float
    resources: tuple[str, ...]
    mine: bool


@dataclass(frozen=True)
class ResourceView:
    name: str
    kind: str  # "motor" or "base"
    moving: bool
    power: float
    session_tag: str
    available: bool = True
    part: str = ""


@dataclass(frozen=True)
class PartView:
    name: str
    address: str
    state: str  # "connected", "lost" or "connecting"
    detail: str = ""


@dataclass(frozen=True)
class Overview:
    sessions: tuple[SessionView, ...]
    resources: tuple[ResourceView, ...]
    gpio_up: bool
    gpio_backend: str
    heartbeat_window: float
    expiries: tuple[Event, ...]
    motion_refused: str = ""
    parts: tuple[PartView, ...] = field(default_factory=tuple)


def power_of(resource: Resource | RemoteResource) -> float:
    """A motor's signed power; a base's: that of its motor driven hardest; a sub-part's: as the part said."""
    if isinstance(resource, Motor | RemoteResource):
        return resource.power
    return max((m.power for m in resource.motors), key=abs, default=0.0)


def sessions_view(table: SessionManager, viewer: str) -> tuple[tuple[SessionView, ...], dict[str, str]]:
    """Every live session as `viewer` (an owner) may see it, and each resource's last user's tag."""
    sessions, last_user = table.snapshot()
    now = table.now()
    held: dict[str, list[str]] = {}
    for name, sid in sorted(last_user.items()):
        held.setdefault(sid, []).append(name)
    views = tuple(
        SessionView(
            id=s.id if s.owner == viewer else "",
            tag=s.tag,
            owner=s.owner,
            peer=s.peer,
            age=now - s.started,
            since_heartbeat=now - s.heard,
            window=s.window,
            resources=tuple(held.get(s.id, ())),
            mine=s.owner == viewer,
        )
        for s in sorted(sessions, key=lambda s: s.started)
    )
    return views, {name: session_tag(sid) for name, sid in last_user.items()}


def resources_view(resources: dict[str, Resource | RemoteResource], tags: dict[str, str]) -> tuple[ResourceView, ...]:
    return tuple(
        ResourceView(name, kind_of(r), r.is_moving(), power_of(r), tags.get(name, ""),
                     available=r.available if isinstance(r, RemoteResource) else True,
                     part=r.part.name if isinstance(r, RemoteResource) else "")
        for name, r in sorted(resources.items())
    )


def kind_of(resource: Resource | RemoteResource) -> str:
    if isinstance(resource, RemoteResource):
        return resource.kind
    return "motor" if isinstance(resource, Motor) else "base"
