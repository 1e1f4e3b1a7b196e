"""Prometheus metrics: what the daemon did, as counters, gauges and histograms on a registry of its own, served as
Prometheus' text format on a port of its own (`network.metrics.bind_address`), from the daemon's serving loop.

Fed from two places, both kept quick because they run where the daemon works:

- the event hub (`EventHub.listen`), on the publishing thread: a session's start, end and expiry, each stop and
  its latency, a lost GPIO backend, a reload;
- the front door (`FrontDoor.observer`), on the serving loop once each call is answered: calls by method and code,
  failed authentications, heartbeat handling time, Stop and StopAll.

Label children are looked up once and kept, so an event costs a dict lookup and a few locked increments (see
benchmarks/bench_metrics.py); the live-session gauge is read from the session table only when scraped.
Names follow Prometheus' conventions: a `rover_safety_` prefix, base units (seconds), `_total` on counters, and no
label with unbounded values (no session ids, tags or peers).
"""

from __future__ import annotations

import logging
import platform
import socket
from collections.abc import Callable
from importlib import metadata

import grpc
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from .events import Event
from .wire.gate import AUTHENTICATE, STOP_METHODS

log = logging.getLogger("rover-safety")

# Deadline to the last output off is about a millisecond: the library's default buckets start at 5 ms.
STOP_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A heartbeat is answered on the event loop in tens of microseconds; one that takes milliseconds means a busy loop.
HEARTBEAT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
HEARTBEAT = "/viam.robot.v1.RobotService/SendSessionHeartbeat"
STOP_ALL = "/viam.robot.v1.RobotService/StopAll"
RELOAD_RESULTS = {"reloaded": "ok", "reload_refused": "refused", "reload_failed": "failed"}
STOP_REASONS = ("expired", "closed", "forced_off", "stop", "stop_all", "shutdown")


