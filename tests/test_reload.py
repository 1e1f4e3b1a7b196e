"""Reload in-process on mock pins: a bad config changes nothing; a good one re-wires without moving anything."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, changed_at, duty, example_config, rig
from tests.support.grpc_client import Client
from tests.support.waiting import wait_until

LEFT_A, LEFT_PWM, RIGHT_PWM = 17, 22, 19
Running = tuple[Daemon, Client]


@pytest.fixture
def running(make_daemon: DaemonFactory) -> Iterator[Running]:
    """A daemon (2 s window) with a session driving `left` at 0.5 and `right` at 0.3."""
    daemon = make_daemon()
    client = Client(daemon.port)
    client.start()
    client.set_power("left", 0.5)
    client.set_power("right", 0.3)
    yield daemon, client
    client.close()


def rewrite(daemon: Daemon, text: str) -> None:
    assert daemon.config_path is not None
    with open(daemon.config_path, "w") as f:
        f.write(text)


def reload_accepted(daemon: Daemon, text: str) -> None:
    """Rewrite the daemon's config file and reload it, which must succeed."""
    rewrite(daemon, text)
    assert daemon.reload() is True


def test_a_broken_config_changes_nothing(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    daemon, client = running
    rewrite(daemon, example_config("500ms").replace("max_rpm: 120", "max_rpm: fast", 1))
    with caplog.at_level("ERROR", logger="rover-safety"):
        assert daemon.reload() is False
    assert any("reload refused" in r.getMessage() and "max_rpm" in r.getMessage() for r in caplog.records)
    assert daemon.sessions.heartbeat_window == 2.0
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5) and duty(daemon, RIGHT_PWM) == pytest.approx(0.3)
    client.heartbeat()  # the session lives on


def test_a_new_window_applies_to_new_sessions_and_to_live_ones_from_their_next_heartbeat(running: Running) -> None:
    daemon, client = running
    reload_accepted(daemon, example_config("300ms"))
    other = Client(daemon.port)
    sid = other.start()
    assert daemon.sessions.find_by_id(sid, "127.0.0.1").window == 0.3
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)  # nothing stopped or started
    sent = time.monotonic()
    client.heartbeat()  # from here on this session must beat every 300 ms
    answered = time.monotonic()
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0, timeout=5, what="left stopped at the new window's end")
    off = changed_at(daemon, LEFT_PWM)
    assert off >= sent + 0.3, f"stopped {1000 * (sent + 0.3 - off):.1f} ms before the new window ended"
    assert off < answered + 2.0, "stopped only at the old window's end"
    other.close()


def test_rewired_motor_is_stopped_and_closed_before_the_new_one_opens(running: Running) -> None:
    daemon, client = running
    old_left = rig(daemon).motors["left"]
    reload_accepted(daemon, example_config().replace("pins: {a: 17, b: 27, pwm: 22}", "pins: {a: 20, b: 21, pwm: 16}"))
    factory = rig(daemon).factory
    assert factory.pin(LEFT_PWM).function == "input" and factory.pin(LEFT_A).function == "input"  # released
    assert all(factory.pin(p).state == 0 for p in (20, 21, 16))  # the new wiring starts off
    assert rig(daemon).motors["left"] is not old_left
    assert rig(daemon).bases["base"].left == [rig(daemon).motors["left"]]  # the base uses the new motor
    assert duty(daemon, RIGHT_PWM) == 0  # the base was re-built around the new left, so it was stopped
    client.heartbeat()  # the session survived
    client.set_power("left", 0.4)
    assert duty(daemon, 16) == pytest.approx(0.4) and factory.pin(20).state == 1


def test_a_changed_base_alone_is_rebuilt(running: Running) -> None:
    daemon, _ = running
    old_base = rig(daemon).bases["base"]
    reload_accepted(daemon, example_config().replace("width_mm: 260", "width_mm: 300"))
    assert rig(daemon).bases["base"] is not old_base and rig(daemon).bases["base"].width_m == 0.3
    assert rig(daemon).motors["left"] is old_base.left[0]  # its motors were kept


def test_a_removed_motor_is_stopped_and_gone(running: Running) -> None:
    daemon, client = running
    text = example_config()
    text = text[: text.index("  - name: right")]  # drop right and the base
    reload_accepted(daemon, text)
    assert duty(daemon, LEFT_PWM) == 0  # the base that drove it was removed, and stopped first
    assert rig(daemon).factory.pin(RIGHT_PWM).function == "input"
    assert sorted(daemon.resources()) == ["left"]
    client.set_power("left", 0.2)  # the kept motor and the session still work
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.2)
    with pytest.raises(grpc.RpcError) as info:
        client.set_power("right", 0.3)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
