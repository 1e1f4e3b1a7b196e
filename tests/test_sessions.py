"""The session manager on a fake clock: expiry, resume, owner check, last user wins, no others, close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from rover_safety.sessions import (
    NIL,
    LoopHooks,
    NoSession,
    Session,
    SessionEvent,
    SessionExpired,
    SessionManager,
    StopReport,
    TooManySessions,
    session_context,
)
from rover_safety.sessions.stopping import STOP_TIMEOUT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Thing:
    """A resource that records its stops; it can be told to hang or fail."""

    def __init__(self, name: str, hang: threading.Event | None = None, fail: bool = False) -> None:
        self.name = name
        self.stops = 0
        self.forced = 0
        self.hang, self.fail = hang, fail

    def stop(self) -> bool:
        if self.hang is not None:
            self.hang.wait(5)
        if self.fail:
            raise OSError("bridge not answering")
        self.stops += 1
        return True

    def force_off(self) -> None:
        self.forced += 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def things() -> dict[str, Thing]:
    return {n: Thing(n) for n in ("left", "right", "base", "arm")}


@pytest.fixture
def events() -> list[SessionEvent]:
    return []


@pytest.fixture
def manager(clock: Clock, things: dict[str, Thing], events: list[SessionEvent]) -> Iterator[SessionManager]:
    m = SessionManager(things, 2.0, clock=clock, on_event=events.append, hooks=LoopHooks(autostart=False))
    yield m
    m.close()


def drive(manager: SessionManager, session: Session, name: str) -> None:
    with session_context(session):
        manager.run_monitored(name, lambda: None)


def expire(manager: SessionManager) -> list[StopReport]:
    reports = manager.expire_due()
    for report in reports:
        assert report.wait(2), "stops did not finish"
    return reports


def test_session_expires_exactly_at_its_deadline_and_stops_what_it_drove(
    manager: SessionManager, clock: Clock, things: dict[str, Thing], events: list[SessionEvent]
) -> None:
    session = manager.start(owner="host-a", peer="ipv4:10.0.0.2:5000")
    drive(manager, session, "left")
    clock.now += 1.999
    assert expire(manager) == []
    assert things["left"].stops == 0
    clock.now += 0.001
    (report,) = expire(manager)
    assert report.session is session and report.reason == "expired"
    assert report.deadline == pytest.approx(1002.0)
    assert things["left"].stops == 1
    assert [t.stops for n, t in things.items() if n != "left"] == [0, 0, 0]
    expired = [e for e in events if e.kind == "expired"]
    assert len(expired) == 1 and expired[0].resources == ("left",) and expired[0].moving == ("left",)
    assert expired[0].peer == "ipv4:10.0.0.2:5000"


def test_heartbeats_push_the_deadline_and_only_the_last_window_counts(
    manager: SessionManager, clock: Clock, things: dict[str, Thing]
) -> None:
    session = manager.start(owner="a")
    drive(manager, session, "left")
    for _ in range(10):
        clock.now += 1.5
        manager.find_by_id(session.id, "a")
        assert expire(manager) == []
    clock.now += 2.0
    assert len(expire(manager)) == 1
    assert things["left"].stops == 1


def test_heartbeat_at_or_after_the_deadline_is_refused_even_before_expiry_ran(
    manager: SessionManager, clock: Clock, things: dict[str, Thing]
) -> None:
    session = manager.start(owner="a")
    drive(manager, session, "left")
    clock.now += 2.0  # the deadline itself: the loop has not run yet
    with pytest.raises(SessionExpired):
        manager.find_by_id(session.id, "a")
    assert len(expire(manager)) == 1
    assert things["left"].stops == 1


def test_unknown_and_foreign_sessions_look_the_same(manager: SessionManager) -> None:
    session = manager.start(owner="host-a")
    with pytest.raises(SessionExpired):
        manager.find_by_id(session.id, "host-b")
    with pytest.raises(SessionExpired):
        manager.find_by_id("no-such-id", "host-a")
    assert manager.find_by_id(session.id, "host-a") is session


def test_resume_returns_the_live_session_of_the_same_owner_only(manager: SessionManager, clock: Clock) -> None:
    session = manager.start(owner="a")
    clock.now += 1.5
    assert manager.resume(session.id, owner="a") is session
    clock.now += 1.5  # alive only because resume counted as a heartbeat
    assert manager.find_by_id(session.id, "a") is session
    other = manager.resume(session.id, owner="b")
    assert other is not session and other.owner == "b"
    clock.now += 5
    expire(manager)
    fresh = manager.resume(session.id, owner="a")
    assert fresh.id != session.id


def test_last_user_wins_and_expiry_stops_no_others(manager: SessionManager, clock: Clock,
                                                   things: dict[str, Thing]) -> None:
    a = manager.start(owner="a")
    b = manager.start(owner="b")
    drive(manager, a, "left")
    drive(manager, a, "right")
    drive(manager, b, "right")  # b takes right over
    drive(manager, b, "arm")
    clock.now += 1.0
    manager.find_by_id(b.id, "b")
    clock.now += 1.0
    (report,) = expire(manager)
    assert report.session is a
    assert report.resources == ("left",)
    assert (things["left"].stops, things["right"].stops, things["arm"].stops) == (1, 0, 0)
    assert manager.last_user("right") == b.id


def test_nil_id_only_disassociates(manager: SessionManager, clock: Clock, things: dict[str, Thing]) -> None:
    a = manager.start(owner="a")
    drive(manager, a, "left")
    manager.associate_resource(NIL, "left")
    assert manager.last_user("left") is None
    clock.now += 3
    (report,) = expire(manager)
    assert report.resources == () and things["left"].stops == 0


def test_sessionless_motion_is_refused_unless_allowed(manager: SessionManager, things: dict[str, Thing],
                                                      events: list[SessionEvent]) -> None:
    with pytest.raises(NoSession, match="allow_unmonitored_motion"):
        manager.safety_monitor_resource_name("left")
    manager.allow_unmonitored_motion = True
    a = manager.start(owner="a")
    drive(manager, a, "left")
    manager.safety_monitor(things["left"])  # no session in context: left becomes unmonitored
    assert manager.last_user("left") is None
    (warning,) = [e for e in events if e.kind == "unmonitored"]
    assert warning.resources == ("left",) and f"session {a.id} monitored it until now" in warning.detail
    manager.safety_monitor_resource_name("left")  # still unmonitored: no second warning
    assert sum(e.kind == "unmonitored" for e in events) == 1
    drive(manager, a, "left")
    manager.safety_monitor_resource_name("left")  # unmonitored again after a session drove it: warned again
    assert sum(e.kind == "unmonitored" for e in events) == 2


def test_expired_session_cannot_claim_resources(manager: SessionManager, clock: Clock) -> None:
    a = manager.start(owner="a")
    clock.now += 2.5
    with pytest.raises(SessionExpired):
        drive(manager, a, "left")


def test_command_racing_its_sessions_expiry_is_stopped_afterwards(manager: SessionManager, clock: Clock,
                                                                  things: dict[str, Thing]) -> None:
    a = manager.start(owner="a")

    def command_during_which_the_session_expires() -> None:
        clock.now += 2.5
        expire(manager)

    with session_context(a):
        manager.run_monitored("left", command_during_which_the_session_expires)
    assert things["left"].stops == 2  # once by the expiry, once after the command that may have set the outputs


def test_explicit_end_stops_at_once_and_is_idempotent(manager: SessionManager, things: dict[str, Thing],
                                                      events: list[SessionEvent]) -> None:
    a = manager.start(owner="a")
    drive(manager, a, "base")
    report = manager.end(a.id, "b")
    assert report is None  # a foreign owner cannot close it
    report = manager.end(a.id, "a")
    assert report is not None and report.wait(2)
    assert report.reason == "closed" and things["base"].stops == 1
    assert manager.end(a.id, "a") is None
    assert manager.end("unknown", "a") is None
    assert [e.kind for e in events] == ["started", "closed"]


def test_session_limit(clock: Clock, things: dict[str, Thing]) -> None:
    m = SessionManager(things, 2.0, clock=clock, max_sessions=3, hooks=LoopHooks(autostart=False))
    for _ in range(3):
        m.start()
    with pytest.raises(TooManySessions, match="limit 3"):
        m.start()
    clock.now += 3
    m.expire_due()
    m.start()
    m.close()


def test_new_window_applies_from_the_next_heartbeat(manager: SessionManager, clock: Clock,
                                                    things: dict[str, Thing]) -> None:
    a = manager.start(owner="a")
    drive(manager, a, "left")
    manager.set_heartbeat_window(0.5)
    assert a.window == 2.0
    clock.now += 1.0
    manager.find_by_id(a.id, "a")  # from now on the window is 0.5 s
    assert a.window == 0.5
    clock.now += 0.5
    (report,) = expire(manager)
    assert report.deadline == pytest.approx(1001.5)
    assert manager.start().window == 0.5


def test_a_session_started_with_its_own_window_keeps_it(manager: SessionManager, clock: Clock) -> None:
    own = manager.start(5.0, owner="a")
    manager.set_heartbeat_window(0.5)
    clock.now += 4.0
    manager.find_by_id(own.id, "a")
    assert own.window == 5.0 and own.deadline == pytest.approx(clock.now + 5.0)


def test_hung_or_failing_stop_is_forced_off_and_does_not_block_others(clock: Clock, events: list[SessionEvent]) -> None:
    release = threading.Event()
    hung, failing, fine = Thing("hung", hang=release), Thing("failing", fail=True), Thing("fine")
    m = SessionManager({t.name: t for t in (hung, failing, fine)}, 1.0, clock=clock, on_event=events.append,
                       stop_timeout=0.5, hooks=LoopHooks(autostart=False))  # ample for "fine"; hung waits
    a = m.start(owner="a")
    for name in ("hung", "failing", "fine"):
        drive(m, a, name)
    b = m.start(owner="b")
    clock.now += 0.5
    m.find_by_id(b.id, "b")  # heartbeats go on while a's stops hang
    clock.now += 0.5
    (report,) = m.expire_due()
    assert m.find_by_id(b.id, "b") is b  # the table lock is not held by the stop path
    assert report.wait(2)
    assert fine.stops == 1
    assert (hung.forced, failing.forced, fine.forced) == (1, 1, 0)
    assert set(report.failed) == {"hung", "failing"} and "timed out" in report.failed["hung"]
    kinds = [e.kind for e in events]
    assert kinds.count("stop_failed") == 2 and kinds.count("forced_off") == 2
    release.set()
    m.close()


def test_close_stops_the_manager_without_expiring_sessions(things: dict[str, Thing],
                                                           events: list[SessionEvent]) -> None:
    m = SessionManager(things, 1.0, on_event=events.append)  # a real clock: a window no stall before close() spans
    a = m.start(owner="a")
    drive(m, a, "left")
    m.close()
    time.sleep(1.3)  # past the window: an expiry close() failed to prevent would have stopped left by now
    assert things["left"].stops == 0
    assert [e.kind for e in events] == ["started"]
    with pytest.raises(RuntimeError, match="closed"):
        m.start()


def test_real_clock_expiry_is_never_early_and_promptly_late(things: dict[str, Thing],
                                                            events: list[SessionEvent]) -> None:
    """The deadline thread on the real monotonic clock: a generous upper bound, never before the deadline."""
    m = SessionManager(things, 0.1, on_event=events.append)
    try:
        sessions = [m.start(owner=str(i)) for i in range(4)]
        for s, name in zip(sessions, things, strict=True):
            drive(m, s, name)
        deadline = time.monotonic() + 2
        while sum(e.kind == "expired" for e in events) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        expired = [e for e in events if e.kind == "expired"]
        assert len(expired) == 4
        for event in expired:
            # never early; late by at most the stop path's own bound (past it a stop counts as hung)
            assert event.latency is not None and 0 <= event.latency < STOP_TIMEOUT
    finally:
        m.close()


class Cuttable(Thing):
    """A resource whose power the deadline thread can cut at once; it records the order of cut and stop."""

    def __init__(self, name: str, cut_fails: bool = False) -> None:
        super().__init__(name)
        self.calls: list[tuple[str, str]] = []
        self.cut_fails = cut_fails

    def cut_power(self) -> None:
        self.calls.append(("cut", threading.current_thread().name))
        if self.cut_fails:
            raise OSError("pigpiod hiccup")

    def stop(self) -> bool:
        self.calls.append(("stop", threading.current_thread().name))
        return super().stop()


def test_the_expiring_thread_cuts_power_itself_before_the_full_stop(clock: Clock) -> None:
    fine, flaky = Cuttable("fine"), Cuttable("flaky", cut_fails=True)
    m = SessionManager({"fine": fine, "flaky": flaky}, 1.0, clock=clock, hooks=LoopHooks(autostart=False))
    a = m.start(owner="a")
    drive(m, a, "fine")
    drive(m, a, "flaky")
    clock.now += 1.0
    (report,) = m.expire_due()
    me = threading.current_thread().name
    assert fine.calls[0] == ("cut", me) and flaky.calls[0] == ("cut", me)  # done before expire_due returned
    assert report.wait(2)
    assert [c for c, _ in fine.calls] == ["cut", "stop"]
    assert [c for c, _ in flaky.calls] == ["cut", "stop"]  # a failed cut still gets its full stop
    assert all(thread.startswith("stop") for c, thread in fine.calls + flaky.calls if c == "stop")
    assert report.failed == {}
    m.close()


def test_a_refused_command_does_not_take_the_resource_from_its_driver(
    manager: SessionManager, clock: Clock, things: dict[str, Thing]
) -> None:
    a, b = manager.start(owner="a"), manager.start(owner="b")
    drive(manager, a, "left")

    def refused() -> None:
        raise ValueError("power_pct must be between -1 and 1")

    with session_context(b), pytest.raises(ValueError):
        manager.run_monitored("left", refused)
    assert manager.last_user("left") == a.id  # still a's: a's expiry must stop it
    clock.now += 1.0
    manager.find_by_id(b.id, "b")
    clock.now += 1.0
    (report,) = expire(manager)
    assert report.session is a and report.resources == ("left",) and things["left"].stops == 1


def test_a_refused_command_stops_what_its_previous_user_left_behind(manager: SessionManager, clock: Clock,
                                                                    things: dict[str, Thing]) -> None:
    a, b = manager.start(owner="a"), manager.start(owner="b")
    drive(manager, a, "left")

    def a_expires_then_refused() -> None:
        clock.now += 1.0  # a's deadline; b heartbeated a second ago
        expire(manager)  # a's expiry: left was b's for the moment, so it was not a's to stop
        raise ValueError("refused")

    clock.now += 1.0
    manager.find_by_id(b.id, "b")
    with session_context(b), pytest.raises(ValueError):
        manager.run_monitored("left", a_expires_then_refused)
    assert things["left"].stops == 1 and manager.last_user("left") is None


def test_driving_a_base_claims_its_motors_and_expiry_stops_only_what_is_still_owned(
    clock: Clock, things: dict[str, Thing], events: list[SessionEvent]
) -> None:
    m = SessionManager(things, 2.0, parts={"base": ("left", "right")}, clock=clock, on_event=events.append,
                       hooks=LoopHooks(autostart=False))
    a, b = m.start(owner="a"), m.start(owner="b")
    drive(m, a, "base")
    assert (m.last_user("left"), m.last_user("right")) == (a.id, a.id)
    drive(m, b, "left")  # b takes one wheel over
    clock.now += 1.0
    m.find_by_id(b.id, "b")
    clock.now += 1.0
    (report,) = expire(m)
    assert report.session is a and report.resources == ("right",)  # not the base: that would stop b's wheel
    assert (things["base"].stops, things["left"].stops, things["right"].stops) == (0, 0, 1)
    c = m.start(owner="c")
    drive(m, c, "base")
    clock.now += 2.0
    for report in expire(m):
        if report.session is c:
            assert report.resources == ("base",)  # all its motors still c's: the base stops them, once
    m.close()
