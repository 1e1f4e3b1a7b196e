"""A rover of two boards: a primary that follows a sub-part ("arm") through its gRPC API. Users drive `arm:shoulder`
through the primary; whoever fails, the right things stop, on the right board, and nothing else."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rover_safety.api import motor_pb2, robot_pb2, safety_pb2

from tests.support.grpc_client import Client, Heartbeats
from tests.support.hil import Served, served
from tests.support.net import free_port
from tests.support.pigpiod_emulator import Cmd, EmulatorClient
from tests.support.subparts import SHOULDER_PWM, TwoBoards, arm_config, primary_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

PRIMARY_WINDOW, ARM_WINDOW = 1.0, 0.4
LEFT_PWM = 22


class Rover:
    """Two daemons, each on its own emulator; the arm can be stopped and started again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.boards = TwoBoards.make(tmp)
        self.arm_emulator, self.main_emulator = EmulatorClient.spawn(), EmulatorClient.spawn()
        self.arm_port, self.port = free_port(), free_port()
        self.arm_path = self.boards.write("arm.yaml", arm_config(self.arm_emulator, self.arm_port, "400ms",
                                                                 self.boards.certificate, self.boards.primary_key))
        self.main_path = self.boards.write("primary.yaml", primary_config(
            self.main_emulator, self.port, "1s", self.arm_port, self.boards.certificate, self.boards.primary_key))
        self.arm: Served | None = None
        self.primary: Served | None = None
        self._contexts: list[object] = []

    def start_arm(self) -> Served:
        context = served(self.arm_path)
        self.arm = context.__enter__()
        self._contexts.append(context)
        return self.arm

    def start_primary(self) -> Served:
        context = served(self.main_path)
        self.primary = context.__enter__()
        self._contexts.append(context)
        return self.primary

    def arm_duty(self, pin: int = SHOULDER_PWM) -> float:
        return self.arm_emulator.pin(pin).duty_cycle

    def main_duty(self, pin: int = LEFT_PWM) -> float:
        return self.main_emulator.pin(pin).duty_cycle

    def arm_off_at(self, since: float, pin: int = SHOULDER_PWM) -> float:
        offs = [c.t for c in self.arm_emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == pin and c.p2 == 0]
        assert offs, f"no duty 0 on the arm's GPIO{pin} since {since}"
        return offs[0]

    def main_off_at(self, since: float, pin: int = LEFT_PWM) -> float:
        offs = [c.t for c in self.main_emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == pin and c.p2 == 0]
        assert offs, f"no duty 0 on the primary's GPIO{pin} since {since}"
        return offs[0]

    def wait_connected(self, client: Client) -> None:
        def connected() -> bool:
            status = client.safety.GetStatus(safety_pb2.GetStatusRequest(), timeout=5)
            return any(p.name == "arm" and p.state == "connected" for p in status.parts) and any(
                r.name == "arm:shoulder" for r in status.resources)

        wait_until(connected, timeout=15, what="the primary connected to the arm", interval=0.05)

    def close(self) -> None:
        for context in reversed(self._contexts):
            context.__exit__(None, None, None)  # type: ignore[attr-defined]
        self.arm_emulator.close()
        self.main_emulator.close()


@pytest.fixture
def rover(tmp_path: Path) -> Iterator[Rover]:
    rover = Rover(tmp_path)
    try:
        yield rover
    finally:
        rover.close()


def drive(rover: Rover) -> tuple[Client, Heartbeats]:
    client = Client(rover.port)
    rover.wait_connected(client)
    client.start()
    client.set_power("arm:shoulder", 0.6)
    client.set_power("left", 0.5)
    assert rover.arm_duty() == pytest.approx(0.6, abs=0.01) and rover.main_duty() == pytest.approx(0.5, abs=0.01)
    return client, Heartbeats(client, PRIMARY_WINDOW / 5)


def test_the_arm_is_listed_and_driven_through_the_primary_with_the_primarys_own_session(rover: Rover) -> None:
    rover.start_arm()
    rover.start_primary()
    client, beats = drive(rover)
    names = {r.name: r.subtype for r in client.robot.ResourceNames(robot_pb2.ResourceNamesRequest(),
                                                                    timeout=5).resources}
    assert names["arm:shoulder"] == "motor" and names["arm:elbow"] == "motor" and names["left"] == "motor"
    moving = client.motor.IsMoving(motor_pb2.IsMovingRequest(name="arm:shoulder"), timeout=5)
    assert moving.is_moving
    time.sleep(1.5)  # past both windows: the user's heartbeats keep it on the primary, the primary's on the arm
    assert rover.arm_duty() == pytest.approx(0.6, abs=0.01)
    assert not beats.errors
    beats.stop()
    client.close()


