"""The daemon: wires config -> drivers -> session manager -> gRPC, and owns start-up, reload and every way out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

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
from rover_safety.sessions import LoopHooks, SessionEvent, SessionManager, session_tag

from . import exposure, journal, notify, tls, wire
from .auth import Authenticator
from .errors import StartupError
from .events import Event, EventHub
from .overview import Overview, resources_view, sessions_view
from .realtime import realtime_thread, serving_thread, settle_garbage
from .serving import EventLoopThread
from .state import record_driven

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
        self.commands = ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="command")
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
        self.auth = Authenticator(config.api_keys, config.token_ttl)
        self.front_door = wire.FrontDoor(self._policy(config))
        journal.budget.per_second = limits.log_lines_per_second
        self.serving: EventLoopThread | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def _policy(self, config: Config) -> wire.Policy:
        return wire.Policy(self.auth, config.limits, config.public_stop,
                           client_certificates=config.tls is not None and config.tls.client_ca_file is not None)

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
        warning = exposure.check(cfg, cfg.bind_address)
        credentials = tls.server_credentials(cfg.tls) if cfg.tls is not None else None
        if warning:
            journal.event("insecure", logging.WARNING, warning)
        try:
            factory = open_factory(cfg.pin_factory, cfg.pigpio_host, cfg.pigpio_port, self.on_pin_change,
                                   timeout=command_timeout(cfg.heartbeat_window))
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
        self.sessions.replace_resources(self.rig.resources, self.rig.parts)
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
        settle_garbage()
        log.info(
            "rover-safety listening on %s (%s; pins: %s%s), heartbeat window %s, resources: %s",
            cfg.bind_address.rsplit(":", 1)[0] + f":{self.port}",
            ("TLS" if cfg.tls else "plain text") + (f", {len(cfg.api_keys)} API keys" if cfg.api_keys else
                                                    ", no API keys"),
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
        """Start the operator page and the metrics endpoint when configured (on the serving loop, after gRPC)."""

    async def _stop_extras(self) -> None:
        """Stop what _start_extras started (on the serving loop, before gRPC stops)."""

    # --- what the gRPC layer asks of us ------------------------------------------------------

    def resource(self, name: str) -> Resource | None:
        rig = self.rig
        return rig.get(name) if rig else None

    def resources(self) -> dict[str, Resource]:
        rig = self.rig
        return rig.resources if rig else {}

    def stop_all(self) -> list[str]:
        with self.lock:
            return self.rig.stop_all() if self.rig else []

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
        rig = self.rig
        moving = [n for n, r in rig.resources.items() if r.is_moving()] if rig else []
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
        )

    def refresh_status(self) -> None:
        """After anything that may move or stop a resource: publish what started or stopped moving, and tell systemd
        the summary (STATUS=) when it changed. Computed on command or stop threads, never in the deadline loop."""
        rig = self.rig
        moving = frozenset(n for n, r in rig.resources.items() if r.is_moving()) if rig else frozenset()
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
        if event.kind == "stop_failed":
            # The GPIO path misbehaves (on pigpio a timed-out command also leaves the connection out of step, so
            # later replies would answer the wrong commands): the pins are forced off next, then the daemon exits
            # so that systemd's safe-stop runs on a fresh connection and restarts it.
            threading.Thread(target=self.fatal, args=(f"a stop failed: {event.detail}",), daemon=True).start()

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
            return False
        notify.reloading()
        try:
            # In a child process: a hostile or broken file costs that process its time and memory, never this
            # one's GIL (the deadline thread needs it to stop things on time) and never this one's memory.
            new = load_isolated(self.config_path)
            if self.simulate:
                new = replace(new, pin_factory="mock")
            exposure.check(new, self.config.bind_address)  # a reload must not leave an open door either
        except (ConfigError, StartupError) as exc:
            log.error("reload refused, still running on the previous config: %s", exc)
            notify.ready(self.status())
            return False
        except Exception as exc:  # a bug, but not a reason to stop
            log.error("reload refused, still running on the previous config: %r", exc)
            notify.ready(self.status())
            return False
        try:
            self._apply(new)
        except Exception as exc:
            self.fatal("reload failed half-way", exc)
            return False
        record_driven(self.config)
        settle_garbage()
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
        backend = (new.pin_factory, new.pigpio_host, new.pigpio_port)
        if backend != (old.pin_factory, old.pigpio_host, old.pigpio_port):
            log.warning("reload: gpio settings changed; this takes a restart (still on %s)", old.pin_factory)
            new = replace(new, pin_factory=old.pin_factory, pigpio_host=old.pigpio_host, pigpio_port=old.pigpio_port)
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
            self.sessions.replace_resources(rig.resources, rig.parts)
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
        self.events.publish(Event("shutting_down", detail="the daemon is stopping; every output is off"))
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