def version() -> str:
    try:
        return metadata.version("rover-safety")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The daemon's metrics and the two feeds that update them (`on_event`, `on_rpc`)."""

    def __init__(self, *, gpio_backend: str, live_sessions: Callable[[], int]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside each counter
        registry = self.registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        Info("rover_safety_build", "The running rover-safety: its version and Python's.", registry=registry).info(
            {"version": version(), "python": platform.python_version()})
        Gauge("rover_safety_sessions_live", "Sessions alive now.", registry=registry).set_function(live_sessions)
        self.started = Counter("rover_safety_sessions_started_total", "Sessions started.", registry=registry)
        self.resumed = Counter("rover_safety_sessions_resumed_total", "Live sessions resumed (StartSession with "
                               "resume).", registry=registry)
        expired = Counter("rover_safety_sessions_expired_total", "Sessions whose heartbeat window lapsed; moving: "
                          "whether anything they drove was moving.", ["moving"], registry=registry)
        self.expired = {True: expired.labels(moving="true"), False: expired.labels(moving="false")}
        self.closed = Counter("rover_safety_sessions_closed_total", "Sessions ended on purpose (CloseSession).",
                              registry=registry)
        stops = Counter("rover_safety_stops_total", "Stops, by reason: a session's end (expired, closed), a "
                        "forced-off output, a Stop or StopAll call, the daemon shutting down.", ["reason"],
                        registry=registry)
        self.stops = {reason: stops.labels(reason=reason) for reason in STOP_REASONS}
        self.stop_failures = Counter("rover_safety_stop_failures_total", "Stops that failed or took too long "
                                     "(the outputs are then forced off and the daemon exits).", registry=registry)
        latency = Histogram("rover_safety_stop_latency_seconds", "From a session's deadline (or close) to its "
                            "last output off.", ["reason"], buckets=STOP_LATENCY_BUCKETS, registry=registry)
        self.latency = {reason: latency.labels(reason=reason) for reason in ("expired", "closed", "forced_off")}
        self.unmonitored = Counter("rover_safety_unmonitored_motion_total", "Times a resource started moving "
                                   "without a session.", registry=registry)
        self.heartbeat = Histogram("rover_safety_heartbeat_duration_seconds", "SendSessionHeartbeat: from reaching "
                                   "the front door to its answer.", buckets=HEARTBEAT_BUCKETS, registry=registry)
        self._rpcs = Counter("rover_safety_rpcs_total", "gRPC calls answered, by service, method and status "
                             "code.", ["service", "method", "code"], registry=registry)
        self._rpc_children: dict[tuple[str, grpc.StatusCode], Counter] = {}
        auth = Counter("rover_safety_auth_failures_total", "Refused credentials: kind=key is a failed "
                       "Authenticate, kind=token a call with a missing, bad or revoked token.", ["kind"],
                       registry=registry)
        self.auth_failures = {"key": auth.labels(kind="key"), "token": auth.labels(kind="token")}
        gpio = Gauge("rover_safety_gpio_up", "Whether the GPIO backend answers (1) or was lost (0).", ["backend"],
                     registry=registry)
        self.gpio = gpio.labels(backend=gpio_backend)
        self.gpio.set(1)
        moving = Gauge("rover_safety_resource_moving", "Whether a configured resource is moving (1) or stopped (0).",
                       ["resource"], registry=registry)
        self._moving = moving
        reloads = Counter("rover_safety_reloads_total", "Config reloads, by result: ok, refused (still on the old "
                          "config) or failed (the daemon stops).", ["result"], registry=registry)
        self.reloads = {result: reloads.labels(result=result) for result in RELOAD_RESULTS.values()}
        self._handlers: dict[str, Callable[[Event], None]] = {
            "started": self._started, "resumed": self._resumed, "expired": self._expired, "closed": self._closed,
            "forced_off": self._forced_off, "stop_failed": self._stop_failed, "unmonitored": self._unmonitored,
            "moving": self._moving_now, "stopped": self._stopped_now, "backend_lost": self._backend_lost,
            "shutting_down": self._shutting_down, "reloaded": self._reload, "reload_refused": self._reload,
            "reload_failed": self._reload,
        }

    def resources(self, names: list[str]) -> None:
        """Show every configured resource as stopped (they are all off at start and after a reload)."""
        for name in names:
            self._moving.labels(resource=name).set(0)

    # --- the event hub's feed (any thread: keep it quick, never raise) ---------------------------------------

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(event.kind)
        if handler is not None:
            try:
                handler(event)
            except Exception as exc:  # a metric must never break the path that published the event
                log.debug("metrics: %s event not counted: %r", event.kind, exc)

    def _started(self, event: Event) -> None:
        self.started.inc()

    def _resumed(self, event: Event) -> None:
        self.resumed.inc()

    def _expired(self, event: Event) -> None:
        self.expired[bool(event.moving)].inc()
        self._ended("expired", event)

    def _closed(self, event: Event) -> None:
        self.closed.inc()
        self._ended("closed", event)

    def _ended(self, reason: str, event: Event) -> None:
        if event.resources:
            self.stops[reason].inc()
        if event.latency_ms is not None:
            self.latency[reason].observe(event.latency_ms / 1000)

    def _forced_off(self, event: Event) -> None:
        self.stops["forced_off"].inc()
        if event.latency_ms is not None:
            self.latency["forced_off"].observe(event.latency_ms / 1000)

    def _stop_failed(self, event: Event) -> None:
        self.stop_failures.inc()

    def _unmonitored(self, event: Event) -> None:
        self.unmonitored.inc()

    def _moving_now(self, event: Event) -> None:
        for name in event.resources:
            self._moving.labels(resource=name).set(1)

    def _stopped_now(self, event: Event) -> None:
        for name in event.resources:
            self._moving.labels(resource=name).set(0)

    def _backend_lost(self, event: Event) -> None:
        self.gpio.set(0)

    def _shutting_down(self, event: Event) -> None:
        self.stops["shutdown"].inc()

    def _reload(self, event: Event) -> None:
        self.reloads[RELOAD_RESULTS[event.kind]].inc()

    # --- the front door's feed (the serving loop, once per answered call) ------------------------------------

    def on_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        child = self._rpc_children.get((method, code))
        if child is None:
            service, _, name = method.lstrip("/").rpartition("/")
            child = self._rpc_children[(method, code)] = self._rpcs.labels(service=service, method=name,
                                                                          code=code.name)
        child.inc()
        if method == HEARTBEAT:
            self.heartbeat.observe(seconds)
        elif code is grpc.StatusCode.UNAUTHENTICATED:
            self.auth_failures["key" if method == AUTHENTICATE else "token"].inc()
        elif code is grpc.StatusCode.OK and method in STOP_METHODS:
            self.stops["stop_all" if method == STOP_ALL else "stop"].inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics on a socket of its own, served by aiohttp on the daemon's serving loop."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=4096)
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        # About 1 ms for this registry, on the loop: less than any heartbeat window notices (see the benchmark).
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                                     "Cache-Control": "no-store"})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="rover-safety metrics: /metrics\n")
