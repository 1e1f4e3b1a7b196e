"""The front door every call passes: who is calling, and how many calls each client may have in flight.

A gRPC server interceptor that wraps each method's behaviour, so that it runs inside the call's task with the
call's context at hand (the peer is known only there), before the servicer: it records the Caller for the handler
and refuses a client's call beyond its share with RESOURCE_EXHAUSTED, at once, rather than queueing it behind others.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from .calls import Caller, peer_host, set_caller

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Interceptor = grpc.aio.ServerInterceptor
    MethodHandler = grpc.RpcMethodHandler

# Calls that may run without limit: none. Streams (WatchEvents) count while open.
IN_FLIGHT_PER_OWNER = 64


class FrontDoor(Interceptor):
    """Identifies each call's client and bounds the calls each one has in flight."""

    def __init__(self, in_flight_per_owner: int = IN_FLIGHT_PER_OWNER) -> None:
        self.in_flight_per_owner = in_flight_per_owner
        self._in_flight: collections.Counter[str] = collections.Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        arrived = time.monotonic()
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, arrived),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, arrived),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the daemon serves no client-streaming methods

    def _admit(self, context: Context, arrived: float) -> Caller:
        peer = context.peer()
        return Caller(peer, peer_host(peer), arrived=arrived)

    def _wrap_unary(self, behaviour: Callable[..., Any], arrived: float) -> Callable[..., Any]:
        async def unary(request: Any, context: Context) -> Any:
            caller = self._admit(context, arrived)
            owner = caller.owner
            if self._in_flight[owner] >= self.in_flight_per_owner:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many calls in flight from {owner} (limit {self.in_flight_per_owner}); "
                                    "wait for answers before sending more")
            self._in_flight[owner] += 1
            set_caller(caller)
            try:
                return await behaviour(request, context)
            finally:
                self._release(owner)

        return unary

    def _wrap_stream(self, behaviour: Callable[..., Any], arrived: float) -> Callable[..., Any]:
        async def stream(request: Any, context: Context) -> Any:
            caller = self._admit(context, arrived)
            owner = caller.owner
            if self._in_flight[owner] >= self.in_flight_per_owner:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many calls in flight from {owner} (limit {self.in_flight_per_owner})")
            self._in_flight[owner] += 1
            set_caller(caller)
            try:
                async for message in behaviour(request, context):
                    yield message
            finally:
                self._release(owner)

        return stream

    def _release(self, owner: str) -> None:
        self._in_flight[owner] -= 1
        if self._in_flight[owner] <= 0:
            del self._in_flight[owner]
