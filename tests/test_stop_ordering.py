"""A session's stop that is still under way never undoes the command of the session that takes the resource next."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from rover_safety.sessions import LoopHooks, SessionManager, session_context

SLOW_STOP = 0.15  # seconds the stop thread's release takes: long enough for a new command to come first


class SlowMotor:
    """A motor whose cut_power is instant and whose full stop takes a while, like a release behind a busy bus."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.power = 0.0
        self.lock = threading.Lock()

    def cut_power(self) -> None:
        self.power = 0.0

    def set_power(self, power: float) -> None:
        with self.lock:
            self.power = power

    def stop(self) -> bool:
        time.sleep(SLOW_STOP)
        with self.lock:
            moving, self.power = self.power != 0.0, 0.0
        return moving


class SlowBase(SlowMotor):
    """A base whose stop stops its two motors."""

    def __init__(self, name: str, sides: tuple[SlowMotor, SlowMotor]) -> None:
        super().__init__(name)
        self.sides = sides

    def stop(self) -> bool:
        moving = super().stop()
        for side in self.sides:
            with side.lock:
                side.power = 0.0
        return moving


@pytest.fixture
def motors() -> dict[str, SlowMotor]:
    left, right = SlowMotor("left"), SlowMotor("right")
    return {"left": left, "right": right, "base": SlowBase("base", (left, right))}


@pytest.fixture
def manager(motors: dict[str, SlowMotor]) -> Iterator[SessionManager]:
    m = SessionManager(motors, 5.0, parts={"base": ("left", "right")}, hooks=LoopHooks(autostart=False))
    yield m
    m.close()


def drive(manager: SessionManager, motors: dict[str, SlowMotor], owner: str, name: str, power: float) -> str:
    session = manager.start(owner=owner)
    with session_context(session):
        manager.run_monitored(name, lambda: motors[name].set_power(power))
    return session.id


def test_a_new_sessions_command_waits_for_the_old_sessions_stop(manager: SessionManager,
                                                               motors: dict[str, SlowMotor]) -> None:
    first = drive(manager, motors, "a", "left", 0.6)
    report = manager.end(first, "a")
    assert report is not None and motors["left"].power == 0.0  # cut at once; the full stop still under way
    started = time.monotonic()
    drive(manager, motors, "b", "left", 0.4)
    assert time.monotonic() - started >= SLOW_STOP * 0.5, "the command did not wait for the pending stop"
    assert report.wait(2)
    time.sleep(SLOW_STOP)  # nothing else is pending; a stop arriving now would be a second, wrong one
    assert motors["left"].power == 0.4, "the old session's stop undid the new session's command"


def test_a_motor_waits_for_the_stop_of_the_base_that_covered_it(manager: SessionManager,
                                                               motors: dict[str, SlowMotor]) -> None:
    first = drive(manager, motors, "a", "base", 0.5)
    report = manager.end(first, "a")
    assert report is not None and report.resources == ("base",)  # the base stops whole, its motors with it
    drive(manager, motors, "b", "left", 0.3)
    assert report.wait(2)
    assert motors["left"].power == 0.3


def test_a_command_on_something_else_does_not_wait(manager: SessionManager, motors: dict[str, SlowMotor]) -> None:
    first = drive(manager, motors, "a", "left", 0.6)
    report = manager.end(first, "a")
    assert report is not None
    started = time.monotonic()
    drive(manager, motors, "b", "right", 0.4)
    assert time.monotonic() - started < SLOW_STOP, "a command on another resource waited for left's stop"
    assert report.wait(2)
    assert motors["right"].power == 0.4 and motors["left"].power == 0.0


def test_a_forwarded_command_can_ask_which_stops_are_under_way(manager: SessionManager,
                                                               motors: dict[str, SlowMotor]) -> None:
    """What a command that runs elsewhere (a sub-part's) awaits before it goes out: claim, stops_under_way, await."""
    first = drive(manager, motors, "a", "left", 0.6)
    report = manager.end(first, "a")
    assert report is not None
    with session_context(manager.start(owner="b")):
        claim = manager.claim("left")
    assert manager.stops_under_way(claim) == [report]
    manager.await_stops([report])
    assert report.settled.is_set() and manager.stops_under_way(claim) == []
