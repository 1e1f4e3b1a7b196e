"""StopAll on a rover of two boards: both boards stop, and a sub-part that hangs never delays the primary's own pins."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rover_safety.api import robot_pb2

from tests.support.waiting import wait_until
from tests.test_subparts import ARM_WINDOW, Rover, drive

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rover(tmp_path: Path) -> Iterator[Rover]:
    rover = Rover(tmp_path)
    try:
        yield rover
    finally:
        rover.close()


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
