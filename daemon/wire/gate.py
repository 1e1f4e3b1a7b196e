"""The front door every call passes: who is calling (a key's token, a client certificate, or just a host), whether
it may call this method, and how much of the daemon it may take.

A gRPC server interceptor that wraps each method's behaviour, so that it runs inside the call's task with the
call's context at hand (the peer and the TLS identity are known only there), before the servicer. A call beyond a
client's share is refused with RESOURCE_EXHAUSTED rather than queued behind other clients' calls; one beyond its
share of calls or connections is refused only after a hold, so that refusing a flood cannot become the load that
answering it would have been.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from rover_safety.config import ClientLimits

from .. import journal
from ..auth import Authenticator
from ..errors import AuthFailed
from ..limits import Buckets
from .calls import Caller, peer_host, set_caller

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Interceptor = grpc.aio.ServerInterceptor
    MethodHandler = grpc.RpcMethodHandler

log = logging.getLogger("rover-safety")

AUTHENTICATE = "/proto.rpc.v1.AuthService/Authenticate"
START_SESSION = "/viam.robot.v1.RobotService/StartSession"
HEARTBEAT = "/viam.robot.v1.RobotService/SendSessionHeartbeat"
# What anyone in reach may call with `auth.public_stop: true`: an e-stop.
STOP_METHODS = frozenset({
    "/viam.robot.v1.RobotService/StopAll",
    "/viam.component.motor.v1.MotorService/Stop",
    "/viam.component.base.v1.BaseService/Stop",
})
HOSTS_REMEMBERED = 4096  # client hosts whose connections are tracked at once
# A live session's heartbeats are not counted against its owner's call rate up to twice what its clients send
# (one every window/5): 10 per window, in bursts of as many, and never fewer than 50 a second (twice what a client
# sends at a 200 ms window, so one that heartbeats on a fixed short interval whatever the window is never held).
# The window is the shortest the daemon has had since it started: a client told a window at StartSession keeps
# heartbeating at its rate after a reload lengthens it.
HEARTBEATS_PER_WINDOW = 10
HEARTBEATS_PER_SECOND_AT_LEAST = 50.0
# A call beyond its client's share of calls or connections is answered RESOURCE_EXHAUSTED after this long, not at
# once: a refusal costs the serving loop as much as an answer, so a flood answered at once would take the loop
# from everyone else's heartbeats. Held, each of the flooder's streams costs one refusal a second. A held call
# costs memory, not time, and no more calls can be held than gRPC admits streams (max_connections x
# STREAMS_PER_CONNECTION). Each hold is drawn from REFUSAL_HOLD +- half, so that streams held together are not
# all answered (and resent) together.
REFUSAL_HOLD = 1.0


@dataclass
class Policy:
    """What the front door enforces; the daemon swaps fields on reload."""

    auth: Authenticator
    limits: ClientLimits = field(default_factory=ClientLimits)
    public_stop: bool = False
    client_certificates: bool = False  # mutual TLS: a verified client certificate is an identity too
    proxy_secret: str | None = None  # the daemon's own web page forwards its clients' addresses with this
    owns: Callable[[str, str], bool] = lambda owner, session_id: False  # a live session of this owner?
    heartbeat_window: float = 2.0  # seconds: how often a session's heartbeats may come uncounted


Refusal = tuple[grpc.StatusCode, str]  # how a call is refused: its status code and details
INVALID, UNAUTHENTICATED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED

PROXY_SECRET_KEY = "x-rover-safety-proxy"  # metadata: the proxy secret, from the daemon's own web page only
PROXY_PEER_KEY = "x-rover-safety-peer"  # metadata: the address of the page's client (e.g. ipv4:10.0.0.7:51000)


@dataclass
class Outcome:
    """How a call ended, for the observer (UNKNOWN until known)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class _Connections:
    """The client connections (peer addresses) each host uses, with the calls each has in flight: a bound per host.

    gRPC tells the daemon nothing of connections, only of calls, so a connection counts from its first call. One
    that has calls in flight is in use; one without may have closed: when a host is at its limit, its connection
    idle longest makes room for a new one (a client that reconnects often is never locked out), while a host
    whose every connection is busy gets no more.
    """

    def __init__(self) -> None:
        self._peers: dict[str, collections.OrderedDict[str, int]] = {}  # host -> peer -> calls in flight, LRU first

    def admit(self, peer: str, host: str, limit: int) -> bool:
        peers = self._peers.setdefault(host, collections.OrderedDict())
        if peer not in peers:
            if len(peers) >= limit:
                idle = next((p for p, calls in peers.items() if calls == 0), None)
                if idle is None:
                    return False
                del peers[idle]
            peers[peer] = 0
        peers[peer] += 1
        peers.move_to_end(peer)
        while len(self._peers) > HOSTS_REMEMBERED:  # the least recently used host without calls in flight goes
            quiet = next((h for h, p in self._peers.items() if not any(p.values())), None)
            if quiet is None:
                break
            del self._peers[quiet]
        return True

    def release(self, peer: str, host: str) -> None:
        peers = self._peers.get(host)
        if peers is not None and peers.get(peer):
            peers[peer] -= 1


