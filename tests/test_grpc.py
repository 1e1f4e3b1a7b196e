"""The daemon over real gRPC on loopback, on mock pins: drive, heartbeat, expire, close, and every error status."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from rover_safety.api import (
    base_pb2,
    common_pb2,
    motor_pb2,
    robot_pb2,
    safety_pb2,
)
from rover_safety.daemon.app import Daemon

from tests.support.daemons import DaemonFactory, changed_at, duty, example_config, pin, rig
from tests.support.grpc_client import Client, code_of
from tests.support.waiting import wait_until

LEFT_PWM, RIGHT_PWM, LEFT_A = 22, 19, 17


def in_background(call: Callable[[], object]) -> threading.Event:
    """Run a blocking call (a timed move) on a thread; the event is set once it has returned or failed."""
    done = threading.Event()

    def run() -> None:
        try:
            call()
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


@pytest.fixture
def daemon(make_daemon: DaemonFactory) -> Daemon:
    return make_daemon(heartbeat_window="300ms")


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    c = Client(daemon.port)
    yield c
    c.channel.close()


def test_resource_names(daemon: Daemon, client: Client) -> None:
    reply = client.robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)
    names = [(r.namespace, r.type, r.subtype, r.name) for r in reply.resources]
    assert names == [("rdk", "component", "base", "base"), ("rdk", "component", "motor", "left"),
                     ("rdk", "component", "motor", "right")]


def test_drive_heartbeat_then_lapse_stops_within_bounds(daemon: Daemon, client: Client) -> None:
    window = 0.3
    client.start()
    client.set_power("left", 0.6)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.6)
    sent, answered = client.beat(8, window / 5)  # 8 x window/5 = 0.48 s of heartbeats, well past one window
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.6), "stopped although heartbeats were on time"
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0, timeout=2)
    stopped = changed_at(daemon, LEFT_PWM)
    assert stopped >= sent + window, "stopped before the deadline"
    assert stopped <= answered + window + 0.05, f"stopped {1000 * (stopped - answered - window):.1f} ms late"
    # the deadline thread cuts the PWM itself; the direction pins follow on a stop thread a moment later
    wait_until(lambda: duty(daemon, LEFT_A) == 0, timeout=1, what="the direction pin released after the cut")
    code, details = code_of(client.heartbeat)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "SESSION_EXPIRED")
    code, details = code_of(lambda: client.set_power("left", 0.5))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "SESSION_EXPIRED")
    assert duty(daemon, LEFT_PWM) == 0


def test_monitored_calls_count_as_heartbeats(daemon: Daemon, client: Client) -> None:
    client.start()
    for _ in range(10):
        client.set_power("left", 0.5)
        time.sleep(0.1)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)
    client.set_power("left", 0.4)
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0, timeout=3)


def test_expiry_stops_only_what_that_session_drove(daemon: Daemon, make_daemon: DaemonFactory) -> None:
    a, b = Client(daemon.port), Client(daemon.port)
    a.start()
    b.start()
    a.set_power("left", 0.5)
    b.set_power("right", 0.7)
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        b.heartbeat()
        time.sleep(0.05)
    assert duty(daemon, LEFT_PWM) == 0
    assert duty(daemon, RIGHT_PWM) == pytest.approx(0.7)
    b.set_power("left", 0.3)  # b now owns left too; a's old claim is gone
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.3)


def test_sessionless_motion_is_refused_and_moves_nothing(daemon: Daemon, client: Client) -> None:
    code, details = code_of(lambda: client.set_power("left", 0.5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "without a session" in details and "allow_unmonitored_motion" in details
    assert duty(daemon, LEFT_PWM) == 0


def test_unmonitored_motion_when_allowed(make_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture) -> None:
    text = example_config().replace("allow_unmonitored_motion: false", "allow_unmonitored_motion: true")
    daemon = make_daemon(text)
    client = Client(daemon.port)
    with caplog.at_level("WARNING", logger="rover-safety"):
        client.set_power("left", 0.5)
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.5)
    assert any("unmonitored motion" in r.getMessage() and "left" in r.getMessage() for r in caplog.records)


def test_unknown_names_and_bad_values(daemon: Daemon, client: Client) -> None:
    client.start()
    assert code_of(lambda: client.set_power("nope", 0.5))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.set_power("base", 0.5)) == (grpc.StatusCode.NOT_FOUND, "no motor named 'base'")
    code, details = code_of(lambda: client.set_power("left", 1.5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "between -1 and 1" in details
    code, details = code_of(lambda: client.motor.GoTo(motor_pb2.GoToRequest(name="left", rpm=10), metadata=client.md))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no encoder" in details
    code, _ = code_of(lambda: client.motor.DoCommand(common_pb2.DoCommandRequest(name="left")))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert duty(daemon, LEFT_PWM) == 0
    two = (("viam-sid", client.sid), ("viam-sid", client.sid))
    code, _ = code_of(lambda: client.motor.SetPower(motor_pb2.SetPowerRequest(name="left", power_pct=0.5),
                                                    metadata=two))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_reads_need_no_session(daemon: Daemon, client: Client) -> None:
    client.start()
    client.set_power("left", -0.5)
    other = Client(daemon.port)  # no session at all
    powered = other.motor.IsPowered(motor_pb2.IsPoweredRequest(name="left"))
    assert powered.is_on and powered.power_pct == -0.5
    assert other.motor.IsMoving(motor_pb2.IsMovingRequest(name="left")).is_moving
    assert not other.motor.GetProperties(motor_pb2.GetPropertiesRequest(name="left")).position_reporting
    props = other.base.GetProperties(base_pb2.GetPropertiesRequest(name="base"))
    assert props.width_meters == pytest.approx(0.26) and props.wheel_circumference_meters == pytest.approx(0.22)
    other.motor.Stop(motor_pb2.StopRequest(name="left"))
    assert duty(daemon, LEFT_PWM) == 0


def test_go_for_blocks_until_done_and_stop_cancels_it(daemon: Daemon, client: Client) -> None:
    client.start()
    started = time.monotonic()
    client.motor.GoFor(motor_pb2.GoForRequest(name="left", rpm=120, revolutions=0.4), metadata=client.md, timeout=5)
    assert 0.2 <= time.monotonic() - started < 1.0  # 0.4 rev at 120 rpm = 0.2 s
    assert duty(daemon, LEFT_PWM) == 0
    done = in_background(lambda: client.motor.GoFor(
        motor_pb2.GoForRequest(name="left", rpm=120, revolutions=100), metadata=client.md, timeout=10))
    wait_until(lambda: duty(daemon, LEFT_PWM) > 0, timeout=3)
    Client(daemon.port).motor.Stop(motor_pb2.StopRequest(name="left"))
    assert done.wait(2), "GoFor did not return after Stop"
    assert duty(daemon, LEFT_PWM) == 0


def test_session_expiry_cancels_a_timed_base_move(daemon: Daemon, client: Client) -> None:
    client.start()
    done = in_background(lambda: client.base.Spin(
        base_pb2.SpinRequest(name="base", angle_deg=3600, degs_per_sec=90), metadata=client.md, timeout=10))
    wait_until(lambda: duty(daemon, LEFT_PWM) > 0 and duty(daemon, RIGHT_PWM) > 0, timeout=3)
    # no heartbeats: the 300 ms window lapses and the 40 s spin is cut short
    assert done.wait(3)
    assert duty(daemon, LEFT_PWM) == 0 and duty(daemon, RIGHT_PWM) == 0


def test_close_session_stops_at_once_and_reports_success_once(daemon: Daemon, client: Client) -> None:
    client.start()
    client.base.SetPower(base_pb2.SetPowerRequest(name="base", linear=common_pb2.Vector3(y=0.5)), metadata=client.md)
    assert duty(daemon, LEFT_PWM) > 0
    reply = client.safety.CloseSession(safety_pb2.CloseSessionRequest(id=client.sid))
    assert reply.success
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0 and duty(daemon, RIGHT_PWM) == 0, timeout=0.1)
    assert not client.safety.CloseSession(safety_pb2.CloseSessionRequest(id=client.sid)).success
    assert not client.safety.CloseSession(safety_pb2.CloseSessionRequest(id="never-was")).success


def test_resume_and_get_sessions(daemon: Daemon, client: Client) -> None:
    sid = client.start()
    again = client.robot.StartSession(robot_pb2.StartSessionRequest(resume=sid))
    assert again.id == sid and again.heartbeat_window.ToMilliseconds() == 300
    listed = client.robot.GetSessions(robot_pb2.GetSessionsRequest()).sessions
    assert [s.id for s in listed] == [sid]
    assert listed[0].peer_connection_info.remote_address.startswith("ipv4:127.0.0.1:")
    time.sleep(0.4)
    assert client.robot.StartSession(robot_pb2.StartSessionRequest(resume=sid)).id != sid


def test_stop_all(daemon: Daemon, client: Client) -> None:
    client.start()
    client.set_power("left", 0.5)
    client.set_power("right", -0.5)
    Client(daemon.port).robot.StopAll(robot_pb2.StopAllRequest())
    assert duty(daemon, LEFT_PWM) == 0 and duty(daemon, RIGHT_PWM) == 0


def test_session_limit_is_resource_exhausted(make_daemon: DaemonFactory) -> None:
    # one host may take the whole table only if the per-client limits say so (tests/test_client_limits.py)
    limits = "  limits: {sessions_per_owner: 1024, session_starts_per_second: 5000, calls_per_second_per_owner: 5000}\n"
    daemon = make_daemon(example_config(heartbeat_window="1m").replace("network:\n", "network:\n" + limits, 1))
    client = Client(daemon.port)
    for _ in range(1024):
        client.start()
    code, details = code_of(client.start)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 1024" in details


def test_a_bug_in_a_handler_fails_safe(daemon: Daemon, client: Client, make_daemon: DaemonFactory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    client.start()
    client.set_power("right", 0.5)
    motor = rig(daemon).motors["left"]

    def broken(power: float) -> None:
        raise RuntimeError("driver bug")

    monkeypatch.setattr(motor, "set_power", broken)
    code, details = code_of(lambda: client.set_power("left", 0.5))
    assert code == grpc.StatusCode.INTERNAL and "daemon is stopping" in details
    assert make_daemon.fatal_calls == 1
    assert duty(daemon, RIGHT_PWM) == 0, "other outputs must be stopped too"
    assert code_of(lambda: client.set_power("right", 0.5))[0] == grpc.StatusCode.UNAVAILABLE


def test_a_port_in_use_is_a_clear_start_up_error(daemon: Daemon) -> None:
    from rover_safety.config import parse
    from rover_safety.daemon.errors import StartupError

    text = example_config().replace('"127.0.0.1:0"', f'"127.0.0.1:{daemon.port}"')
    second = Daemon(parse(text, "second.yaml"))
    with pytest.raises(StartupError, match=rf"cannot listen on 127\.0\.0\.1:{daemon.port}"):
        second.start()
    assert second.rig is None  # its pins were released again
    Client(daemon.port).robot.ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)  # the first is unharmed


def test_a_timed_move_whose_final_stop_fails_fails_safe(daemon: Daemon, client: Client, make_daemon: DaemonFactory,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client.start()
    motor = rig(daemon).motors["left"]

    def broken_release() -> bool:
        raise OSError("bridge not answering")

    monkeypatch.setattr(motor, "release", broken_release)
    code, _ = code_of(lambda: client.motor.GoFor(motor_pb2.GoForRequest(name="left", rpm=120, revolutions=0.2),
                                                 metadata=client.md, timeout=5))
    assert code == grpc.StatusCode.INTERNAL  # not a silent success
    assert make_daemon.fatal_calls == 1
    assert duty(daemon, LEFT_PWM) == 0  # the cut half of the stop did happen


def test_a_stop_that_fails_at_expiry_forces_the_pins_off_and_fails_safe(make_daemon: DaemonFactory,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = make_daemon(heartbeat_window="100ms")
    client = Client(daemon.port)
    client.start()
    client.set_power("left", 0.5)
    motor = rig(daemon).motors["left"]

    def broken_release() -> bool:
        raise OSError("bridge not answering")

    monkeypatch.setattr(motor, "release", broken_release)  # the expiry's stop fails after the cut
    wait_until(lambda: make_daemon.fatal_calls == 1, timeout=3, what="a failed stop must end the daemon")
    # cut at the deadline; the bridge forced off once the stop failed (that may finish just after the report)
    wait_until(lambda: duty(daemon, LEFT_PWM) == 0 and pin(daemon, LEFT_A).state == 0, timeout=3)
    client.close()
