"""rover_safety.v1.SafetyService: end a session on purpose, the operator's overview, and the live event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from rover_safety.api import safety_pb2, safety_pb2_grpc

from ..events import Event
from ..overview import Overview
from .base_servicer import Context, Servicer, caller_of, handler

SNAPSHOT_EVERY = 1.0  # seconds: the stream's snapshot while nothing happens (ages and heartbeat gaps move on)
SNAPSHOT_AT_MOST = 0.1  # seconds between two snapshots attached to events


def status_message(view: Overview) -> safety_pb2.Status:
    return safety_pb2.Status(
        sessions=[
            safety_pb2.SessionInfo(id=s.id, tag=s.tag, owner=s.owner, peer=s.peer, age_seconds=s.age,
                                   since_heartbeat_seconds=s.since_heartbeat, window_seconds=s.window,
                                   resources=s.resources, mine=s.mine)
            for s in view.sessions
        ],
        resources=[
            safety_pb2.ResourceInfo(name=r.name, kind=r.kind, moving=r.moving, power=r.power,
                                    session_tag=r.session_tag, available=r.available, part=r.part)
            for r in view.resources
        ],
        gpio_up=view.gpio_up,
        gpio_backend=view.gpio_backend,
        heartbeat_window_seconds=view.heartbeat_window,
        parts=[safety_pb2.PartInfo(name=p.name, address=p.address, state=p.state, detail=p.detail)
               for p in view.parts],
        recent_expiries=[
            safety_pb2.ExpiryInfo(unix_time=e.unix_time, session_tag=e.session_tag, peer=e.peer,
                                  stopped=e.resources, moving=e.moving, latency_ms=e.latency_ms, reason=e.kind)
            for e in view.expiries
        ],
        motion_refused=view.motion_refused,
    )


def event_message(event: Event, status: safety_pb2.Status | None) -> safety_pb2.Event:
    return safety_pb2.Event(unix_time=event.unix_time, kind=event.kind, session_tag=event.session_tag,
                            peer=event.peer, resources=event.resources, moving=event.moving,
                            latency_ms=event.latency_ms, detail=event.detail, status=status)


class SafetyService(Servicer, safety_pb2_grpc.SafetyServiceServicer):
    @handler
    async def CloseSession(self, request: Any, context: Context) -> safety_pb2.CloseSessionResponse:
        owner = caller_of(context).owner
        report = await self.run(lambda: self.app.sessions.end(request.id, owner))
        return safety_pb2.CloseSessionResponse(success=report is not None)

    @handler
    async def GetStatus(self, request: Any, context: Context) -> safety_pb2.Status:
        return status_message(self.app.overview(caller_of(context).owner))

    async def WatchEvents(self, request: Any, context: Context) -> AsyncIterator[safety_pb2.Event]:
        """A snapshot, then every event with the state after it; a snapshot each second while nothing happens."""
        viewer = caller_of(context).owner
        loop = asyncio.get_running_loop()
        with self.app.events.subscribe() as events:  # before the snapshot: nothing after it goes unseen
            yield event_message(Event("snapshot"), status_message(self.app.overview(viewer)))
            last_snapshot = loop.time()
            stale = False  # an event went without the state after it: a snapshot follows within SNAPSHOT_AT_MOST
            while True:
                wait = max(0.0, last_snapshot + SNAPSHOT_AT_MOST - loop.time()) if stale else SNAPSHOT_EVERY
                event = await events.next(wait) or Event("snapshot")
                status = None
                if event.kind in ("snapshot", "lagged") or loop.time() - last_snapshot >= SNAPSHOT_AT_MOST:
                    status, last_snapshot = status_message(self.app.overview(viewer)), loop.time()
                stale = status is None
                yield event_message(event, status)
                if event.kind == "shutting_down":
                    return
