"""The session table and the stop path.

Each session's deadline sits in a heap on the monotonic clock; one thread sleeps until the earliest deadline and, the
moment it passes, stops every resource that session was the last to drive, and no others. Heartbeats only move a
deadline later, so they never wake that thread. This module imports nothing of gRPC or GPIO: resources are things with
a `name` and a `stop()`, so the whole table could move into its own real-time process.
"""

from __future__ import annotations

import contextvars
import heapq
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

NIL = ""  # the nil session id: associating it only disassociates
MAX_SESSIONS = 1024
STOP_TIMEOUT = 0.25  # a driver's stop() that takes longer than this is treated as hung and its pins forced off

T = TypeVar("T")


class Stoppable(Protocol):
    """All the session manager knows of a resource."""

    @property
    def name(self) -> str: ...

    def stop(self) -> bool | None:
        """Stop the resource; return True if it was moving (None when unknown)."""


@runtime_checkable
class CutPower(Protocol):
    """A resource whose power can be cut at once (PWM duty 0) without waiting for its driver's lock.

    The deadline thread does this itself the moment a session expires, before handing the full stop() to a stop
    thread: one thread wake-up fewer between the deadline and the power going off.
    """

    def cut_power(self) -> None: ...


@runtime_checkable
class ForceOff(Protocol):
    """A resource that can drive its outputs off without its driver's usual path (used when stop() fails)."""

    def force_off(self) -> None: ...


class SessionError(Exception):
    """Base of the errors a client can cause."""


class SessionExpired(SessionError):
    """Unknown, expired, closed or owned by someone else: deliberately indistinguishable."""

    def __init__(self) -> None:
        super().__init__("SESSION_EXPIRED")


class TooManySessions(SessionError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"too many live sessions (limit {limit}); close one or wait for one to expire")


class NoSession(SessionError):
    """A monitored call without a session while unmonitored motion is not allowed."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"refusing to move {name!r} without a session: this machine only moves while a client heartbeats "
            "(start a session, or set network.sessions.allow_unmonitored_motion: true)"
        )


@dataclass(eq=False)
class Session:
    id: str
    owner: str
    peer: str
    window: float
    deadline: float
    ended: str | None = None  # None while live, else "expired" or "closed"
    own_window: bool = False  # started with a window of its own, which a reload does not change
    queued: float = 0.0  # the deadline this session is filed under in the heap

    def live_at(self, now: float) -> bool:
        return self.ended is None and now < self.deadline


@dataclass(frozen=True)
class SessionEvent:
    """Something the operator should see: started, resumed, expired, closed, stop_failed, forced_off, unmonitored."""

    kind: str
    session_id: str
    peer: str = ""
    window: float = 0.0
    resources: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    latency: float | None = None  # seconds from the deadline (or close) to the last output off
    detail: str = ""


@dataclass(eq=False)
class StopReport:
    """The outcome of ending one session: which resources were stopped, how, and how late."""

    session: Session
    reason: str
    deadline: float
    resources: tuple[str, ...]  # what to stop: a base stopped whole stands for its motors
    stopped: tuple[str, ...] = ()  # everything that stops, the motors of a whole base included (for the log)
    off_at: dict[str, float] = field(default_factory=dict)
    moving: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    cut_failed: dict[str, str] = field(default_factory=dict)  # cut_power() at the deadline raised
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def latency(self) -> float | None:
        return max(self.off_at.values()) - self.deadline if self.off_at else None

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("rover_safety_session", default=None)


def to_context(session: Session | None) -> contextvars.Token[Session | None]:
    """Attach a session to the current request's context; reset with the returned token."""
    return _current.set(session)


def from_context() -> Session | None:
    return _current.get()


@contextmanager
def session_context(session: Session | None) -> Iterator[None]:
    token = to_context(session)
    try:
        yield
    finally:
        _current.reset(token)


