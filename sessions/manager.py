"""The session table (Viam's SessionManager): sessions, their deadlines, and which session last drove each resource.

Each session's deadline sits in a heap on the monotonic clock; one thread sleeps until the earliest deadline and, the
moment it passes, stops every resource that session was the last to drive, and no others. Heartbeats only move a
deadline later, so they never wake that thread.
"""

from __future__ import annotations

import collections
import heapq
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .context import from_context
from .errors import ManagerClosed, NoSession, SessionExpired, TooManySessions
from .hooks import LoopHooks
from .resource import Stoppable
from .session import NIL, Session, SessionEvent
from .stopping import STOP_TIMEOUT, StopPath, StopReport

MAX_SESSIONS = 1024
SETTLE_MARGIN = 0.5  # seconds beyond the stop timeout a new command waits for a forced-off resource's stop to settle

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """A monitored command's hold on a resource: who drove it (and its parts) before, to give it back on failure."""

    name: str
    names: tuple[str, ...]
    session: Session | None
    previous: dict[str, str | None]


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
        max_per_owner: int | None = None,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        hooks: LoopHooks | None = None,
    ) -> None:
        hooks = hooks or LoopHooks()
        self.heartbeat_window = heartbeat_window
        self.allow_unmonitored_motion = allow_unmonitored_motion
        self._on_event = on_event
        self._max = max_sessions
        self._max_per_owner = max_per_owner or max_sessions
        self._clock = clock
        self._hooks = hooks
        self._stopper = StopPath(on_event, stop_timeout=stop_timeout, clock=clock, thread_setup=hooks.thread_setup)
        self._parts: dict[str, tuple[str, ...]] = {}
        self._set_resources(resources, parts)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sessions: dict[str, Session] = {}
        self._per_owner: collections.Counter[str] = collections.Counter()
        self._heap: list[tuple[float, int, Session]] = []
        self._seq = 0
        self._last_user: dict[str, str] = {}  # resource name -> session id
        self._unmonitored: set[str] = set()  # moved without a session since their last monitored use
        self._stopping: dict[str, StopReport] = {}  # resource name -> the stop of the session that drove it last
        self._settle_wait = stop_timeout + SETTLE_MARGIN
        self._closed = False
        self._thread: threading.Thread | None = None
        if hooks.autostart:
            self._thread = threading.Thread(target=self._run, name="session-deadlines", daemon=True)
            self._thread.start()

    # --- the session-manager API (Viam's SessionManager: Start, All, FindByID, AssociateResource, Close) -----------

    def start(self, heartbeat_window: float | None = None, *, owner: str = "", peer: str = "") -> Session:
        """Start a session that must be heard from within its window."""
        now = self._clock()
        with self._lock:
            if self._closed:
                raise ManagerClosed()
            if len(self._sessions) >= self._max:
                raise TooManySessions(self._max)
            if self._max_per_owner < self._max and self._per_owner[owner] >= self._max_per_owner:
                raise TooManySessions(self._max_per_owner, f"live sessions of {owner}")
            window = heartbeat_window or self.heartbeat_window
            session = Session(str(uuid.uuid4()), owner, peer, window, now + window, own_window=bool(heartbeat_window),
                              started=now, heard=now)
            self._sessions[session.id] = session
            self._per_owner[owner] += 1
            self._file(session)
        self._on_event(SessionEvent("started", session.id, peer, window))
        return session

    def all(self) -> list[Session]:
        """Every live session."""
        now = self._clock()
        with self._lock:
            return [s for s in self._sessions.values() if s.live_at(now)]

    def owns(self, owner: str, session_id: str) -> bool:
        """Whether `session_id` is a live session of `owner` (read without the lock: a moment's snapshot, for the
        front door's budgets; find_by_id decides)."""
        session = self._sessions.get(session_id)
        return session is not None and session.owner == owner and session.live_at(self._clock())

    def find_by_id(self, session_id: str, owner_id: str = "", *, heard_at: float | None = None) -> Session:
        """Find a live session of this owner and count it as a heartbeat; raise SessionExpired otherwise.

        A heartbeat that arrives at or after the deadline is refused even if the expiry has not run yet. The new
        deadline runs from `heard_at` (when the heartbeat reached the daemon, if the caller knows; at most now), so
        a heartbeat that waited inside the daemon does not stretch its session by that wait.
        """
        now = self._clock()
        heard = now if heard_at is None else min(heard_at, now)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner_id or not session.live_at(now):
                raise SessionExpired()
            window = session.window if session.own_window else self.heartbeat_window
            if window == session.window:  # heartbeats may be handled out of order: never move a deadline earlier
                session.deadline = max(session.deadline, heard + window)
            else:  # a reload changed the window: it applies from this heartbeat on
                session.window, session.deadline = window, heard + window
            session.heard = now
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
        """Monitor `resource` on behalf of the session in the current context (Viam's `session.SafetyMonitor`)."""
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
        self._stopper.close()

    # --- this project's additions: resume, monitored commands, close, reload, and expiry by hand -----------------

    def resume(self, session_id: str, *, owner: str = "", peer: str = "") -> Session:
        """StartSession with `resume`: the live session of this owner (a heartbeat), else a new one."""
        try:
            session = self.find_by_id(session_id, owner)
        except SessionExpired:
            return self.start(owner=owner, peer=peer)
        self._on_event(SessionEvent("resumed", session.id, peer or session.peer, session.window))
        return session

    def run_monitored(self, name: str, command: Callable[[], T]) -> T:
        """Run a command that moves `name` (and its parts) for the session in context; make sure it ends with it.

        The session becomes the last user of `name` and of every part of it (a base's motors) before the command
        runs. If the command fails, the resources go back to their previous users, so a refused command never takes
        a running motor away from the session that drives it. If the session ended while the command ran, the
        expiry's stop may have come before the command set the outputs: stopping again afterwards closes that race
        (unless another session has taken the resource over). A command on a resource whose previous session's stop
        is still under way waits for that stop first (a bounded wait), so the stop never undoes the new command.
        """
        claim = self.claim(name)
        try:
            self.await_stops(self.stops_under_way(claim))
            result = command()
        except BaseException:
            self.give_back(claim)
            raise
        finally:
            if self.ended_meanwhile(claim):
                resource = self._stopper.resource(name)
                if resource is not None:
                    resource.stop()
        return result

    def claim(self, name: str) -> Claim:
        """The first half of run_monitored, for a command that runs elsewhere (awaited, or on another machine):
        the session in context becomes the last user of `name` and its parts; give_back() if the command fails,
        and stop the resource if ended_meanwhile() says so once it is done."""
        session = from_context()
        names = (name, *self._parts.get(name, ()))
        return Claim(name, names, session, self._claim(names, session))

    def give_back(self, claim: Claim) -> None:
        """The command of `claim` failed: its resources go back to whoever drove them before."""
        self._give_back(claim.names, claim.session, claim.previous)

    def ended_meanwhile(self, claim: Claim) -> bool:
        """True if the claim's session ended while its command ran, and nobody else has taken the resource since:
        the command may have set outputs after the session's stop, so it must be stopped again."""
        session = claim.session
        if session is None or session.ended is None:
            return False
        with self._lock:
            return self._last_user.get(claim.name, session.id) == session.id

    def end(self, session_id: str, owner_id: str = "") -> StopReport | None:
        """Close a session now and stop its resources; None if it was unknown, foreign or already ended."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner_id or not session.live_at(now):
                return None
            report = self._retire(session, "closed", now)
        self._stopper.cut(report)
        self._stopper.dispatch(report)
        return report

    def end_driving(self, names: Sequence[str], reason: str = "ended", detail: str = "") -> list[StopReport]:
        """End now every session that drove any of `names` last (e.g. the resources of a sub-part that was lost) and
        stop what each drove, as if it had expired; their clients get SESSION_EXPIRED and start afresh."""
        now = self._clock()
        wanted = set(names)
        with self._lock:
            ids = {sid for name, sid in self._last_user.items() if name in wanted}
            reports = [self._retire(self._sessions[sid], reason, now, detail) for sid in ids if sid in self._sessions]
        self._stopper.stop(reports)
        return reports

    def set_limits(self, max_sessions: int, max_per_owner: int) -> None:
        """At most `max_sessions` live sessions, `max_per_owner` of them one owner's (live ones are kept)."""
        with self._lock:
            self._max, self._max_per_owner = max_sessions, max_per_owner

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

    def snapshot(self) -> tuple[list[Session], dict[str, str]]:
        """Every live session and, for each resource with one, the id of its last user: taken together."""
        now = self._clock()
        with self._lock:
            return [s for s in self._sessions.values() if s.live_at(now)], dict(self._last_user)

    def now(self) -> float:
        """The table's clock (time.monotonic unless a test gave another)."""
        return self._clock()

    def last_user(self, name: str) -> str | None:
        """The id of the session that drove `name` last, if it is still live."""
        with self._lock:
            return self._last_user.get(name)

    def expire_due(self) -> list[StopReport]:
        """Expire every session whose deadline has passed and start stopping its resources (tests call this)."""
        with self._lock:
            reports = self._collect_due(self._clock())
        self._stopper.stop(reports)
        return reports

    # --- claims ----------------------------------------------------------------------------------------------

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

    def stops_under_way(self, claim: Claim) -> list[StopReport]:
        """The stops, still under way on the stop threads, of the sessions that drove the claim's resources before:
        a command must not run before them, or they would undo it (await_stops)."""
        pending: list[StopReport] = []
        with self._lock:
            for n in claim.names:
                report = self._stopping.get(n)
                if report is None:
                    continue
                if report.settled.is_set():
                    del self._stopping[n]
                elif report not in pending:
                    pending.append(report)
        return pending

    def await_stops(self, reports: Sequence[StopReport]) -> None:
        """Wait until each stop has reached the pins (or been forced off), each for a bounded time."""
        for report in reports:
            report.settled.wait(self._settle_wait)

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
            resource = self._stopper.resource(n)
            if resource is not None:
                resource.stop()

    # --- the deadline loop -----------------------------------------------------------------------------------

    def _set_resources(self, resources: Mapping[str, Stoppable], parts: Mapping[str, Sequence[str]] | None) -> None:
        self._stopper.set_resources(resources)
        self._parts = {name: tuple(p) for name, p in (parts or {}).items()}

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

    def _retire(self, session: Session, reason: str, deadline: float, detail: str = "") -> StopReport:
        """End a session and take back its resources (caller holds the lock)."""
        session.ended = reason
        del self._sessions[session.id]
        self._per_owner[session.owner] -= 1
        if self._per_owner[session.owner] <= 0:
            del self._per_owner[session.owner]
        owned = [n for n, sid in self._last_user.items() if sid == session.id]
        for name in owned:
            del self._last_user[name]
        # A base is stopped whole only while all its motors are still this session's (then they need no stop of
        # their own); if another session has taken one over since, only the motors still this session's stop.
        whole = {n for n in owned if n in self._parts and set(self._parts[n]) <= set(owned)}
        covered = {p for n in whole for p in self._parts[n]}
        names = tuple(n for n in owned if n not in covered and (n not in self._parts or n in whole))
        report = StopReport(session, reason, deadline, names, tuple(n for n in owned if n in names or n in covered),
                            detail=detail)
        for name in report.stopped:
            self._stopping[name] = report
        return report

    def _run(self) -> None:
        hooks = self._hooks
        hooks.thread_setup()
        next_tick = self._clock()
        try:
            with self._lock:
                while not self._closed:
                    now = self._clock()
                    reports = self._collect_due(now)
                    if reports:
                        self._lock.release()
                        try:
                            self._stopper.stop(reports)
                        finally:
                            self._lock.acquire()
                        continue
                    if hooks.ticking and now >= next_tick:
                        assert hooks.tick is not None and hooks.tick_interval is not None
                        next_tick = now + hooks.tick_interval
                        self._lock.release()  # the tick (systemd's watchdog ping) must not hold up heartbeats
                        try:
                            hooks.tick()
                        finally:
                            self._lock.acquire()
                        continue
                    wake_at = self._heap[0][0] if self._heap else None
                    if hooks.ticking:
                        wake_at = next_tick if wake_at is None else min(wake_at, next_tick)
                    self._wake.wait(None if wake_at is None else max(0.0, wake_at - now))
        except BaseException as exc:  # without this loop nothing expires: the daemon must fail safe
            hooks.on_crash(exc)
            raise
