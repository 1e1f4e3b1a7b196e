"""The heartbeat loop: one thread and one channel of its own per client, beating the current session at a fixed rate.

Slot k of a session is due at `first + k * interval` (interval = window / 5, `first` = when the session started):
a late beat does not shift the later ones, and slots missed while a beat was slow are skipped, never sent in a
burst. Each beat has a deadline of one interval (counted from its slot: it is over by the next slot, so a slow
daemon cannot push the schedule back). Nothing the program's calls do (a slow or blocked command, a busy
event loop) shares this thread or this channel, so nothing they do can delay a beat.

There is only ever one loop per client: the thread follows one target at a time, and a new session retargets it.

With a liveness timeout, a slot is skipped while the program has made no call (and no `keepalive()`) for longer
than that: a frozen control loop lets its session lapse, and the daemon stops the robot, although the process
lives. A call in progress counts as alive until it returns: a blocking `go_for` or `move_straight` is the program
waiting on the daemon, which ends the move itself (at its end, on `Stop`, or when the call is cancelled), so it must
not be cut short for taking longer than the timeout; the idle time starts when the call returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from rover_safety.api import robot_pb2

from . import calls
from .auth import Token
from .errors import ClientError, is_session_expired

log = logging.getLogger("rover_safety.client")

THREAD_NAME = "rover-safety-heartbeat"
BEATS_PER_WINDOW = 5


class Liveness:
    """When the program last showed it is alive: a call made or in progress, or `keepalive()`."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._busy = 0

    def touch(self) -> None:
        """The program is alive now."""
        self._last = time.monotonic()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A call is in progress: the program counts as alive until it returns (then the idle time starts)."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._last = time.monotonic()

    def idle(self, now: float) -> float:
        """Seconds since the program last showed it is alive (0 while a call is in progress)."""
        with self._lock:
            return 0.0 if self._busy else max(0.0, now - self._last)

    def lapsed(self, now: float) -> bool:
        """Whether the program has been idle longer than the liveness timeout."""
        return self.timeout is not None and self.idle(now) > self.timeout


@dataclass
class _Target:
    session_id: str
    window: float
    first: float
    next_slot: int = 1
    resume: bool = False
    last_ok: float = 0.0
    paused: bool = False
    # Built once per session: the heartbeat channel only serializes it, never changes it.
    beat_request: robot_pb2.SendSessionHeartbeatRequest = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.beat_request = robot_pb2.SendSessionHeartbeatRequest(id=self.session_id)

    @property
    def interval(self) -> float:
        return self.window / BEATS_PER_WINDOW


class _NoToken(grpc.RpcError):
    """The heartbeat channel could not authenticate (already logged): this slot is lost."""


# (session id, why) -> None: the loop found the session over (expired on the daemon, or let lapse by liveness).
OnEnded = Callable[[str, str], None]
# (old id, new id, window) -> None: a resume after a transient failure returned another session.
OnReplaced = Callable[[str, str, float], None]


