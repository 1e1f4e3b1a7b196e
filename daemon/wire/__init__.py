"""The gRPC surface: translates Viam's wire API (and our SafetyService) into session and driver calls, nothing else.

Served from asyncio (grpc.aio): a pending call costs a coroutine, not a thread, so stalled streams, slow readers and
idle connections cannot take the serving capacity from live clients. Heartbeats are answered on the event loop;
anything that writes to the GPIO runs on the daemon's command threads.
"""

from __future__ import annotations

import grpc
from rover_safety.api import auth_pb2_grpc, base_pb2_grpc, motor_pb2_grpc, robot_pb2_grpc, safety_pb2_grpc

from .auth import AuthService
from .base import BaseService
from .base_servicer import App
from .calls import SESSION_METADATA_KEY, Caller, peer_host
from .gate import PROXY_PEER_KEY, PROXY_SECRET_KEY, FrontDoor, Policy
from .motor import MotorService
from .robot import RobotService
from .safety import SafetyService
from .status import SESSION_EXPIRED, STATUSES, Abort, status_of

# A control message is tiny: nothing a client sends may cost the daemon more than this.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_METADATA_BYTES = 8 * 1024
STREAMS_PER_CONNECTION = 4  # with connections_per_peer, what one host may have queued at the daemon at once

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
    # Clients may ping often enough to notice a dead link within a short heartbeat window (rover_safety.client
    # pings every window/2), even between calls; a client that pings faster than every 50 ms is cut off.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 50),
    ("grpc.http2.max_pings_without_data", 0),
    # A connection with no call for a minute is closed (its client reconnects on its next call, unnoticed), so idle
    # connections cannot hold max_connections for ever; and idle clients are pinged, so a vanished one is noticed.
    ("grpc.max_connection_idle_ms", 60_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]

__all__ = [
    "PROXY_PEER_KEY",
    "PROXY_SECRET_KEY",
    "SERVER_OPTIONS",
    "SESSION_EXPIRED",
    "SESSION_METADATA_KEY",
    "STATUSES",
    "Abort",
    "App",
    "Caller",
    "FrontDoor",
    "Policy",
    "add_services",
    "new_server",
    "peer_host",
    "status_of",
]


def new_server(front_door: FrontDoor, max_connections: int) -> grpc.aio.Server:
    """A grpc.aio server with the daemon's limits, on the running event loop."""
    options = [*SERVER_OPTIONS, ("grpc.max_allowed_incoming_connections", max_connections)]
    return grpc.aio.server(interceptors=[front_door], options=options)


def add_services(server: grpc.aio.Server, app: App) -> None:
    robot_pb2_grpc.add_RobotServiceServicer_to_server(RobotService(app), server)
    motor_pb2_grpc.add_MotorServiceServicer_to_server(MotorService(app), server)
    base_pb2_grpc.add_BaseServiceServicer_to_server(BaseService(app), server)
    safety_pb2_grpc.add_SafetyServiceServicer_to_server(SafetyService(app), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(app), server)
