"""Calls for a sub-part's resources (`arm:shoulder`), forwarded to the part: the user's session stays on this daemon
(it becomes the resource's last user here), the part is driven with this daemon's own session there."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from rover_safety.api import common_pb2
from rover_safety.client import ClientError
from rover_safety.parts import PartUnavailable, RemoteResource
from rover_safety.sessions import session_context

from .status import Abort

if TYPE_CHECKING:
    from .base_servicer import Context, Servicer


@functools.cache  # a handful of methods, looked up at every forwarded call otherwise
def _method(service: str, name: str) -> tuple[type[Any], bool]:
    """The response type of a method, and whether it is monitored (the proto option says so)."""
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    monitored = bool(descriptor.GetOptions().Extensions[common_pb2.safety_heartbeat_monitored])
    return message_factory.GetMessageClass(descriptor.output_type), monitored


async def forward(servicer: Servicer, service: str, method: str, request: Any, context: Context,
                  resource: RemoteResource) -> Any:
    """Forward one call to the resource's part; a monitored one claims the resource for the caller's session."""
    response, monitored = _method(service, method)
    app = servicer.app
    claim = None
    if monitored:
        session = servicer.session(context)
        refused = app.motion_refused()
        if refused:
            raise Abort(grpc.StatusCode.UNAVAILABLE, f"motion refused: {refused}")
        with session_context(session):
            claim = app.sessions.claim(resource.name)
    try:
        if claim is not None and (pending := app.sessions.stops_under_way(claim)):  # an ended session's Stop first
            await asyncio.get_running_loop().run_in_executor(None, app.sessions.await_stops, pending)
        return await asyncio.wrap_future(resource.forward_future(method, request, response))
    except BaseException as exc:
        if claim is not None:
            app.sessions.give_back(claim)
        if isinstance(exc, PartUnavailable):
            raise Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        if isinstance(exc, ClientError):
            raise Abort(exc.code or grpc.StatusCode.UNAVAILABLE, exc.details or str(exc)) from None
        raise
    finally:
        if claim is not None and app.sessions.ended_meanwhile(claim):
            asyncio.get_running_loop().run_in_executor(app.commands, resource.stop)
