"""The daemon: wires config -> drivers -> session manager -> gRPC, and owns start-up, reload and every way out."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from gpiozero.pins import Factory
from rover_safety.config import Config, ConfigError, format_duration, load_isolated
from rover_safety.drivers import (
    COMMAND_TIMEOUT,
    PinFactoryError,
    Resource,
    Rig,
    build,
    check_alive,
    disconnect,
    is_remote,
    open_factory,
    set_command_timeout,
    wait_for_hangup,
)
from rover_safety.parts import Part, RemoteResource
from rover_safety.sessions import LoopHooks, SessionEvent, SessionManager, session_tag

from . import exposure, journal, notify, tls, wire
from .auth import Authenticator
from .errors import StartupError
from .events import Event, EventHub
from .overview import Overview, PartView, resources_view, sessions_view
from .realtime import realtime_thread, serving_thread, settle_garbage, short_gil_handover
from .serving import EventLoopThread
from .state import record_driven

if TYPE_CHECKING:
    import socket

    from google.protobuf.message import Message
    from rover_safety.web import OperatorPage

    from .metrics import Metrics, MetricsServer

log = logging.getLogger("rover-safety")

# Threads that run driver commands for the gRPC handlers (a GPIO write can block: it must never block the event
# loop that answers heartbeats). Commands hold the daemon's lock, so more would only wait.
COMMAND_THREADS = 4


class Daemon:
    """One running rover-safety: its pins, sessions and gRPC server."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        simulate: bool = False,
        on_pin_change: Callable[[int, float], None] | None = None,
        on_fatal: Callable[[], None] = lambda: None,
    ) -> None:
        if simulate:
            config = replace(config, pin_factory="mock")
        self.config = config
        self.config_path = config_path
        self.simulate = simulate
        self.on_pin_change = on_pin_change
        self.lock = threading.RLock()  # guards the rig during reload and shutdown, and every motion command
        self.events = EventHub()
        self.commands = ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="command", initializer=serving_thread)
        self._moving: frozenset[str] = frozenset()
        self._refused: str | None = "starting"
        self._fatal: str | None = None
        self._on_fatal = on_fatal  # wakes whoever runs the daemon (the CLI's main thread) to shut it down
        self._health_stop = threading.Event()
        self._backend_lost = False
        self._last_status = ""
        self._status_lock = threading.Lock()  # not self._lock: session events arrive while a reload holds that
        self.rig: Rig | None = None
        limits = config.limits
        self.sessions = SessionManager({}, config.heartbeat_window, on_event=self._on_session_event,
                                       allow_unmonitored_motion=config.allow_unmonitored_motion,
                                       max_sessions=limits.max_sessions, max_per_owner=limits.sessions_per_owner,
                                       hooks=self._loop_hooks())
        self._parts = {remote.name: Part(remote, self._on_part) for remote in config.remotes}
        self.auth = Authenticator(config.api_keys, config.token_ttl)
        # --- the operator page and the metrics endpoint (see _start_extras) ---------------------------------------
        # The page tells the front door its browsers' addresses with this secret, made afresh at every start; every
        # policy carries it, so a reload keeps it. What _start_extras starts is kept here for _stop_extras.
        self.proxy_secret: str | None = secrets.token_urlsafe(32) if config.web_bind_address else None
        self.page: OperatorPage | None = None
        self.metrics: Metrics | None = None
        self._metrics_server: MetricsServer | None = None
        # ------------------------------------------------------------------------------------------------------------
        self.front_door = wire.FrontDoor(self._policy(config))
        journal.budget.per_second = limits.log_lines_per_second
        self.serving: EventLoopThread | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def _policy(self, config: Config) -> wire.Policy:
        return wire.Policy(self.auth, config.limits, config.public_stop,
                           client_certificates=config.tls is not None and config.tls.client_ca_file is not None,
                           proxy_secret=self.proxy_secret, owns=self.sessions.owns,
                           heartbeat_window=config.heartbeat_window)

    def _loop_hooks(self) -> LoopHooks:
        watchdog = notify.watchdog_interval()
        return LoopHooks(
            tick=notify.watchdog_ping if watchdog else None,
            tick_interval=watchdog,
            on_crash=lambda exc: self.fatal("the session deadline loop crashed", exc),
            thread_setup=realtime_thread,
        )

    # --- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open and verify the pins, drive every output off, start sessions and listen; then tell systemd READY.

        Nothing is touched before the config has passed the open-door rule and the TLS files can be read.
        """
        cfg = self.config
        warnings = [exposure.check(cfg, cfg.bind_address)]
        if cfg.web_bind_address is not None:  # the operator page: the same rule, before anything is touched
            warnings.append(exposure.check(cfg, cfg.web_bind_address, "network.web.bind_address"))
        credentials = tls.server_credentials(cfg.tls) if cfg.tls is not None else None
        for warning in filter(None, warnings):
            journal.event("insecure", logging.WARNING, warning)
        try:
            factory = open_factory(cfg.pin_factory, cfg.pigpio_host, cfg.pigpio_port, self.on_pin_change,
                                   timeout=command_timeout(cfg.heartbeat_window), lgpio_chip=cfg.lgpio_chip)
        except PinFactoryError as exc:
            raise StartupError(str(exc)) from None
        try:
            self.rig = build(cfg, factory)
            self.rig.stop_all()
        except Exception as exc:
            self.rig = None
            try:
                factory.close()
            except Exception:  # the backend failed during set-up; the StartupError below says so
                disconnect(factory)
            raise StartupError(f"cannot set up the configured pins on {cfg.pin_factory}: {exc}") from None
        for motor in self.rig.motors.values():
            log.info("motor %s: %s, PWM %s Hz%s", motor.name, motor.wiring, _hz(motor.frequency),
                     _rounded(motor.config.pwm_freq, motor.frequency))
        record_driven(self.config)  # before anything can drive them: safe-stop turns off what this names
        self._update_table()
        for part in self._parts.values():
            part.start()
        self.serving = EventLoopThread("serve", setup=serving_thread)
        self.events.attach(self.serving.loop)
        try:
            self.port = self.serving.call(self._listen(cfg.bind_address, credentials))
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.shutdown()
            raise StartupError(f"network.bind_address: cannot listen on {cfg.bind_address} (in use, or not an "
                               "address of this machine?)")
        try:
            self.serving.call(self._start_extras())
        except StartupError:
            self.shutdown()
            raise
        if is_remote(factory):
            threading.Thread(target=self._watch_backend, args=(factory,), name="backend-health", daemon=True).start()
        self._refused = None
        short_gil_handover()
        settle_garbage()
        log.info(
            "rover-safety listening on %s (%s; pins: %s%s), heartbeat window %s, resources: %s",
            cfg.bind_address.rsplit(":", 1)[0] + f":{self.port}",
            ("TLS" if cfg.tls else "plain text") + (f", API keys: {', '.join(k.id for k in cfg.api_keys)}"
                                                    if cfg.api_keys else ", no API keys"),
            cfg.pin_factory,
            ", simulated" if self.simulate else "",
            format_duration(cfg.heartbeat_window),
            ", ".join(self.rig.resources) or "none",
        )
        notify.ready(self.status())

    async def _listen(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Create the gRPC server on the serving loop, bind it and start it; the port it listens on (0: failed)."""
        self.server = wire.new_server(self.front_door, self.config.limits.max_connections)
        wire.add_services(self.server, self)
        if credentials is not None:
            port = self.server.add_secure_port(address, credentials)
        else:
            port = self.server.add_insecure_port(address)
        if port:
            await self.server.start()
        return port

    async def _stop_serving(self) -> None:
        await self._stop_extras()
        if self.server is not None:
            await self.server.stop(grace=None)

    # --- what else the serving loop serves: the operator page and the metrics endpoint --------------------------

    async def _start_extras(self) -> None:
        """Start the operator page and the metrics endpoint when configured (on the serving loop, after gRPC).

        Each listens on a port of its own; one that cannot, or a page that would be an open door, is a StartupError
        naming its setting (motion is refused until start-up has finished, so nothing can have moved).
        """
        cfg = self.config
        if cfg.metrics_bind_address is None and cfg.web_bind_address is None:
            return
        from rover_safety.web import OperatorPage, PageError, listening_socket, page_settings, page_urls

        sockets: dict[str, socket.socket] = {}
        for key, address in (("network.metrics.bind_address", cfg.metrics_bind_address),
                             ("network.web.bind_address", cfg.web_bind_address)):
            if address is None:
                continue
            try:
                sockets[key] = listening_socket(address)
            except OSError as exc:
                for sock in sockets.values():
                    sock.close()
                raise StartupError(f"{key}: cannot listen on {address}: {exc.strerror or exc}") from None
        if cfg.metrics_bind_address is not None:
            from .metrics import Metrics, MetricsServer  # prometheus_client: imported only when configured

            self.metrics = Metrics(gpio_backend=cfg.pin_factory, live_sessions=lambda: len(self.sessions.all()))
            self.metrics.resources(sorted(self.resources()))
            self.events.listen(self.metrics.on_event)
            self.front_door.observer = self.metrics.on_rpc
            self._metrics_server = MetricsServer(self.metrics)
            await self._metrics_server.start(sockets["network.metrics.bind_address"])
            log.info("metrics on %smetrics", page_urls("http", cfg.metrics_bind_address, self._metrics_server.port)[0])
            if not exposure.is_loopback(cfg.metrics_bind_address):
                log.warning("network.metrics.bind_address %s is off loopback: anyone who reaches it reads the "
                            "metrics (no auth, plain HTTP); prefer loopback and a local Prometheus agent",
                            cfg.metrics_bind_address)
        if cfg.web_bind_address is not None:
            assert self.proxy_secret is not None
            try:
                settings = page_settings(cfg, grpc_port=self.port, proxy_secret=self.proxy_secret,
                                         secret_key=wire.PROXY_SECRET_KEY, peer_key=wire.PROXY_PEER_KEY,
                                         loopback_only=exposure.is_loopback(cfg.web_bind_address),
                                         auth_enabled=lambda: self.auth.enabled,
                                         public_stop=lambda: self.config.public_stop)
            except PageError as exc:
                sockets["network.web.bind_address"].close()
                raise StartupError(str(exc)) from None
            self.page = OperatorPage(settings)
            await self.page.start(sockets["network.web.bind_address"])
            names, addresses = tls.local_names() if exposure.host_of(cfg.web_bind_address) in ("0.0.0.0", "::") \
                else ([], [])
            urls = page_urls("https" if cfg.tls else "http", cfg.web_bind_address, self.page.port, names, addresses)
            certificate = (f"; its certificate's SHA-256 fingerprint (compare it when the browser asks): "
                           f"{tls.fingerprint(Path(cfg.tls.cert_file).read_bytes())}") if cfg.tls else ""
            log.info("operator page on %s%s%s", " ".join(urls), " (log in with an API key)" if cfg.api_keys else "",
                     certificate)

    async def _stop_extras(self) -> None:
        """Stop what _start_extras started (on the serving loop, before gRPC stops)."""
        page, self.page = self.page, None
        if page is not None:
            await page.stop()  # its event streams end and its channels close while the gRPC port still answers
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            await server.stop()

    # --- what the gRPC layer asks of us ------------------------------------------------------

    def resource(self, name: str) -> Resource | RemoteResource | None:
        rig = self.rig
        local = rig.get(name) if rig else None
        if local is not None or ":" not in name:
            return local
        part = self._parts.get(name.split(":", 1)[0])
        return part.resources.get(name) if part else None

    def resources(self) -> dict[str, Resource | RemoteResource]:
        rig = self.rig
        found: dict[str, Resource | RemoteResource] = dict(rig.resources) if rig else {}
        for part in self._parts.values():
            found.update(part.resources)
        return found

    def stop_all(self) -> list[str]:
        """Every resource stopped: each connected sub-part asked first and at once, this daemon's own stopped while
        they answer (a part that is slow or gone never delays the pins here)."""
        asked = [(part, [n for n, r in part.resources.items() if r.is_moving()], part.stop_all())
                 for part in self._parts.values() if part.connected]
        with self.lock:
            local = self.rig.stop_all() if self.rig else []
        return parts_stopped(asked) + local

    def motion_refused(self) -> str | None:
        return self._refused

    def fatal(self, reason: str, exc: BaseException | None = None) -> None:
        """Something is broken: refuse motion, stop everything, and make the main thread exit non-zero."""
        self._refused = reason
        if self._fatal is None:
            self._fatal = reason
            log.critical("%s%s; stopping every output and exiting", reason, f": {exc!r}" if exc else "",
                         exc_info=exc)
        try:
            if not self._backend_lost:  # through a lost backend nothing can be stopped: safe-stop's job after exit
                self.stop_all()
        except Exception as stop_exc:
            log.critical("could not stop every output: %s", stop_exc)
        finally:
            self._on_fatal()

    @property
    def failure(self) -> str | None:
        return self._fatal

    def status(self) -> str:
        moving = [n for n, r in self.resources().items() if r.is_moving()]
        count = len(self.sessions.all())
        return f"{count} session{'s' if count != 1 else ''}; moving: {', '.join(moving) or 'nothing'}"

    def overview(self, viewer: str) -> Overview:
        """What an operator sees, with the full session ids only of `viewer`'s own sessions."""
        sessions, tags = sessions_view(self.sessions, viewer)
        return Overview(
            sessions=sessions,
            resources=resources_view(self.resources(), tags),
            gpio_up=not self._backend_lost,
            gpio_backend=self.config.pin_factory,
            heartbeat_window=self.sessions.heartbeat_window,
            expiries=tuple(self.events.expiries()),
            motion_refused=self._refused or "",
            parts=tuple(PartView(p.name, p.address, p.state, p.detail) for p in self._parts.values()),
        )

    def refresh_status(self) -> None:
        """After anything that may move or stop a resource: publish what started or stopped moving, and tell systemd
        the summary (STATUS=) when it changed. Computed on command or stop threads, never in the deadline loop."""
        moving = frozenset(n for n, r in self.resources().items() if r.is_moving())
        with self._status_lock:
            started, stopped, self._moving = moving - self._moving, self._moving - moving, moving
        if started:
            self.events.publish(Event("moving", resources=tuple(sorted(started))))
        if stopped:
            self.events.publish(Event("stopped", resources=tuple(sorted(stopped))))
        if not notify.enabled():
            return
        text = self.status()
        with self._status_lock:
            if text == self._last_status:
                return
            self._last_status = text
        notify.status(text)

    def _on_session_event(self, event: SessionEvent) -> None:
        journal.session_event(event)
        self.events.publish(Event(event.kind, session_tag=session_tag(event.session_id) if event.session_id else "",
                                  peer=event.peer, resources=event.resources, moving=event.moving,
                                  latency_ms=None if event.latency is None else event.latency * 1000,
                                  detail=event.detail))
        self.refresh_status()
        if event.kind == "stop_failed" and not all(":" in name for name in event.resources):
            # The GPIO path misbehaves (on pigpio a timed-out command also leaves the connection out of step, so
            # later replies would answer the wrong commands): the pins are forced off next, then the daemon exits
            # so that systemd's safe-stop runs on a fresh connection and restarts it.
            threading.Thread(target=self.fatal, args=(f"a stop failed: {event.detail}",), daemon=True).start()

    # --- sub-parts ------------------------------------------------------------------------------------------

    def _update_table(self) -> None:
        """Give the session table every resource, this daemon's and its parts' (after start, reload, a part back)."""
        rig = self.rig
        if rig is not None:
            self.sessions.replace_resources(self.resources(), rig.parts)

    def _on_part(self, part: Part, state: str, why: str) -> None:
        """A part's link changed (on that part's thread). Lost: the user sessions that drove anything there end now
        (their clients get SESSION_EXPIRED and start afresh), one journal entry says so; back: its resources are."""
        if state == "lost":
            names = tuple(part.resources)
            ended = self.sessions.end_driving(names, "ended", f"part {part.name} was lost ({why})")
            journal.event("part_lost", logging.WARNING,
                          f"part {part.name} at {part.address} lost: {why}; its resources are unavailable; ended "
                          f"{len(ended)} session(s) that drove them", PART=part.name, PART_ADDRESS=part.address,
                          RESOURCES=",".join(names), ENDED_SESSIONS=str(len(ended)))
            self.events.publish(Event("part_lost", resources=names, detail=f"{part.name}: {why}"))
        elif state == "connected":
            self._update_table()
            journal.event("part_back", logging.INFO, f"part {part.name} at {part.address} connected: {why}",
                          PART=part.name, PART_ADDRESS=part.address, RESOURCES=",".join(part.resources))
            self.events.publish(Event("part_back", resources=tuple(part.resources), detail=f"{part.name}: {why}"))
        self.refresh_status()

    # --- the GPIO backend -----------------------------------------------------------------------

    def _watch_backend(self, factory: Factory) -> None:
        """Notice a lost pigpiod within one heartbeat window even when nothing moves.

        A dying pigpiod closes its sockets, which wakes this thread at once; a round trip every half window also
        catches one that hangs (each command is bounded by a timeout) or that sits behind a dead network.
        """
        while not self._health_stop.is_set():
            interval = self.config.heartbeat_window / 2
            hung_up = wait_for_hangup(factory, interval)
            if self._health_stop.is_set():
                return
            try:
                check_alive(factory)
            except PinFactoryError as exc:
                self._lost_backend(factory, exc)
                return
            if hung_up:  # a wake-up with pigpiod still answering: do not spin on it
                self._health_stop.wait(interval)

    def _lost_backend(self, factory: Factory, exc: PinFactoryError) -> None:
        """Refuse motion, drop the dead connection at once, say so, and make the main thread exit non-zero."""
        self._refused = str(exc)
        self._backend_lost = True
        disconnect(factory)  # pigpio's notification thread spins until this
        if self._fatal is None:
            self._fatal = str(exc)
            journal.event("backend_lost", logging.CRITICAL, f"{exc}; refusing motion and exiting so that systemd "
                          "restarts the daemon and runs safe-stop (nothing can be driven off through a lost backend)")
            self.events.publish(Event("backend_lost", detail=str(exc)))
        self._on_fatal()

    # --- reload ---------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; on any error keep running on the old one and change nothing."""
        if not self.config_path:
            log.warning("reload: no config file to re-read")
            self.events.publish(Event("reload_refused", detail="no config file to re-read"))
            return False
        notify.reloading()
        try:
            # In a child process: a hostile or broken file costs that process its time and memory, never this
            # one's GIL (the deadline thread needs it to stop things on time) and never this one's memory.
            new = load_isolated(self.config_path)
            if self.simulate:
                new = replace(new, pin_factory="mock")
            exposure.check(new, self.config.bind_address)  # a reload must not leave an open door either
            if self.config.web_bind_address is not None:
                exposure.check(new, self.config.web_bind_address, "network.web.bind_address")
        except (ConfigError, StartupError) as exc:
            log.error("reload refused, still running on the previous config: %s", exc)
            self.events.publish(Event("reload_refused", detail=str(exc)))
            notify.ready(self.status())
            return False
        except Exception as exc:  # a bug, but not a reason to stop
            log.error("reload refused, still running on the previous config: %r", exc)
            self.events.publish(Event("reload_refused", detail=repr(exc)))
            notify.ready(self.status())
            return False
        try:
            self._apply(new)
        except Exception as exc:
            self.events.publish(Event("reload_failed", detail=repr(exc)))
            self.fatal("reload failed half-way", exc)
            return False
        record_driven(self.config)
        settle_garbage()
        self.events.publish(Event("reloaded", detail=self.config_path))
        notify.ready(self.status())
        return True

    def _apply(self, new: Config) -> None:
        old = self.config
        assert self.rig is not None
        if new.bind_address != old.bind_address:
            log.warning("reload: network.bind_address changed to %s; this takes a restart (still on %s)",
                        new.bind_address, old.bind_address)
            new = replace(new, bind_address=old.bind_address)
        for key, now, then in (("network.tls", new.tls, old.tls), ("network.web", new.web_bind_address,
                                old.web_bind_address), ("network.metrics", new.metrics_bind_address,
                                old.metrics_bind_address), ("remotes", new.remotes, old.remotes)):
            if now != then:
                log.warning("reload: %s changed; this takes a restart (still as before)", key)
        new = replace(new, tls=old.tls, web_bind_address=old.web_bind_address,
                      metrics_bind_address=old.metrics_bind_address, remotes=old.remotes)
        backend = (new.pin_factory, new.pigpio_host, new.pigpio_port, new.lgpio_chip)
        if backend != (old.pin_factory, old.pigpio_host, old.pigpio_port, old.lgpio_chip):
            log.warning("reload: gpio settings changed; this takes a restart (still on %s)", old.pin_factory)
            new = replace(new, pin_factory=old.pin_factory, pigpio_host=old.pigpio_host, pigpio_port=old.pigpio_port,
                          lgpio_chip=old.lgpio_chip)
        old_motors = {m.name: m for m in old.motors}
        new_motors = {m.name: m for m in new.motors}
        old_bases = {b.name: b for b in old.bases}
        new_bases = {b.name: b for b in new.bases}
        changed_motors = {n for n in old_motors if new_motors.get(n) != old_motors[n]}
        changed_bases = {n for n, b in old_bases.items()
                         if new_bases.get(n) != b or changed_motors & set(b.left + b.right)}
        with self.lock:
            rig = self.rig
            for name in changed_bases:
                rig.bases.pop(name).stop()
            for name in changed_motors:
                rig.motors.pop(name).close()
            added_motors = set(new_motors) - set(rig.motors)
            added_bases = set(new_bases) - set(rig.bases)
            added = added_motors | added_bases
            if added_motors:
                rig.motors.update(build(new, rig.factory, only=added_motors).motors)
            for name in sorted(added_bases):
                rig.add_base(new_bases[name])
            self._update_table()
            self.sessions.set_heartbeat_window(new.heartbeat_window)
            set_command_timeout(rig.factory, command_timeout(new.heartbeat_window))
            self.sessions.allow_unmonitored_motion = new.allow_unmonitored_motion
            self.sessions.set_limits(new.limits.max_sessions, new.limits.sessions_per_owner)
            revoked = self.auth.replace_keys(new.api_keys, new.token_ttl)
            self.front_door.apply(self._policy(new))
            journal.budget.per_second = new.limits.log_lines_per_second
            self.config = new
        if revoked:
            log.warning("reload: API keys removed or changed: %s; their tokens are refused from now on",
                        ", ".join(revoked))
        log.info(
            "reloaded %s: heartbeat window %s (live sessions take it at their next heartbeat); "
            "stopped and closed: %s; opened: %s",
            self.config_path, format_duration(new.heartbeat_window),
            ", ".join(sorted(changed_bases | changed_motors)) or "nothing", ", ".join(sorted(added)) or "nothing",
        )

    # --- every way out --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Duty 0 on every output first; then stop serving, stop the session loop, and release the pins.

        Every step is tried even if one fails; outputs that could not be driven off make the exit code non-zero.
        """
        self._refused = "shutting down"
        self._health_stop.set()
        # Say so first: a primary that follows this daemon as its sub-part learns it at once, before anything stops.
        self.events.publish(Event("shutting_down", detail="the daemon is stopping every output and exiting"))
        # Children before parent: the sub-parts stop what this daemon drove there (closing its sessions on them).
        close_parts(list(self._parts.values()))
        moving: list[str] = []
        with self.lock:
            if self.rig is not None and not self._backend_lost:
                try:
                    moving = self.rig.stop_all()
                except Exception as exc:
                    self._shutdown_failed("could not stop every output", exc)
        if moving:
            log.warning("shutdown: stopped %s", ", ".join(moving))
        notify.stopping()
        if self.serving is not None:
            try:
                self.serving.call(self._stop_serving(), timeout=5)
            except Exception as exc:  # the outputs are off already; say why serving did not end cleanly
                log.warning("shutdown: the gRPC server did not stop cleanly: %r", exc)
            self.serving.stop()
        self.sessions.close()
        self.commands.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            rig, self.rig = self.rig, None
            if rig is None:
                return
            if self._backend_lost:
                disconnect(rig.factory)
                return
            try:
                rig.close()  # stops everything once more (a command that was in flight may have moved something)
            except Exception as exc:
                self._shutdown_failed("could not stop and release every output", exc)

    def _shutdown_failed(self, what: str, exc: Exception) -> None:
        if self._backend_lost:
            return  # lost while shutting down: already reported, and nothing can be driven off through it
        log.critical("shutdown: %s: %s", what, exc)
        if self._fatal is None:
            self._fatal = f"shutdown: {what}"


PART_TIMEOUT = 0.5  # seconds the sub-parts together may take to close, from a primary that is stopping


def parts_stopped(asked: list[tuple[Part, list[str], Future[Message]]]) -> list[str]:
    """What the parts asked to StopAll had moving, under their names here, once each has answered or given up (each
    call is bounded by its own deadline). A part that could not be reached stops itself at its expiry of this
    daemon's session."""
    moving = []
    for part, names, answer in asked:
        try:
            answer.result()
        except Exception as exc:
            log.warning("StopAll could not reach part %s: %s", part.name, exc)
        else:
            moving += names
    return moving


def close_parts(parts: list[Part]) -> None:
    """Close this daemon's sessions on every part at once (each stops what it drove there), within PART_TIMEOUT."""
    threads = [threading.Thread(target=part.close, name=f"close-{part.name}", daemon=True) for part in parts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + PART_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def command_timeout(heartbeat_window: float) -> float:
    """How long one pigpiod command may take before pigpiod counts as hung: half a heartbeat window, 0.1 s..1 s.

    With the health check every half window, a hung pigpiod is then noticed within one window (for windows >= 0.2 s).
    """
    return min(COMMAND_TIMEOUT, max(0.1, heartbeat_window / 2))


def _hz(frequency: float | None) -> str:
    return f"{frequency:g}" if frequency else "?"


def _rounded(asked: int, frequency: float | None) -> str:
    """Say so when the backend runs another PWM frequency than the config asked for."""
    if frequency is None or round(frequency) == asked:
        return ""
    return f" (pwm_freq {asked} Hz is not available: the backend rounded it)"