def test_the_users_session_ends_and_both_boards_stop_exactly_what_it_drove(rover: Rover) -> None:
    rover.start_arm()
    rover.start_primary()
    other = Client(rover.port)
    rover.wait_connected(other)
    other.start()
    other.set_power("right", 0.3)  # another client's motor: never stopped by any of this
    other_beats = Heartbeats(other, PRIMARY_WINDOW / 5)
    client, beats = drive(rover)
    contact = time.monotonic()  # its last call was answered by now
    last = max(contact, beats.stop())  # the client goes silent: its session lapses on the primary
    wait_until(lambda: rover.arm_duty() == 0 and rover.main_duty() == 0, timeout=PRIMARY_WINDOW + 2,
               what="both boards to stop the lapsed session's motors")
    arm_late = rover.arm_off_at(last) - (last + PRIMARY_WINDOW)
    main_late = rover.main_off_at(last) - (last + PRIMARY_WINDOW)
    print(f"after the primary's deadline: primary's pin off {main_late * 1000:.1f} ms, arm's {arm_late * 1000:.1f} ms")
    assert -0.05 < main_late < 0.3 and -0.05 < arm_late < 0.3
    assert rover.main_emulator.pin(19).duty_cycle == pytest.approx(0.3, abs=0.01), "another client's motor stopped"
    assert rover.primary is not None
    rover.primary.wait_line(r"expired: .*stopped .*arm:shoulder", timeout=5)
    assert not other_beats.errors
    other_beats.stop()
    client.close()
    other.close()


def test_sigkill_of_the_primary_the_arm_stops_within_its_window(rover: Rover) -> None:
    rover.start_arm()
    primary = rover.start_primary()
    client, beats = drive(rover)
    killed = primary.signal(signal.SIGKILL)
    wait_until(lambda: rover.arm_duty() == 0, timeout=ARM_WINDOW + 2, what="the arm to stop on its own")
    took = rover.arm_off_at(killed) - killed
    print(f"the arm stopped {took * 1000:.0f} ms after the primary died (its window {ARM_WINDOW * 1000:.0f} ms)")
    assert took <= ARM_WINDOW + 0.25
    beats.stop()
    client.close()


