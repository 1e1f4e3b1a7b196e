"""The front door: API keys (Viam's Authenticate and bearer tokens), TLS, sessions that belong to the key, no open
door off loopback, public stop, and limits on failed attempts, calls, sessions and starts per client."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rover_safety.api import (
    auth_pb2,
    auth_pb2_grpc,
    motor_pb2,
    motor_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
)
from rover_safety.daemon import journal
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.auth import Authenticator
from rover_safety.daemon.errors import StartupError
from rover_safety.daemon.wire import FrontDoor, Policy

from tests.support.daemons import DaemonFactory, duty, example_config
from tests.support.grpc_client import code_of
from tests.support.keys import Certificate, Key, bearer, new_certificate, new_key, secured, tls_channel, token_for
from tests.support.logs import captured, field
from tests.support.waiting import wait_until

LEFT_PWM, RIGHT_PWM = 22, 19


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return new_certificate(tmp_path / "tls")


@pytest.fixture
def keys() -> tuple[Key, Key]:
    return new_key("laptop"), new_key("phone")


@pytest.fixture
def daemon(make_daemon: DaemonFactory, certificate: Certificate, keys: tuple[Key, Key]) -> Daemon:
    return make_daemon(secured(example_config(heartbeat_window="5s"), certificate, keys))


@pytest.fixture
def channel(daemon: Daemon, certificate: Certificate) -> Iterator[grpc.Channel]:
    with tls_channel(daemon.port, certificate) as channel:
        yield channel


def test_every_call_needs_a_token(channel: grpc.Channel) -> None:
    robot = robot_pb2_grpc.RobotServiceStub(channel)
    status, details = code_of(lambda: robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5))
    assert status == grpc.StatusCode.UNAUTHENTICATED and "Authenticate" in details
    status, _ = code_of(lambda: robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5))
    assert status == grpc.StatusCode.UNAUTHENTICATED
    status, details = code_of(lambda: robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5,
                                                       metadata=bearer("not.a.token")))
    assert status == grpc.StatusCode.UNAUTHENTICATED and "invalid token" in details


def test_a_key_gives_a_token_that_opens_every_call(channel: grpc.Channel, keys: tuple[Key, Key],
                                                   daemon: Daemon) -> None:
    token = token_for(channel, keys[0])
    robot, motor = robot_pb2_grpc.RobotServiceStub(channel), motor_pb2_grpc.MotorServiceStub(channel)
    names = robot.ResourceNames(robot_pb2.ResourceNamesRequest(), metadata=bearer(token), timeout=5)
    assert {r.name for r in names.resources} == {"left", "right", "base"}
    sid = robot.StartSession(robot_pb2.StartSessionRequest(), metadata=bearer(token), timeout=5).id
    motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=0.5),
                   metadata=(*bearer(token), ("viam-sid", sid)), timeout=5)
    assert daemon.rig is not None and daemon.rig.factory.pin(LEFT_PWM).state == pytest.approx(0.5)
    (session,) = daemon.sessions.all()
    assert session.owner == "key:laptop"


def test_wrong_keys_and_types_are_refused_alike(channel: grpc.Channel, keys: tuple[Key, Key]) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    for entity, kind, payload in (("laptop", "api-key", keys[1].key), ("nobody", "api-key", keys[0].key),
                                  ("laptop", "robot-secret", keys[0].key)):
        request = auth_pb2.AuthenticateRequest(entity=entity, credentials=auth_pb2.Credentials(type=kind,
                                                                                               payload=payload))
        assert code_of(functools.partial(auth.Authenticate, request, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")


def test_authenticate_refuses_a_call_that_already_carries_a_token(channel: grpc.Channel,
                                                                  keys: tuple[Key, Key]) -> None:
    token = token_for(channel, keys[0])
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    request = auth_pb2.AuthenticateRequest(entity="laptop", credentials=auth_pb2.Credentials(type="api-key",
                                                                                             payload=keys[0].key))
    status, details = code_of(lambda: auth.Authenticate(request, metadata=bearer(token), timeout=5))
    assert status == grpc.StatusCode.INVALID_ARGUMENT and "already authenticated" in details


def test_a_session_belongs_to_the_key_and_survives_a_second_token(daemon: Daemon, certificate: Certificate,
                                                                  keys: tuple[Key, Key]) -> None:
    # What the official SDK does: its heartbeat thread opens a second connection and authenticates again.
    with tls_channel(daemon.port, certificate) as main, tls_channel(daemon.port, certificate) as beats, \
            tls_channel(daemon.port, certificate) as other:
        first, second, theirs = token_for(main, keys[0]), token_for(beats, keys[0]), token_for(other, keys[1])
        assert first != second
        sid = robot_pb2_grpc.RobotServiceStub(main).StartSession(robot_pb2.StartSessionRequest(),
                                                                 metadata=bearer(first), timeout=5).id
        heartbeat = robot_pb2.SendSessionHeartbeatRequest(id=sid)
        robot_pb2_grpc.RobotServiceStub(beats).SendSessionHeartbeat(heartbeat, metadata=bearer(second), timeout=5)
        status, details = code_of(lambda: robot_pb2_grpc.RobotServiceStub(other).SendSessionHeartbeat(
            heartbeat, metadata=bearer(theirs), timeout=5))
        assert (status, details) == (grpc.StatusCode.INVALID_ARGUMENT, "SESSION_EXPIRED")
        seen = robot_pb2_grpc.RobotServiceStub(other).GetSessions(robot_pb2.GetSessionsRequest(),
                                                                  metadata=bearer(theirs), timeout=5)
        assert list(seen.sessions) == []


def test_a_reload_that_removes_a_key_revokes_its_tokens_at_once(daemon: Daemon, channel: grpc.Channel,
                                                                certificate: Certificate,
                                                                keys: tuple[Key, Key]) -> None:
    laptop, phone = token_for(channel, keys[0]), token_for(channel, keys[1])
    robot = robot_pb2_grpc.RobotServiceStub(channel)
    assert daemon.config_path is not None
    Path(daemon.config_path).write_text(secured(example_config(heartbeat_window="5s"), certificate, (keys[1],)))
    assert daemon.reload()
    status, details = code_of(lambda: robot.ResourceNames(robot_pb2.ResourceNamesRequest(), metadata=bearer(laptop),
                                                       timeout=5))
    assert status == grpc.StatusCode.UNAUTHENTICATED and "no longer accepted" in details
    robot.ResourceNames(robot_pb2.ResourceNamesRequest(), metadata=bearer(phone), timeout=5)


def test_failed_attempts_are_limited_per_peer_and_logged(channel: grpc.Channel, keys: tuple[Key, Key]) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    wrong = auth_pb2.AuthenticateRequest(entity="laptop", credentials=auth_pb2.Credentials(type="api-key",
                                                                                           payload="guess"))
    with captured(logging.INFO) as records:
        answers = [code_of(lambda: auth.Authenticate(wrong, timeout=5))[1] for _ in range(8)]
        assert answers[:5] == ["invalid credentials"] * 5
        assert all("too many failed attempts" in a for a in answers[5:]), answers
        # now even the right key waits: a guesser learns nothing from trying faster
        status, details = code_of(lambda: token_for(channel, keys[0]))
        assert status == grpc.StatusCode.UNAUTHENTICATED and "too many failed attempts" in details
    failures = [r for r in records.records if field(r, "MESSAGE_ID") == "f70a4627dcc54a40b8bb74da4e7d1e18"]
    assert len(failures) >= 5 and field(failures[0], "PEER").startswith("ipv")


def test_public_stop_lets_anyone_stop_but_not_drive(make_daemon: DaemonFactory, certificate: Certificate,
                                                    keys: tuple[Key, Key]) -> None:
    daemon = make_daemon(secured(example_config(), certificate, keys, extra_auth="  public_stop: true\n"))
    with tls_channel(daemon.port, certificate) as channel:
        token = token_for(channel, keys[0])
        robot, motor = robot_pb2_grpc.RobotServiceStub(channel), motor_pb2_grpc.MotorServiceStub(channel)
        sid = robot.StartSession(robot_pb2.StartSessionRequest(), metadata=bearer(token), timeout=5).id
        motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=0.7),
                       metadata=(*bearer(token), ("viam-sid", sid)), timeout=5)
        status, _ = code_of(lambda: motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=1.0), timeout=5))
        assert status == grpc.StatusCode.UNAUTHENTICATED
        motor.Stop(motor_pb2.StopRequest(name="left"), timeout=5)  # no token at all
        assert daemon.rig is not None and daemon.rig.factory.pin(LEFT_PWM).state == 0
        robot.StopAll(robot_pb2.StopAllRequest(), timeout=5)


def test_without_public_stop_a_stop_needs_a_token_too(channel: grpc.Channel) -> None:
    status, _ = code_of(lambda: motor_pb2_grpc.MotorServiceStub(channel).Stop(motor_pb2.StopRequest(name="left"),
                                                                           timeout=5))
    assert status == grpc.StatusCode.UNAUTHENTICATED


def test_plain_text_cannot_reach_a_tls_port(daemon: Daemon) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as plain:
        status, _ = code_of(lambda: robot_pb2_grpc.RobotServiceStub(plain).ResourceNames(
            robot_pb2.ResourceNamesRequest(), timeout=3))
        assert status == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "[::]:0"])
def test_no_open_door_off_loopback(tmp_path: Path, bind: str, certificate: Certificate) -> None:
    factory = DaemonFactory(tmp_path)
    text = example_config().replace('"127.0.0.1:0"', f'"{bind}"')
    for config, missing in ((text, "API keys (auth.api_keys) and TLS (network.tls)"),
                            (secured(text, certificate), "API keys (auth.api_keys)")):
        with pytest.raises(StartupError) as info:
            factory(config)
        message = str(info.value)
        assert f"refusing to serve {bind} off loopback without {missing}" in message
        assert "gen-key" in message and "network.insecure: true" in message
    factory.close()


def test_insecure_true_serves_off_loopback_and_warns_at_every_start(make_daemon: DaemonFactory) -> None:
    text = example_config().replace('"127.0.0.1:0"', '"0.0.0.0:0"')
    text = text.replace("network:\n", "network:\n  insecure: true\n")
    with captured(logging.INFO) as records:
        daemon = make_daemon(text)
    warnings = [r for r in records.records if field(r, "MESSAGE_ID") == "1f38ed7cbbb0405b8a7657e7d4f54fe7"]
    assert len(warnings) == 1 and "anyone who can reach this port can drive the rover" in warnings[0].getMessage()
    assert daemon.port


def test_sessions_per_owner_and_starts_per_second(make_daemon: DaemonFactory) -> None:
    limits = "  limits: {sessions_per_owner: 5, session_starts_per_second: 10}\n"
    daemon = make_daemon(example_config(heartbeat_window="1m").replace("network:\n", "network:\n" + limits))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        robot = robot_pb2_grpc.RobotServiceStub(channel)
        for _ in range(5):
            robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
        status, details = code_of(lambda: robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5))
        assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and "live sessions of 127.0.0.1 (limit 5)" in details
        answers = []
        for _ in range(30):  # a burst: 2 x 10 pass, then the rate
            try:
                robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
                answers.append("ok")
            except grpc.RpcError as exc:
                answers.append(exc.details() or "")
        assert sum("limit 10/s" in a for a in answers) >= 5, answers


def test_a_burst_of_a_hundred_starts_from_one_host_passes(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(heartbeat_window="1m")
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        robot = robot_pb2_grpc.RobotServiceStub(channel)
        for _ in range(100):
            robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
    assert len(daemon.sessions.all()) == 100


def test_a_client_over_its_call_rate_is_refused_after_a_hold_while_stops_still_pass(make_daemon: DaemonFactory) -> None:
    limits = "  limits: {calls_per_second_per_owner: 5}\n"
    daemon = make_daemon(example_config(heartbeat_window="1m").replace("network:\n", "network:\n" + limits))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        robot = robot_pb2_grpc.RobotServiceStub(channel)
        for _ in range(5):  # the burst: a second's worth
            robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)
        started = time.monotonic()
        with captured(logging.INFO) as records:  # three at once, beyond the burst
            calls = [robot.ResourceNames.future(robot_pb2.ResourceNamesRequest(), timeout=5) for _ in range(3)]
            answers = [code_of(call.result) for call in calls]
        held = time.monotonic() - started
        for status, details in answers:
            assert status == grpc.StatusCode.RESOURCE_EXHAUSTED, answers
            assert "too many calls from 127.0.0.1 (limit 5/s" in details
        assert held >= 0.45, f"refused after {held:.3f} s: a refusal must be held (at least half a second)"
        told = [r for r in records.records if field(r, "MESSAGE_ID") == journal.MESSAGE_IDS["over_share"]]
        assert len(told) == 1 and field(told[0], "OWNER") == "127.0.0.1", "the journal hears of it once a minute"
        # an e-stop is never counted: twenty in a row pass at once, over the rate
        started = time.monotonic()
        for _ in range(20):
            robot.StopAll(robot_pb2.StopAllRequest(), timeout=5)
        assert time.monotonic() - started < 2.0


def test_a_live_sessions_heartbeats_pass_while_its_owner_is_over_its_call_rate(make_daemon: DaemonFactory) -> None:
    """At 5 calls/s, a client that has spent its calls (made-up heartbeats, a flood) is refused, but the heartbeats of
    its own live session (one every 40 ms at a 200 ms window: 5 per window, within 10) are never counted."""
    limits = "  limits: {calls_per_second_per_owner: 5}\n"
    daemon = make_daemon(example_config(heartbeat_window="200ms").replace("network:\n", "network:\n" + limits))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel, \
            grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as flood_channel:
        robot, flood = robot_pb2_grpc.RobotServiceStub(channel), robot_pb2_grpc.RobotServiceStub(flood_channel)
        sid = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5).id
        made_up = robot_pb2.SendSessionHeartbeatRequest(id="00000000-0000-0000-0000-000000000000")
        for _ in range(4):  # the rest of the burst, on made-up ids: counted (INVALID_ARGUMENT)
            code_of(lambda: flood.SendSessionHeartbeat(made_up, timeout=5))
        refused = [flood.SendSessionHeartbeat.future(made_up, timeout=5) for _ in range(3)]
        for _ in range(50):  # 2 s of its own heartbeats while the made-up ones are refused
            robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=sid), timeout=5)
            time.sleep(0.04)
        assert [code_of(call.result)[0] for call in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert [s.id for s in daemon.sessions.all()] == [sid]


def test_the_uncounted_heartbeats_follow_the_shortest_window_and_never_fall_below_fifty_a_second() -> None:
    """A client told 100 ms at StartSession keeps heartbeating every 20 ms after a reload to 5 s: still uncounted."""
    door = FrontDoor(Policy(Authenticator([]), heartbeat_window=0.1))
    assert door.heartbeats.rate == 100
    door.apply(Policy(Authenticator([]), heartbeat_window=5.0))
    assert door.heartbeats.rate == 100
    assert FrontDoor(Policy(Authenticator([]), heartbeat_window=5.0)).heartbeats.rate == 50


def test_calls_in_flight_per_client_are_bounded(make_daemon: DaemonFactory) -> None:
    limits = "  limits: {calls_in_flight_per_owner: 2}\n"
    daemon = make_daemon(example_config(heartbeat_window="1m").replace("network:\n", "network:\n" + limits))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        robot, motor = robot_pb2_grpc.RobotServiceStub(channel), motor_pb2_grpc.MotorServiceStub(channel)
        sid = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5).id
        md = (("viam-sid", sid),)
        # two timed moves hold two calls open, so the client's next call is refused at once ...
        moves = [motor.GoFor.future(motor_pb2.GoForRequest(name=n, rpm=60, revolutions=100), metadata=md,
                                    timeout=30) for n in ("left", "right")]
        wait_until(lambda: duty(daemon, LEFT_PWM) > 0 and duty(daemon, RIGHT_PWM) > 0, what="both moves under way")
        status, details = code_of(lambda: robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5))
        assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and "in flight" in details
        for move in moves:  # ... until they end
            move.cancel()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        else:
            pytest.fail("calls stayed refused after the moves were cancelled")
    assert threading.active_count() < 200