class FrontDoor(Interceptor):
    """Identifies each call's client, checks its credentials, and bounds what each client may take."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._connections = _Connections()
        limits = policy.limits
        self.session_starts = Buckets(limits.session_starts_per_second, limits.session_start_burst)
        self.calls = Buckets(limits.calls_per_second_per_owner, limits.call_burst)
        self._shortest_window = policy.heartbeat_window
        self.heartbeats = Buckets(self._heartbeat_rate(), HEARTBEATS_PER_WINDOW)
        self._told = Buckets(1 / 60, 1)  # journal lines about clients over their share: one a minute each
        # Told of every call once it is answered: its method, status code and seconds since it arrived (metrics).
        self.observer: Callable[[str, grpc.StatusCode, float], None] | None = None

    def apply(self, policy: Policy) -> None:
        """A reload's new policy: new keys and limits apply to the next call (what clients spent stays spent)."""
        self.policy = policy
        limits = policy.limits
        self.session_starts.retune(limits.session_starts_per_second, limits.session_start_burst)
        self.calls.retune(limits.calls_per_second_per_owner, limits.call_burst)
        self._shortest_window = min(self._shortest_window, policy.heartbeat_window)
        self.heartbeats.retune(self._heartbeat_rate(), HEARTBEATS_PER_WINDOW)

    def _heartbeat_rate(self) -> float:
        """A live session's heartbeats a second that never count against its owner's call rate."""
        return max(HEARTBEATS_PER_WINDOW / self._shortest_window, HEARTBEATS_PER_SECOND_AT_LEAST)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        arrived = time.monotonic()
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, arrived),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, arrived),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the daemon serves no client-streaming methods

    async def _admit(self, context: Context, method: str, arrived: float,
                     heartbeat: str | None) -> tuple[Caller, str | None]:
        """The caller, once it may make this call, and the connection it counts against (None: not counted, as the
        daemon's own page and e-stops are not); otherwise the call is aborted with the reason. `heartbeat`: the
        session id of a SendSessionHeartbeat."""
        forwarded = self._forwarded(context)  # the daemon's own page: its few connections carry many browsers
        connection = context.peer()
        peer = forwarded or connection
        host = peer_host(peer)
        limits = self.policy.limits
        entity, refusal = self._identify(context, method)
        caller = Caller(peer, host, entity, arrived)
        owner = caller.owner
        # What a client may always do, whatever else it sends: stop things, and keep its live sessions alive (up to
        # twice their heartbeat rate). Neither counts against its connections or its call rate.
        if refusal is None and (method in STOP_METHODS or (heartbeat is not None
                                                            and self._heartbeat_allowed(owner, heartbeat))):
            return caller, None
        counted = forwarded is None
        if counted and not self._connections.admit(connection, host, limits.connections_per_peer):
            await self._refuse(context, owner, peer, f"too many busy connections from {host} (limit "
                                                     f"{limits.connections_per_peer}); reuse one channel")
        try:
            if not self.calls.take(owner):
                await self._refuse(context, owner, peer, f"too many calls from {owner} (limit "
                                                         f"{limits.calls_per_second_per_owner}/s, not counting its "
                                                         "sessions' heartbeats and stops); slow down",
                                   hold=counted)
            if refusal is not None:
                await context.abort(*refusal)
            if self._in_flight[owner] >= limits.calls_in_flight_per_owner:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many calls in flight from {owner} (limit "
                                    f"{limits.calls_in_flight_per_owner}); wait for answers before sending more")
            if method == START_SESSION and not self.session_starts.take(owner):
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many sessions started by {owner} (limit "
                                    f"{limits.session_starts_per_second}/s); reuse or resume a session")
        except BaseException:
            if counted:
                self._connections.release(connection, host)
            raise
        return caller, connection if counted else None

    def _heartbeat_allowed(self, owner: str, session_id: str) -> bool:
        """A heartbeat of a live session of this owner, within twice the rate its clients send them."""
        return self.policy.owns(owner, session_id) and self.heartbeats.take(session_id)

    async def _refuse(self, context: Context, owner: str, peer: str, details: str, *, hold: bool = True) -> None:
        """Answer a call beyond its client's share RESOURCE_EXHAUSTED, after REFUSAL_HOLD unless `hold` is false
        (the daemon's own page: its connection carries every browser's calls); the journal hears of it once a
        minute per client at most."""
        if self._told.take(owner):
            journal.over_share(owner, peer, details)
        if hold:
            await asyncio.sleep(REFUSAL_HOLD * random.uniform(0.5, 1.5))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details)

    def _forwarded(self, context: Context) -> str | None:
        """The page's client's address, when the call comes from the daemon's own web page (it knows the secret),
        so that limits and logs see the person at the browser, not the page; anyone else's claim is ignored."""
        secret = self.policy.proxy_secret
        if secret is None:
            return None
        metadata = dict(context.invocation_metadata() or ())
        claimed, peer = metadata.get(PROXY_SECRET_KEY), metadata.get(PROXY_PEER_KEY)
        if isinstance(claimed, str) and isinstance(peer, str) and hmac.compare_digest(claimed, secret):
            return peer[:120]
        return None

    def _identify(self, context: Context, method: str) -> tuple[str | None, Refusal | None]:
        """The caller's identity (the key id of its bearer token, else its client certificate's name, else None),
        and why it is refused if its credentials are bad or missing (None: it may call this method)."""
        policy = self.policy
        tokens = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        if method == AUTHENTICATE:
            return None, (INVALID, "already authenticated; cannot re-authenticate") if tokens else None
        entity: str | None = None
        if tokens:
            scheme, _, token = str(tokens[0]).partition(" ")
            if len(tokens) > 1 or scheme.lower() != "bearer" or not token:
                return None, (UNAUTHENTICATED, "malformed authorization metadata (expected one 'Bearer <token>')")
            try:
                entity = policy.auth.verify(token.strip())
            except AuthFailed as exc:
                return None, (UNAUTHENTICATED, str(exc))
        elif policy.client_certificates:
            names = list(context.auth_context().get("x509_common_name") or ())
            if names:
                entity = "cert:" + bytes(names[0]).decode(errors="replace")
        if entity is None and policy.auth.enabled and not (policy.public_stop and method in STOP_METHODS):
            return None, (UNAUTHENTICATED, "authentication required: call proto.rpc.v1.AuthService/Authenticate "
                                           "with an API key, then send 'authorization: Bearer <token>'")
        return entity, None

    @contextlib.asynccontextmanager
    async def _call(self, context: Context, method: str, arrived: float,
                    heartbeat: str | None = None) -> AsyncIterator[None]:
        """One call through the door: admitted (or aborted), counted while it runs, observed once it ends."""
        outcome = Outcome()
        # Nothing below touches `context` once the call may be over (a stream the client left is closed by the
        # loop after its call is gone, and using its context then is a use-after-free in grpc's Cython layer).
        live: Context | None = context
        try:
            caller, connection = await self._admit(context, method, arrived, heartbeat)
            self._in_flight[caller.owner] += 1
            set_caller(caller)
            try:
                yield
            finally:
                self._release(caller, connection)
            outcome.code = grpc.StatusCode.OK
        except (asyncio.CancelledError, GeneratorExit):
            outcome.code, live = grpc.StatusCode.CANCELLED, None
            raise
        finally:
            self._observe(method, live, outcome.code, arrived)

    def _wrap_unary(self, behaviour: Callable[..., Any], method: str, arrived: float) -> Callable[..., Any]:
        async def unary(request: Any, context: Context) -> Any:
            heartbeat = request.id if method == HEARTBEAT else None
            async with self._call(context, method, arrived, heartbeat):
                return await behaviour(request, context)

        return unary

    def _wrap_stream(self, behaviour: Callable[..., Any], method: str, arrived: float) -> Callable[..., Any]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._call(context, method, arrived):
                async for message in behaviour(request, context):
                    yield message

        return stream

    def _observe(self, method: str, context: Context | None, code: grpc.StatusCode, arrived: float) -> None:
        """Tell the observer how the call ended: the code it was aborted with, else OK, CANCELLED or UNKNOWN."""
        observer = self.observer
        if observer is not None:
            aborted = context.code() if context is not None else None
            observer(method, aborted if isinstance(aborted, grpc.StatusCode) else code, time.monotonic() - arrived)

    def _release(self, caller: Caller, connection: str | None) -> None:
        owner = caller.owner
        self._in_flight[owner] -= 1
        if self._in_flight[owner] <= 0:
            del self._in_flight[owner]
        if connection is not None:
            self._connections.release(connection, peer_host(connection))