def test_sigterm_of_the_arm_ends_the_users_session_then_it_drives_again_once_the_arm_is_back(rover: Rover) -> None:
    arm = rover.start_arm()
    primary = rover.start_primary()
    client, beats = drive(rover)
    arm.signal(signal.SIGTERM)
    assert arm.wait(10) == 0
    assert rover.arm_duty() == 0, "the arm stops its own outputs before it exits"
    primary.wait_line(r"part arm at .* lost: it is shutting down", timeout=5)
    wait_until(lambda: rover.main_duty() == 0, timeout=2, what="the primary to end the session driving the arm")
    beats.stop()
    with pytest.raises(grpc.RpcError) as info:
        client.set_power("left", 0.2)
    assert info.value.details() == "SESSION_EXPIRED"
    client.start()
    with pytest.raises(grpc.RpcError) as info:  # a fresh session, but the arm is not there: fail fast, say why
        client.set_power("arm:shoulder", 0.5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "part 'arm' is not connected" in (
        info.value.details() or "")
    rover.start_arm()
    wait_until(lambda: try_drive(client, "arm:shoulder", 0.5), timeout=15, what="the arm back", interval=0.1)
    assert rover.arm_duty() == pytest.approx(0.5, abs=0.01)
    client.close()


def try_drive(client: Client, name: str, power: float) -> bool:
    try:
        client.heartbeat()
        client.set_power(name, power)
        return True
    except grpc.RpcError:
        return False


def test_the_primary_shuts_down_children_first(rover: Rover) -> None:
    rover.start_arm()
    primary = rover.start_primary()
    client, beats = drive(rover)
    beats.stop()
    sent = primary.signal(signal.SIGTERM)
    assert primary.wait(10) == 0
    arm_off, main_off = rover.arm_off_at(sent), rover.main_off_at(sent)
    assert arm_off < main_off, "the arm (a child) must stop before the primary's own outputs"
    assert rover.arm_duty() == 0 and rover.main_duty() == 0
    client.close()


def test_sessions_and_watch_on_the_primary_show_the_part_and_its_link(rover: Rover) -> None:
    import json
    import subprocess

    from tests.support.hil import RUN_CLI, cli_env

    rover.start_arm()
    rover.start_primary()
    client = Client(rover.port)
    rover.wait_connected(client)
    result = subprocess.run([*RUN_CLI, "sessions", "--address", f"127.0.0.1:{rover.port}", "--json"],
                            capture_output=True, text=True, timeout=30, env=cli_env(), check=False)
    assert result.returncode == 0, result.stderr
    (part,) = json.loads(result.stdout)["parts"]
    assert part["name"] == "arm" and part["state"] == "connected" and part["address"].endswith(str(rover.arm_port))
    watched = subprocess.run([*RUN_CLI, "watch", "--once", "--address", f"127.0.0.1:{rover.port}"],
                             capture_output=True, text=True, timeout=30, env=cli_env(), check=False)
    assert watched.returncode == 0, watched.stderr
    view = watched.stdout.splitlines()
    header = next(i for i, line in enumerate(view) if line.split()[:3] == ["PART", "ADDRESS", "LINK"])
    arm = next(line.split() for line in view[header + 1:] if line.startswith("arm "))
    assert arm[1].endswith(str(rover.arm_port)) and arm[2] == "connected", view
    assert any(line.startswith("arm:shoulder") for line in view), "the part's resources are not in the view"
    client.close()


def test_the_official_sdk_drives_both_boards_through_the_primary_and_its_death_stops_both(
        rover: Rover, viam_python: str, tmp_path: Path) -> None:
    from tests.support.viam_sdk import SdkClient

    rover.start_arm()
    rover.start_primary()
    probe = Client(rover.port)
    rover.wait_connected(probe)
    probe.close()
    sdk = SdkClient(viam_python, f"127.0.0.1:{rover.port}", (), tmp_path / "sdk.log")
    try:
        assert "motor/arm:shoulder" in sdk.resources and "motor/left" in sdk.resources, sdk.resources
        sdk.ok("motor.set_power", "arm:shoulder", 0.7)
        sdk.ok("motor.set_power", "left", 0.4)
        assert rover.arm_duty() == pytest.approx(0.7, abs=0.01) and rover.main_duty() == pytest.approx(0.4, abs=0.01)
        time.sleep(PRIMARY_WINDOW * 1.5)  # the SDK's heartbeats keep both going
        assert rover.arm_duty() > 0 and rover.main_duty() > 0
        killed = time.monotonic()
        sdk.proc.kill()
        wait_until(lambda: rover.arm_duty() == 0 and rover.main_duty() == 0, timeout=PRIMARY_WINDOW + 2,
                   what="both boards to stop the dead SDK's motors")
        main_took, arm_took = rover.main_off_at(killed) - killed, rover.arm_off_at(killed) - killed
        print(f"after the SDK's SIGKILL: the primary's pin off in {main_took * 1000:.0f} ms, the arm's in "
              f"{arm_took * 1000:.0f} ms (the primary's window {PRIMARY_WINDOW * 1000:.0f} ms)")
        assert main_took <= PRIMARY_WINDOW + 0.3 and arm_took <= PRIMARY_WINDOW + 0.3
    finally:
        sdk.close()


# --- StopAll: both boards stop, and a sub-part that hangs never delays the primary's own pins ---------------


def test_stop_all_through_the_primary_stops_both_boards(rover: Rover) -> None:
    rover.start_arm()
    rover.start_primary()
    client, beats = drive(rover)
    asked = time.monotonic()
    client.robot.StopAll(robot_pb2.StopAllRequest(), timeout=5)
    assert rover.main_duty() == 0 and rover.arm_duty() == 0, "StopAll answered before both boards were stopped"
    assert rover.main_off_at(asked) - asked < 1.0 and rover.arm_off_at(asked) - asked < 1.0
    beats.stop()
    client.close()


def test_a_hung_sub_part_does_not_delay_the_primarys_own_stop(rover: Rover) -> None:
    arm = rover.start_arm()
    primary = rover.start_primary()
    client, beats = drive(rover)
    arm.signal(signal.SIGSTOP)  # hung, not gone: the link still looks up until keepalive notices (~1.5 s)
    try:
        asked = time.monotonic()
        client.robot.StopAll(robot_pb2.StopAllRequest(), timeout=5)
        answered = time.monotonic() - asked
        main_off = rover.main_off_at(asked) - asked
        print(f"StopAll with the arm hung: the primary's pin off {main_off * 1000:.1f} ms after the call, "
              f"answered after {answered * 1000:.0f} ms")
        assert main_off < 0.25, f"the primary's own pin went off {main_off:.3f} s after StopAll"
        assert answered < 2.0, f"StopAll took {answered:.3f} s to answer with a hung part"
        primary.wait_line(r"StopAll could not reach part arm", timeout=5)
    finally:
        arm.signal(signal.SIGCONT)
    # the arm comes back, finds the primary's session lapsed, and stops what it drove on its own
    wait_until(lambda: rover.arm_duty() == 0, timeout=ARM_WINDOW + 5, what="the arm to stop on its own expiry")
    beats.stop()
    client.close()
