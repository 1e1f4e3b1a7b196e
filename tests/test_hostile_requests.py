"""Requests a hostile or broken client sends: none moves anything it should not, none costs the daemon more than a
bounded amount, no answer grows with the request, and no session id leaks to another owner."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rover_safety.api import base_pb2, common_pb2, motor_pb2, robot_pb2
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, duty, example_config
from tests.support.grpc_client import Client, Heartbeats
from tests.support.process import rss_mb

PINS = (17, 27, 22, 26, 19)  # every output of the example config
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([1.7e308, -1.7e308, 3e307, 5e-324, 1e-300, 0.0, -0.0, 1.0, -1.0, 1.0000001]))


def pins(daemon: Daemon) -> dict[int, float]:
    return {pin: duty(daemon, pin) for pin in PINS}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Client]]:
    factory = DaemonFactory(tmp_path_factory.mktemp("hostile"))
    # These tests are about what each request does, not how many: hypothesis sends them as fast as it can, past a
    # client's call rate (test_front_door.py has the rate), so the rate is raised here.
    daemon = factory(example_config(heartbeat_window="10s").replace(
        "network:\n", "network:\n  limits: {calls_per_second_per_owner: 100000}\n", 1))
    client = Client(daemon.port)
    client.start()
    yield daemon, client
    client.close()
    factory.close()


def refused_or_consistent(daemon: Daemon, call: Callable[[], object]) -> bool:
    """Make the call; if refused, every pin is as it was. True if it was accepted."""
    before = pins(daemon)
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), exc
        assert len(exc.details() or "") < 300
        assert pins(daemon) == before, f"refused ({exc.details()}) but the pins changed"
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(linear=FLOATS, angular=FLOATS)
@example(linear=1.7e308, angular=3e307)  # found by the outside probe: one side was set, then the other refused
def test_set_velocity_is_refused_whole_or_drives_both_sides_consistently(served: tuple[Daemon, Client],
                                                                          linear: float, angular: float) -> None:
    daemon, client = served
    client.base.SetPower(base_pb2.SetPowerRequest(name="base", linear=common_pb2.Vector3(y=0.5)), metadata=client.md,
                         timeout=5)  # driving straight: a refused command must not make it pivot
    request = base_pb2.SetVelocityRequest(name="base", linear=common_pb2.Vector3(y=linear),
                                          angular=common_pb2.Vector3(z=angular))
    if refused_or_consistent(daemon, lambda: client.base.SetVelocity(request, metadata=client.md, timeout=5)):
        assert daemon.rig is not None
        left, right = daemon.rig.motors["left"].power, daemon.rig.motors["right"].power
        assert all(math.isfinite(p) and -1 <= p <= 1 for p in (left, right))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(linear=FLOATS, angular=FLOATS)
def test_base_set_power_refused_whole(served: tuple[Daemon, Client], linear: float, angular: float) -> None:
    daemon, client = served
    client.base.SetPower(base_pb2.SetPowerRequest(name="base", linear=common_pb2.Vector3(y=-0.4)), metadata=client.md,
                         timeout=5)
    request = base_pb2.SetPowerRequest(name="base", linear=common_pb2.Vector3(y=linear),
                                       angular=common_pb2.Vector3(z=angular))
    refused_or_consistent(daemon, lambda: client.base.SetPower(request, metadata=client.md, timeout=5))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=FLOATS, b=FLOATS, which=st.sampled_from(["SetPower", "SetRPM", "GoFor", "MoveStraight", "Spin"]))
def test_every_motion_command_refused_whole(served: tuple[Daemon, Client], a: float, b: float, which: str) -> None:
    daemon, client = served
    client.set_power("left", 0.3)
    client.set_power("right", -0.3)
    calls: dict[str, Callable[[], object]] = {
        "SetPower": lambda: client.motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=a),
                                                  metadata=client.md, timeout=5),
        "SetRPM": lambda: client.motor.SetRPM(motor_pb2.SetRPMRequest(name="left", rpm=a), metadata=client.md,
                                              timeout=5),
        # revolutions 0: run at rpm until told otherwise (a timed move would block this call)
        "GoFor": lambda: client.motor.GoFor(motor_pb2.GoForRequest(name="left", rpm=a, revolutions=b * 0),
                                            metadata=client.md, timeout=5),
        "MoveStraight": lambda: client.base.MoveStraight(
            base_pb2.MoveStraightRequest(name="base", distance_mm=0, mm_per_sec=a),
            metadata=client.md, timeout=5),
        "Spin": lambda: client.base.Spin(base_pb2.SpinRequest(name="base", angle_deg=0.0, degs_per_sec=a),
                                         metadata=client.md, timeout=5),
    }
    refused_or_consistent(daemon, calls[which])


def test_no_answer_grows_with_the_request(served: tuple[Daemon, Client]) -> None:
    _, client = served
    for name in ("\x00" * 60_000, "x" * 60_000, "\u202e" * 20_000):
        with pytest.raises(grpc.RpcError) as info:
            client.motor.IsMoving(motor_pb2.IsMovingRequest(name=name), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(info.value.details() or "") < 300, len(info.value.details() or "")
        assert "characters)" in (info.value.details() or "")


def test_a_request_larger_than_control_needs_is_refused_without_reading_it(served: tuple[Daemon, Client]) -> None:
    _, client = served
    with pytest.raises(grpc.RpcError) as info:
        client.motor.IsMoving(motor_pb2.IsMovingRequest(name="\x00" * (4 * 2**20)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        client.robot.ResourceNames(robot_pb2.ResourceNamesRequest(), metadata=(("x-junk", "y" * 64_000),), timeout=5)
    assert info.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                                 grpc.StatusCode.UNAVAILABLE)
    client.robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)  # and the daemon still serves


def test_thirty_large_bad_requests_cost_bounded_memory_and_no_session(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(heartbeat_window="300ms")
    victim, attacker = Client(daemon.port), Client(daemon.port)
    victim.start()
    victim.set_power("left", 0.5)
    beats = Heartbeats(victim, 0.06)
    before = rss_mb()
    try:
        for _ in range(30):
            for name in ("\x00" * 4_000_000, "\x00" * 60_000):  # under gRPC's default 4 MiB limit
                with pytest.raises(grpc.RpcError):
                    attacker.motor.IsMoving(motor_pb2.IsMovingRequest(name=name), timeout=10)
        grown = rss_mb() - before
        assert grown < 64, f"the daemon's process grew by {grown:.0f} MB"
        assert daemon.sessions.last_user("left") == victim.sid, "the victim's session expired meanwhile"
    finally:
        beats.stop()
        victim.close()
        attacker.close()


def test_get_sessions_shows_a_caller_only_its_own_ids(make_daemon: DaemonFactory) -> None:
    # Two client hosts on one machine: IPv4 and IPv6 loopback, on a dual-stack port (off loopback: insecure)
    text = example_config(heartbeat_window="10s").replace('"127.0.0.1:0"', '"[::]:0"')
    text = text.replace("network:\n", "network:\n  insecure: true\n", 1)
    daemon = make_daemon(text)
    one, other = Client(daemon.port, host="127.0.0.1"), Client(daemon.port, host="[::1]")
    try:
        mine, theirs = one.start(), other.start()
        seen = one.robot.GetSessions(robot_pb2.GetSessionsRequest(), timeout=5).sessions
        assert [s.id for s in seen] == [mine]
        seen = other.robot.GetSessions(robot_pb2.GetSessionsRequest(), timeout=5).sessions
        assert [s.id for s in seen] == [theirs]
        with pytest.raises(grpc.RpcError) as info:  # and another host's id is useless anyway
            other.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=mine), timeout=5)
        assert info.value.details() == "SESSION_EXPIRED"
    finally:
        one.close()
        other.close()
