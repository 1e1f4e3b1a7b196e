"""viam.robot.v1.RobotService: resource names, sessions and heartbeats, stop everything."""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.duration_pb2 import Duration
from rover_safety.api import common_pb2, robot_pb2, robot_pb2_grpc
from rover_safety.drivers import Motor
from rover_safety.parts import RemoteResource

from .base_servicer import Context, Servicer, caller_of, handler, heartbeat

log = logging.getLogger("rover-safety")


class RobotService(Servicer, robot_pb2_grpc.RobotServiceServicer):
    @handler
    async def ResourceNames(self, request: Any, context: Context) -> robot_pb2.ResourceNamesResponse:
        names = []
        for name, resource in sorted(self.app.resources().items()):
            subtype = resource.kind if isinstance(resource, RemoteResource) else \
                "motor" if isinstance(resource, Motor) else "base"
            names.append(common_pb2.ResourceName(namespace="rdk", type="component", subtype=subtype, name=name))
        return robot_pb2.ResourceNamesResponse(resources=names)

    @handler
    async def StartSession(self, request: Any, context: Context) -> robot_pb2.StartSessionResponse:
        caller = caller_of(context)
        sessions = self.app.sessions
        if request.resume:
            session = sessions.resume(request.resume, owner=caller.owner, peer=caller.peer)
        else:
            session = sessions.start(owner=caller.owner, peer=caller.peer)
        window = Duration()
        window.FromNanoseconds(round(session.window * 1e9))
        return robot_pb2.StartSessionResponse(id=session.id, heartbeat_window=window)

    @handler
    async def SendSessionHeartbeat(
        self, request: Any, context: Context
    ) -> robot_pb2.SendSessionHeartbeatResponse:
        heartbeat(self.app.sessions, request.id, context)
        return robot_pb2.SendSessionHeartbeatResponse()

    @handler
    async def GetSessions(self, request: Any, context: Context) -> robot_pb2.GetSessionsResponse:
        """The caller's own live sessions: an id is a secret (whoever has it can heartbeat or close the session)."""
        owner = caller_of(context).owner
        grpc_peer = robot_pb2.PeerConnectionType.PEER_CONNECTION_TYPE_GRPC
        return robot_pb2.GetSessionsResponse(
            sessions=[
                robot_pb2.Session(
                    id=s.id, peer_connection_info=robot_pb2.PeerConnectionInfo(type=grpc_peer, remote_address=s.peer)
                )
                for s in self.app.sessions.all()
                if s.owner == owner
            ]
        )

    @handler
    async def StopAll(self, request: Any, context: Context) -> robot_pb2.StopAllResponse:
        moving = await self.stop(self.app.stop_all)
        log.info("StopAll from %s: stopped everything (moving: %s)", caller_of(context).peer,
                 ", ".join(moving) or "nothing")
        return robot_pb2.StopAllResponse()