class Heartbeater:
    """The heartbeat thread of one client."""

    def __init__(self, channel_factory: Callable[[float], grpc.Channel], token: Token, liveness: Liveness,
                 on_ended: OnEnded, on_replaced: OnReplaced) -> None:
        self._factory = channel_factory
        self._token = token
        self._liveness = liveness
        self._on_ended = on_ended
        self._on_replaced = on_replaced
        self._cond = threading.Condition()
        self._target: _Target | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._channel: grpc.Channel | None = None
        self._beat_rpc: Callable[..., object] | None = None
        self._start_rpc: Callable[..., robot_pb2.StartSessionResponse] | None = None

    # --- the program's side ------------------------------------------------------------------------------------

    def follow(self, session_id: str, window: float, started: float | None = None) -> None:
        """Heartbeat `session_id` from now on (its slots counted from `started`), instead of any other."""
        with self._cond:
            if self._stopping:
                return
            first = time.monotonic() if started is None else started
            self._target = _Target(session_id, window, first, last_ok=first)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unfollow(self, session_id: str | None = None) -> None:
        """Stop heartbeating `session_id` (any session if None); the thread waits for the next one."""
        with self._cond:
            if self._target is not None and session_id in (None, self._target.session_id):
                self._target = None
                self._cond.notify_all()

    def stop(self, timeout: float) -> None:
        """End the thread (waits up to `timeout` s for a beat in flight, whose deadline is one interval)."""
        with self._cond:
            self._stopping = True
            self._target = None
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the thread ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and self._target is None:
                        self._cond.wait()
                    if self._stopping:
                        return
                    t = self._target
                    assert t is not None
                    prepared = self._channel is not None
                    if prepared:
                        now = time.monotonic()
                        due = t.first + t.next_slot * t.interval
                        if now < due:
                            self._cond.wait(due - now)
                            continue
                        slot = max(t.next_slot, int((now - t.first) // t.interval))
                        t.next_slot = slot + 1
                        # The beat must be over by the next slot, so a slow one cannot push the schedule back.
                        deadline = max(t.interval / 4, t.first + t.next_slot * t.interval - now)
                if not prepared:
                    self._prepare(t)  # the channel and its token, before the first slot is due (outside the lock)
                    continue
                self._slot(t, now, deadline)
        except Exception:  # a bug here must not pass silently: the session would lapse
            log.exception("rover-safety client: the heartbeat loop failed; the session will lapse")
        finally:
            if self._channel is not None:
                self._channel.close()

    def _rpcs(self, window: float) -> tuple[Callable[..., object], Callable[..., robot_pb2.StartSessionResponse]]:
        if self._beat_rpc is None or self._start_rpc is None:
            self._channel = self._factory(window)
            beat, start = calls.heartbeat(""), calls.start_session()
            self._beat_rpc = self._channel.unary_unary(
                beat.path, request_serializer=type(beat.request).SerializeToString,
                response_deserializer=beat.response.FromString)
            self._start_rpc = self._channel.unary_unary(
                start.path, request_serializer=type(start.request).SerializeToString,
                response_deserializer=start.response.FromString)
        return self._beat_rpc, self._start_rpc

    def _prepare(self, t: _Target) -> None:
        self._rpcs(t.window)
        if self._token.enabled and self._token.value is None:
            self._authenticate(t)

    def _authenticate(self, t: _Target) -> bool:
        assert self._channel is not None
        try:
            self._token.renew_sync(self._channel, self._token.value, timeout=max(t.interval, 1.0))
            return True
        except ClientError as exc:
            log.warning("rover-safety client: heartbeat channel: %s", exc)
            return False

    def _is_current(self, t: _Target) -> bool:
        with self._cond:
            return self._target is t and not self._stopping

    def _slot(self, t: _Target, now: float, deadline: float) -> None:
        if self._liveness.lapsed(now):
            if not t.paused:
                t.paused = True
                log.warning("rover-safety client: no call for %.2f s (liveness_timeout %.2f s): heartbeats stop, "
                            "so the session lapses and the robot stops", self._liveness.idle(now),
                            self._liveness.timeout or 0.0)
            if now - t.last_ok >= t.window:
                self._end(t, f"the program made no call for longer than liveness_timeout="
                             f"{self._liveness.timeout:g} s, so heartbeats stopped and the session lapsed")
            return
        if t.paused:
            t.paused = False
            log.info("rover-safety client: the program is alive again; heartbeats resume")
        if t.resume:
            self._resume(t, deadline)
        else:
            self._beat(t, deadline)

    def _call(self, t: _Target, method: Callable[..., object], request: object, deadline: float) -> object:
        """One call on the heartbeat channel with this channel's token; renews the token on UNAUTHENTICATED."""
        if self._token.enabled and self._token.value is None and not self._authenticate(t):
            raise _NoToken()
        try:
            return method(request, metadata=self._token.metadata(), timeout=deadline)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAUTHENTICATED and self._token.enabled:
                self._token.value = None  # authenticate again before the next slot's call
            raise

    def _beat(self, t: _Target, deadline: float) -> None:
        beat, _ = self._rpcs(t.window)
        try:
            self._call(t, beat, t.beat_request, deadline)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if is_session_expired(exc):
                self._end(t, "a heartbeat was refused: the daemon no longer knows the session")
                return
            if code == grpc.StatusCode.UNAVAILABLE:
                t.resume = True  # the daemon may be back with the session, or without it: ask at the next slot
            log.debug("rover-safety client: heartbeat failed: %s", exc)
            return
        t.last_ok = time.monotonic()

    def _resume(self, t: _Target, deadline: float) -> None:
        _, start = self._rpcs(t.window)
        try:
            reply = self._call(t, start, robot_pb2.StartSessionRequest(resume=t.session_id), deadline)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                t.resume = False
            log.debug("rover-safety client: resuming the session failed: %s", exc)
            return
        assert isinstance(reply, robot_pb2.StartSessionResponse)
        t.resume = False
        t.last_ok = time.monotonic()
        if reply.id == t.session_id:
            log.info("rover-safety client: session resumed after a transient failure")
            return
        if self._is_current(t):
            self._on_replaced(t.session_id, reply.id, calls.heartbeat_window(reply, t.window))

    def _end(self, t: _Target, why: str) -> None:
        with self._cond:
            if self._target is not t:
                return
            self._target = None
        self._on_ended(t.session_id, why)
