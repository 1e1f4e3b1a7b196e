"""The official Viam Python SDK against an in-process daemon, over real gRPC on loopback.

The SDK pins its own protobuf, so it never runs in this process: each client is tests/support/viam_client.py under
the SDK's venv (tests/support/viam_sdk.py: ROVER_SAFETY_VIAM_PYTHON, default .venv-viam/bin/python, which `make test`
creates), driven one command per line.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, changed_at, duty, example_config
from tests.support.logs import Records, captured, field
from tests.support.viam_sdk import SdkClient
from tests.support.waiting import wait_until

WINDOW = 0.5  # heartbeat_window of every daemon here; the SDK heartbeats every WINDOW / 5
STOP_BOUND = WINDOW + 0.5  # a dead client's motor must be off this soon after it died (generous on a loaded 2-core box)

# BCM pins of config/example.yaml: left is a+b+pwm, right is dir+pwm
LEFT_A, LEFT_B, LEFT_PWM = 17, 27, 22
RIGHT_DIR, RIGHT_PWM = 26, 19
ALL_PINS = (LEFT_A, LEFT_B, LEFT_PWM, RIGHT_DIR, RIGHT_PWM)


class Connect(Protocol):
    """The `sdk` fixture: `sdk(daemon, "--no-sessions")` -> a connected SdkClient."""

    def __call__(self, daemon: Daemon, *flags: str) -> SdkClient: ...


@pytest.fixture
def sdk(viam_python: str, make_daemon: DaemonFactory, tmp_path: Path) -> Iterator[Connect]:
    """`sdk(daemon, "--no-sessions")` -> a connected SdkClient; every one is killed at the end of the test (before
    the daemons of `make_daemon` shut down)."""
    clients: list[SdkClient] = []

    def connect(daemon: Daemon, *flags: str) -> SdkClient:
        client = SdkClient(viam_python, f"127.0.0.1:{daemon.port}", flags, tmp_path / f"viam_client{len(clients)}.log")
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def journal() -> Iterator[Records]:
    with captured(logging.INFO) as records:
        yield records


def states(daemon: Daemon, *bcms: int) -> dict[int, float]:
    return {bcm: duty(daemon, bcm) for bcm in bcms}


def last_driver(daemon: Daemon, name: str) -> str:
    """The session that last drove `name` (there must be one)."""
    session = daemon.sessions.last_user(name)
    assert session is not None, f"no session drove {name}"
    return session


def live_ids(daemon: Daemon) -> set[str]:
    return {s.id for s in daemon.sessions.all()}


def test_sdk_connects_lists_resources_and_drives(make_daemon: DaemonFactory, sdk: Connect) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    client = sdk(daemon)
    assert client.resources == ["base/base", "motor/left", "motor/right"]

    client.ok("motor.set_power", "left", 0.5)
    assert states(daemon, LEFT_PWM, LEFT_A, LEFT_B) == {LEFT_PWM: 0.5, LEFT_A: 1, LEFT_B: 0}  # forward at 50 %
    assert client.ok("motor.state", "left") == {"ok": True, "is_powered": True, "power_pct": 0.5, "is_moving": True}
    session = daemon.sessions.last_user("left")
    assert session in live_ids(daemon), "the SDK's SetPower carried no live session"

    client.ok("motor.set_power", "left", -0.25)
    assert states(daemon, LEFT_PWM, LEFT_A, LEFT_B) == {LEFT_PWM: 0.25, LEFT_A: 0, LEFT_B: 1}  # reversed
    assert client.ok("motor.state", "left")["power_pct"] == -0.25

    # linear.y 0.5, angular.z 0.2 (counter-clockwise): left wheel 0.5 - 0.2, right wheel 0.5 + 0.2, both forward
    client.ok("base.set_power", "base", 0.5, 0.2)
    got = states(daemon, LEFT_PWM, LEFT_A, LEFT_B, RIGHT_PWM, RIGHT_DIR)
    assert got == {LEFT_PWM: pytest.approx(0.3), LEFT_A: 1, LEFT_B: 0, RIGHT_PWM: pytest.approx(0.7), RIGHT_DIR: 1}
    assert client.ok("base.state", "base") == {"ok": True, "is_moving": True}
    right = client.ok("motor.state", "right")
    assert right["is_powered"] and right["is_moving"] and right["power_pct"] == pytest.approx(0.7)
    assert daemon.sessions.last_user("base") == session, "one SDK client should use one session for everything"
    assert live_ids(daemon) == {session}


def test_sdk_heartbeats_keep_an_idle_client_driving(make_daemon: DaemonFactory, sdk: Connect,
                                                     journal: Records) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    client = sdk(daemon)
    client.ok("motor.set_power", "left", 0.5)
    session = daemon.sessions.last_user("left")
    last_change = changed_at(daemon, LEFT_PWM)

    time.sleep(4 * WINDOW)  # no calls at all: only the SDK's heartbeat thread talks to the daemon

    assert duty(daemon, LEFT_PWM) == 0.5
    assert changed_at(daemon, LEFT_PWM) == last_change, "the motor was stopped (and restarted) meanwhile"
    assert live_ids(daemon) == {session}
    assert daemon.sessions.last_user("left") == session
    assert journal.events("expired") == []
    assert client.ok("motor.state", "left")["is_moving"]


def test_sigkilled_sdk_client_is_stopped_within_its_window(make_daemon: DaemonFactory, sdk: Connect,
                                                           journal: Records) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    client = sdk(daemon)
    client.ok("base.set_power", "base", 0.5, 0.0)
    client.ok("motor.set_power", "left", 0.5)
    session = last_driver(daemon, "left")
    time.sleep(WINDOW)  # a few heartbeats in: the steady state of a client that drives and then just stays
    assert states(daemon, LEFT_PWM, RIGHT_PWM) == {LEFT_PWM: 0.5, RIGHT_PWM: 0.5}

    killed_at = time.monotonic()
    client.proc.kill()
    client.proc.wait(timeout=5)
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0 and duty(daemon, RIGHT_PWM) == 0, STOP_BOUND + 2,
               "the dead client's motors to stop")

    for bcm in (LEFT_PWM, RIGHT_PWM):
        latency = changed_at(daemon, bcm) - killed_at
        assert 0 < latency <= STOP_BOUND, f"GPIO{bcm} went off {latency:.3f} s after the kill"
    # the deadline thread cuts the PWM itself; direction pins and enables follow on stop threads a moment later
    wait_until(lambda: states(daemon, *ALL_PINS) == dict.fromkeys(ALL_PINS, 0), 1, "every pin of the motors low")
    expired = journal.wait_for("expired", session)
    # what this session drove last: the base (and so both its motors) and `left` directly
    assert set(field(expired, "RESOURCES").split(",")) == {"base", "left", "right"}
    # the base, stopped whole, stands for its motors: it is what found them moving
    assert set(field(expired, "MOVING").split(",")) & {"base", "left"}
    assert session in expired.getMessage() and "left" in expired.getMessage()
    assert expired.levelno == logging.WARNING
    assert live_ids(daemon) == set()


def test_sessionless_sdk_client_is_refused_motion(make_daemon: DaemonFactory, sdk: Connect) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    client = sdk(daemon, "--no-sessions")

    for command in (("motor.set_power", "left", 0.5), ("base.set_power", "base", 0.5, 0.2)):
        reply = client.call(*command)
        assert reply["ok"] is False and reply["status"] == "FAILED_PRECONDITION", reply
        assert "without a session" in reply["message"] and "allow_unmonitored_motion" in reply["message"]
    assert states(daemon, *ALL_PINS) == dict.fromkeys(ALL_PINS, 0)
    assert client.ok("motor.state", "left")["is_powered"] is False
    assert live_ids(daemon) == set()


def test_sessionless_sdk_client_moves_when_config_allows(make_daemon: DaemonFactory, sdk: Connect,
                                                         journal: Records) -> None:
    text = example_config(heartbeat_window="500ms")
    allowed = text.replace("allow_unmonitored_motion: false", "allow_unmonitored_motion: true")
    assert allowed != text, "config/example.yaml no longer has `allow_unmonitored_motion: false` to flip"
    daemon = make_daemon(text=allowed)
    client = sdk(daemon, "--no-sessions")

    client.ok("motor.set_power", "left", 0.5)
    assert states(daemon, LEFT_PWM, LEFT_A, LEFT_B) == {LEFT_PWM: 0.5, LEFT_A: 1, LEFT_B: 0}
    client.ok("base.set_power", "base", 0.5, 0.2)
    assert states(daemon, LEFT_PWM, RIGHT_PWM) == {LEFT_PWM: pytest.approx(0.3), RIGHT_PWM: pytest.approx(0.7)}
    assert live_ids(daemon) == set() and daemon.sessions.last_user("left") is None
    assert {field(r, "RESOURCES") for r in journal.events("unmonitored")} >= {"left", "base"}


def test_sdk_stop_needs_no_session(make_daemon: DaemonFactory, sdk: Connect) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    driver = sdk(daemon)
    bystander = sdk(daemon, "--no-sessions")  # may not move anything, but may stop anything
    driver.ok("base.set_power", "base", 0.5, 0.2)
    assert states(daemon, LEFT_PWM, RIGHT_PWM) == {LEFT_PWM: pytest.approx(0.3), RIGHT_PWM: pytest.approx(0.7)}

    bystander.ok("motor.stop", "right")
    assert states(daemon, RIGHT_PWM, RIGHT_DIR) == {RIGHT_PWM: 0, RIGHT_DIR: 0}
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.3)  # only what was asked

    driver.ok("motor.stop", "left")
    assert states(daemon, *ALL_PINS) == dict.fromkeys(ALL_PINS, 0)
    assert driver.ok("motor.state", "left") == {"ok": True, "is_powered": False, "power_pct": 0.0, "is_moving": False}
    assert driver.ok("base.state", "base")["is_moving"] is False

    driver.ok("base.set_power", "base", 0.5, 0.0)
    bystander.ok("base.stop", "base")
    assert states(daemon, *ALL_PINS) == dict.fromkeys(ALL_PINS, 0)


def test_sdk_starts_a_fresh_session_after_an_expiry(make_daemon: DaemonFactory, sdk: Connect,
                                                    journal: Records) -> None:
    daemon = make_daemon(heartbeat_window="500ms")
    client = sdk(daemon)
    client.ok("motor.set_power", "left", 0.5)
    first = last_driver(daemon, "left")

    client.proc.send_signal(signal.SIGSTOP)  # freezes its heartbeat thread too
    try:
        wait_until(lambda: duty(daemon, LEFT_PWM) == 0, STOP_BOUND + 2, "the frozen client's motor to stop")
        journal.wait_for("expired", first)
    finally:
        client.proc.send_signal(signal.SIGCONT)

    # The SDK's recovery: whichever comes first, its heartbeat thread or this call, learns SESSION_EXPIRED and drops
    # the session; if it was this call, it fails, and the next monitored call starts a fresh session.
    reply = client.call("motor.set_power", "left", 0.5)
    if not reply["ok"]:
        assert (reply["status"], reply["message"]) == ("INVALID_ARGUMENT", "SESSION_EXPIRED"), reply
        assert duty(daemon, LEFT_PWM) == 0
        client.ok("motor.set_power", "left", 0.5)
    second = daemon.sessions.last_user("left")
    assert second is not None and second != first
    assert duty(daemon, LEFT_PWM) == 0.5
    journal.wait_for("started", second)

    time.sleep(3 * WINDOW)  # and the fresh session is heartbeaten like the first
    assert duty(daemon, LEFT_PWM) == 0.5
    assert live_ids(daemon) == {second}
    assert [field(r, "SESSION_ID") for r in journal.events("expired")] == [first]