class SessionManager:
    """Holds client sessions, their deadlines, and which session last drove each resource."""

    def __init__(
        self,
        resources: Mapping[str, Stoppable],
        heartbeat_window: float,
        *,
        parts: Mapping[str, Sequence[str]] | None = None,
        on_event: Callable[[SessionEvent], None] = lambda event: None,
        allow_unmonitored_motion: bool = False,
        max_sessions: int = MAX_SESSIONS,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        tick: Callable[[], None] | None = None,
        tick_interval: float | None = None,
        on_crash: Callable[[BaseException], None] = lambda exc: None,
        thread_setup: Callable[[], None] = lambda: None,
        autostart: bool = True,
    ) -> None:
        self.heartbeat_window = heartbeat_window
        self.allow_unmonitored_motion = allow_unmonitored_motion
        self._resources: dict[str, Stoppable] = {}
        self._cutters: dict[str, Callable[[], None]] = {}
        self._parts: dict[str, tuple[str, ...]] = {}
        self._set_resources(resources, parts)
        self._on_event = on_event
        self._max = max_sessions
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._tick, self._tick_interval = tick, tick_interval
        self._on_crash = on_crash
        self._thread_setup = thread_setup  # run first in the deadline thread and each stop thread (e.g. real-time)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sessions: dict[str, Session] = {}
        self._heap: list[tuple[float, int, Session]] = []
        self._seq = 0
        self._last_user: dict[str, str] = {}  # resource name -> session id
        self._unmonitored: set[str] = set()  # moved without a session since their last monitored use
        self._closed = False
        self._stoppers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="stop", initializer=thread_setup)
        self._watchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stop-watch")
        self._thread: threading.Thread | None = None
        if autostart:
            self._thread = threading.Thread(target=self._run, name="session-deadlines", daemon=True)
            self._thread.start()

    # --- the seeds' API -----------------------------------------------------------------------

    def start(self, heartbeat_window: float | None = None, *, owner: str = "", peer: str = "") -> Session:
        """Start a session that must be heard from within its window."""
        now = self._clock()
        with self._lock:
            self._check_open()
            if len(self._sessions) >= self._max:
                raise TooManySessions(self._max)
            window = heartbeat_window or self.heartbeat_window
            session = Session(str(uuid.uuid4()), owner, peer, window, now + window, own_window=bool(heartbeat_window))
            self._sessions[session.id] = session
            self._file(session)
        self._on_event(SessionEvent("started", session.id, peer, window))
        return session

    def resume(self, session_id: str, *, owner: str = "", peer: str = "") -> Session:
        """StartSession with `resume`: the live session of this owner (a heartbeat), else a new one."""
        try:
            session = self.find_by_id(session_id, owner)
        except SessionExpired:
            return self.start(owner=owner, peer=peer)
        self._on_event(SessionEvent("resumed", session.id, peer or session.peer, session.window))
        return session

    def all(self) -> list[Session]:
        now = self._clock()
        with self._lock:
            return [s for s in self._sessions.values() if s.live_at(now)]

    def find_by_id(self, session_id: str, owner_id: str = "") -> Session:
        """Find a live session of this owner and count it as a heartbeat; raise SessionExpired otherwise.

        A heartbeat that arrives at or after the deadline is refused even if the expiry has not run yet.
        """
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner_id or not session.live_at(now):
                raise SessionExpired()
            if not session.own_window:
                session.window = self.heartbeat_window
            session.deadline = now + session.window
            if session.deadline < session.queued:  # the window shrank: file the earlier deadline
                self._file(session)
            return session

    def associate_resource(self, session_id: str, name: str) -> None:
        """Record that this session drove `name` last; the nil id only disassociates."""
        with self._lock:
            if session_id == NIL:
                self._last_user.pop(name, None)
                return
            session = self._sessions.get(session_id)
            if session is None or not session.live_at(self._clock()):
                raise SessionExpired()
            self._last_user[name] = session_id

    def safety_monitor(self, resource: Stoppable) -> None:
        self.safety_monitor_resource_name(resource.name)

    def safety_monitor_resource_name(self, name: str) -> None:
        """Monitor `name` on behalf of the session in the current context (see `to_context`)."""
        self._claim((name,), from_context())

    def close(self) -> None:
        """Stop the manager without expiring any session."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._stoppers.shutdown(wait=False, cancel_futures=True)
        self._watchers.shutdown(wait=False, cancel_futures=True)

    # --- beyond the seeds ---------------------------------------------------------------------

    def run_monitored(self, name: str, command: Callable[[], T]) -> T:
        """Run a command that moves `name` (and its parts) for the session in context; make sure it ends with it.

        The session becomes the last user of `name` and of every part of it (a base's motors) before the command
        runs. If the command fails, the resources go back to their previous users, so a refused command never takes
        a running motor away from the session that drives it. If the session ended while the command ran, the
        expiry's stop may have come before the command set the outputs: stopping again afterwards closes that race
        (unless another session has taken the resource over).
        """
        session = from_context()
        names = (name, *self._parts.get(name, ()))
        previous = self._claim(names, session)
        try:
            result = command()
        except BaseException:
            self._give_back(names, session, previous)
            raise
        finally:
            if session is not None and session.ended is not None:
                with self._lock:
                    taken_over = self._last_user.get(name, session.id) != session.id
                resource = self._resources.get(name)
                if resource is not None and not taken_over:
                    resource.stop()
        return result

    def _claim(self, names: tuple[str, ...], session: Session | None) -> dict[str, str | None]:
        """Make `session` (None: nobody) the last user of `names`; return who was before."""
        if session is None and not self.allow_unmonitored_motion:
            raise NoSession(names[0])
        with self._lock:
            if session is not None and (
                self._sessions.get(session.id) is not session or not session.live_at(self._clock())
            ):
                raise SessionExpired()
            previous = {n: self._last_user.get(n) for n in names}
            newly_unmonitored = []
            for n in names:
                if session is not None:
                    self._last_user[n] = session.id
                    self._unmonitored.discard(n)
                else:
                    self._last_user.pop(n, None)
                    if n not in self._unmonitored:
                        self._unmonitored.add(n)
                        newly_unmonitored.append(n)
        for n in newly_unmonitored:  # once each time a resource becomes unmonitored, not at every command
            was = f" (session {previous[n]} monitored it until now)" if previous[n] else ""
            self._on_event(SessionEvent("unmonitored", NIL, resources=(n,), detail=f"{n} moves with no session "
                                        f"watching it{was}"))
        return previous

    def _give_back(self, names: tuple[str, ...], session: Session | None, previous: dict[str, str | None]) -> None:
        """After a failed command the resources go back to their previous users; one whose user ended meanwhile is
        stopped, since that session's expiry could not stop what this command had claimed."""
        mine = None if session is None else session.id
        orphans = []
        with self._lock:
            for n in names:
                if self._last_user.get(n) != mine:
                    continue  # another command has claimed it since
                before = previous[n]
                if before is not None and before in self._sessions:
                    self._last_user[n] = before
                    continue
                self._last_user.pop(n, None)
                if before is not None:
                    orphans.append(n)
        for n in orphans:
            resource = self._resources.get(n)
            if resource is not None:
                resource.stop()

    def end(self, session_id: str, owner_id: str = "") -> StopReport | None:
        """Close a session now and stop its resources; None if it was unknown, foreign or already ended."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner_id or not session.live_at(now):
                return None
            report = self._retire(session, "closed", now)
        self._cut(report)
        self._dispatch(report)
        return report

    def set_heartbeat_window(self, window: float) -> None:
        """Apply a new window to new sessions now and to live sessions from their next heartbeat."""
        with self._lock:
            self.heartbeat_window = window

    def replace_resources(
        self, resources: Mapping[str, Stoppable], parts: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Swap in a new resource table (after a reload); forget sessions' claims on resources that went away."""
        with self._lock:
            self._set_resources(resources, parts)
            for name in [n for n in self._last_user if n not in resources]:
                del self._last_user[name]

    def last_user(self, name: str) -> str | None:
        with self._lock:
            return self._last_user.get(name)

    def expire_due(self) -> list[StopReport]:
        """Expire every session whose deadline has passed and start stopping its resources (tests call this)."""
        with self._lock:
            reports = self._collect_due(self._clock())
        self._stop(reports)
        return reports

    # --- the deadline loop ----------------------------------------------------------------------

    def _set_resources(self, resources: Mapping[str, Stoppable], parts: Mapping[str, Sequence[str]] | None) -> None:
        """Keep the resources, their parts (a base's motors), and each one's cut_power, looked up once here."""
        self._resources = dict(resources)
        self._parts = {name: tuple(p) for name, p in (parts or {}).items()}
        self._cutters = {n: r.cut_power for n, r in resources.items() if isinstance(r, CutPower)}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the session manager is closed")

    def _file(self, session: Session) -> None:
        """Put the session in the heap under its current deadline (caller holds the lock)."""
        session.queued = session.deadline
        self._seq += 1
        heapq.heappush(self._heap, (session.deadline, self._seq, session))
        if self._heap[0][2] is session:
            self._wake.notify()

    def _collect_due(self, now: float) -> list[StopReport]:
        """Pop every heap entry that is due; expire sessions whose real deadline passed (caller holds the lock)."""
        reports = []
        while self._heap and self._heap[0][0] <= now:
            filed_at, _, session = heapq.heappop(self._heap)
            if session.ended is not None or filed_at != session.queued:
                continue  # ended already, or a stale entry: the session was filed again under an earlier deadline
            if now < session.deadline:
                self._file(session)  # heartbeats moved the deadline later
                continue
            reports.append(self._retire(session, "expired", session.deadline))
        return reports

    def _retire(self, session: Session, reason: str, deadline: float) -> StopReport:
        """End a session and take back its resources (caller holds the lock)."""
        session.ended = reason
        del self._sessions[session.id]
        owned = [n for n, sid in self._last_user.items() if sid == session.id]
        for name in owned:
            del self._last_user[name]
        # A base is stopped whole only while all its motors are still this session's (then they need no stop of
        # their own); if another session has taken one over since, only the motors still this session's stop.
        whole = {n for n in owned if n in self._parts and set(self._parts[n]) <= set(owned)}
        covered = {p for n in whole for p in self._parts[n]}
        names = tuple(n for n in owned if n not in covered and (n not in self._parts or n in whole))
        return StopReport(session, reason, deadline, names, tuple(n for n in owned if n in names or n in covered))

    def _run(self) -> None:
        self._thread_setup()
        next_tick = self._clock()
        try:
            with self._lock:
                while not self._closed:
                    now = self._clock()
                    reports = self._collect_due(now)
                    if reports:
                        self._lock.release()
                        try:
                            self._stop(reports)
                        finally:
                            self._lock.acquire()
                        continue
                    if self._tick is not None and self._tick_interval and now >= next_tick:
                        self._tick()
                        next_tick = now + self._tick_interval
                    wake_at = self._heap[0][0] if self._heap else None
                    if self._tick_interval and self._tick is not None:
                        wake_at = next_tick if wake_at is None else min(wake_at, next_tick)
                    self._wake.wait(None if wake_at is None else max(0.0, wake_at - now))
        except BaseException as exc:  # without this loop nothing expires: the daemon must fail safe
            self._on_crash(exc)
            raise

    # --- the stop path --------------------------------------------------------------------------

    def _stop(self, reports: list[StopReport]) -> None:
        """Cut every expired resource's power here and now, then hand each full stop to the stop threads."""
        for report in reports:
            self._cut(report)
        for report in reports:
            self._dispatch(report)

    def _cut(self, report: StopReport) -> None:
        for name in report.resources:
            cut = self._cutters.get(name)
            if cut is not None:
                try:
                    cut()
                except Exception as exc:  # the stop() that follows tries again; the failure is reported with it
                    report.cut_failed[name] = repr(exc)

    def _dispatch(self, report: StopReport) -> None:
        """Stop the report's resources concurrently, each under a timeout; never under the table lock."""
        futures = []
        for name in report.resources:
            resource = self._resources.get(name)
            if resource is not None:
                futures.append((name, resource, self._stoppers.submit(self._stop_one, report, name, resource)))
        if futures:
            self._watchers.submit(self._watch, report, futures)
        else:  # logging and the status line happen off the deadline thread too
            self._watchers.submit(self._finish, report)

    def _stop_one(self, report: StopReport, name: str, resource: Stoppable) -> None:
        if resource.stop():
            report.moving.append(name)
        report.off_at[name] = self._clock()

    def _watch(self, report: StopReport, futures: list[tuple[str, Stoppable, Future[None]]]) -> None:
        for name, why in report.cut_failed.items():
            self._on_event(SessionEvent("stop_failed", report.session.id, report.session.peer, resources=(name,),
                                        detail=f"cutting the power of {name} at the deadline failed: {why}"))
        wait([f for _, _, f in futures], timeout=self._stop_timeout)
        for name, resource, future in futures:
            if future.done() and future.exception() is None:
                continue
            why = "timed out" if not future.done() else f"failed: {future.exception()!r}"
            report.failed[name] = why
            self._on_event(SessionEvent("stop_failed", report.session.id, report.session.peer, resources=(name,),
                                        detail=f"stop of {name} {why}"))
            self._force(report, name, resource)
        self._finish(report)

    def _force(self, report: StopReport, name: str, resource: Stoppable) -> None:
        if not isinstance(resource, ForceOff):
            return
        try:
            resource.force_off()
        except Exception as exc:  # nothing more this process can do: say so loudly
            self._on_event(SessionEvent("stop_failed", report.session.id, report.session.peer, resources=(name,),
                                        detail=f"forcing {name} off failed too: {exc!r}"))
            return
        report.off_at[name] = self._clock()
        self._on_event(SessionEvent("forced_off", report.session.id, report.session.peer, resources=(name,),
                                    latency=report.off_at[name] - report.deadline,
                                    detail=f"{name} forced off at the pins after its stop {report.failed[name]}"))

    def _finish(self, report: StopReport) -> None:
        s = report.session
        self._on_event(SessionEvent(report.reason, s.id, s.peer, s.window, report.stopped, tuple(report.moving),
                                    report.latency))
        report.done.set()
