"""Every wiring, right at the (mock) pins: forward, reverse, stop, close; the base's mixing and timed moves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero.pins import Factory
from rover_safety.config import BaseConfig, MotorConfig, MotorPins
from rover_safety.drivers import InvalidCommand, Motor, Unsupported, WheeledBase, open_factory
from rover_safety.drivers.failsafe import off_levels
from rover_safety.drivers.outputs import Output

from tests.support.daemons import pin_changed_at, pin_state

WIRINGS = {
    "a+b+pwm": MotorPins(a=17, b=27, pwm=22, en_high=23, en_low=24),
    "dir+pwm": MotorPins(dir=5, pwm=6, en_high=13),
    "a+b": MotorPins(a=20, b=21, en_low=16),
}
# Expected pin values for power +0.5 / -0.5 (before dir_flip); enables are active whenever moving.
EXPECTED = {
    "a+b+pwm": ({17: 1, 27: 0, 22: 0.5}, {17: 0, 27: 1, 22: 0.5}),
    "dir+pwm": ({5: 1, 6: 0.5}, {5: 0, 6: 0.5}),
    "a+b": ({20: 0.5, 21: 0}, {20: 0, 21: 0.5}),
}


class Recorder:
    """Every pin change on the mock factory, with whether the pin was still an output when it changed."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, float, str]] = []
        self.factory = open_factory("mock", on_change=self.record)

    def record(self, bcm: int, value: float) -> None:
        self.changes.append((bcm, value, self.factory.pin(bcm).function))

    def first_change(self, pin: int, since: int) -> float | None:
        changes = [value for bcm, value, _ in self.changes[since:] if bcm == pin]
        return changes[0] if changes else None


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.factory.close()


@pytest.fixture
def factory(recorder: Recorder) -> Factory:
    """The mock pin factory (gpiozero is untyped, so a Factory is Any to mypy)."""
    return recorder.factory



def enables(pins: MotorPins, moving: bool) -> dict[int, float]:
    out: dict[int, float] = {}
    if pins.en_high is not None:
        out[pins.en_high] = 1.0 if moving else 0.0
    if pins.en_low is not None:
        out[pins.en_low] = 0.0 if moving else 1.0
    return out


def off_state(pins: MotorPins) -> dict[int, float]:
    return {pin: float(level) for _, pin, level in off_levels(MotorConfig("m", pins))}


def assert_pins(factory: Factory, expected: dict[int, float]) -> None:
    actual = {pin: pin_state(factory, pin) for pin in expected}
    assert actual == pytest.approx(expected), f"pins {actual} != expected {expected}"


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("flip", [False, True])
def test_wiring_forward_reverse_stop_close(factory: Factory, recorder: Recorder, wiring: str, flip: bool) -> None:
    pins = WIRINGS[wiring]
    motor = Motor(MotorConfig("m", pins, dir_flip=flip), factory)
    assert motor.wiring == wiring
    assert_pins(factory, off_state(pins))  # everything starts off
    forward, reverse = EXPECTED[wiring]
    if flip:
        forward, reverse = reverse, forward
    motor.set_power(0.5)
    assert_pins(factory, {**forward, **enables(pins, True)})
    assert motor.is_moving() and motor.power == 0.5
    motor.set_power(-0.5)
    assert_pins(factory, {**reverse, **enables(pins, True)})
    assert motor.stop() is True
    assert_pins(factory, off_state(pins))
    assert motor.stop() is False
    motor.set_power(0.5)
    before_close = len(recorder.changes)
    motor.close()  # every output is driven off first; then gpiozero releases the pins as inputs
    for pin, level in off_state(pins).items():
        assert factory.pin(pin).function == "input"
        # (gpiozero's mock PWM pin also writes 0 while releasing, which real pigpio pins do not do)
        assert recorder.first_change(pin, before_close) in (level, None), f"GPIO{pin} was not driven off first"


def test_stop_cuts_pwm_before_touching_direction_or_enable(factory: Factory) -> None:
    pins = WIRINGS["a+b+pwm"]
    motor = Motor(MotorConfig("m", pins), factory)
    motor.set_power(0.8)
    motor.stop()
    changed_at = {pin: pin_changed_at(factory, pin) for pin in (22, 17, 23, 24)}
    assert changed_at[22] <= min(changed_at[17], changed_at[23], changed_at[24])


def test_power_limits_and_dead_band(factory: Factory) -> None:
    motor = Motor(MotorConfig("m", WIRINGS["dir+pwm"], min_power_pct=0.3, max_power_pct=0.8), factory)
    motor.set_power(0.1)
    assert pin_state(factory, 6) == pytest.approx(0.3)
    motor.set_power(1.0)
    assert pin_state(factory, 6) == pytest.approx(0.8)
    motor.set_power(0.01)
    assert pin_state(factory, 6) == 0 and not motor.is_moving()
    for bad in (1.5, -2.0, float("nan"), float("inf")):
        with pytest.raises(InvalidCommand):
            motor.set_power(bad)
    assert pin_state(factory, 6) == 0  # a bad command moves nothing


def test_rpm_needs_max_rpm_and_maps_to_power(factory: Factory) -> None:
    plain = Motor(MotorConfig("plain", WIRINGS["dir+pwm"]), factory)
    with pytest.raises(Unsupported, match="no max_rpm"):
        plain.set_rpm(10)
    with pytest.raises(Unsupported, match="no encoder"):
        plain.go_to()
    rated = Motor(MotorConfig("rated", WIRINGS["a+b"], max_rpm=120), factory)
    rated.set_rpm(-60)
    assert rated.power == -0.5 and pin_state(factory, 21) == pytest.approx(0.5)
    rated.set_rpm(1000)  # faster than it can go: full power, not an error
    assert rated.power == 1.0


def test_go_for_runs_for_the_computed_time_then_stops(factory: Factory) -> None:
    motor = Motor(MotorConfig("m", WIRINGS["dir+pwm"], max_rpm=120), factory)
    started = time.monotonic()
    motion = motor.go_for(rpm=60, revolutions=-0.1)  # 0.1 rev at 60 rpm = 0.1 s, backwards
    assert motion is not None
    assert pin_state(factory, 5) == 0 and pin_state(factory, 6) == pytest.approx(0.5)
    assert motion.wait(2) is True
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 0.5
    assert pin_state(factory, 6) == 0 and not motor.is_moving()


def test_stop_cancels_a_timed_motion(factory: Factory) -> None:
    motor = Motor(MotorConfig("m", WIRINGS["dir+pwm"], max_rpm=120), factory)
    motion = motor.go_for(rpm=120, revolutions=100)
    assert motion is not None and motion.running
    motor.stop()
    assert motion.wait(1) is False and motion.cancelled
    assert pin_state(factory, 6) == 0


@pytest.fixture
def base(factory: Factory) -> WheeledBase:
    left = Motor(MotorConfig("left", WIRINGS["a+b+pwm"], max_rpm=120), factory)
    right = Motor(MotorConfig("right", WIRINGS["dir+pwm"], max_rpm=120), factory)
    return WheeledBase(BaseConfig("base", ("left",), ("right",), 260, 220), [left], [right])


def test_base_mixes_linear_and_angular_power(base: WheeledBase) -> None:
    left, right = base.motors
    base.set_power(0.5, 0.0)
    assert (left.power, right.power) == (0.5, 0.5)
    base.set_power(0.5, 0.25)  # turning left (counter-clockwise): right wheel faster
    assert (left.power, right.power) == (0.25, 0.75)
    base.set_power(1.0, 1.0)  # saturates: ratio kept
    assert (left.power, right.power) == (0.0, 1.0)
    base.set_power(0.0, -0.5)  # spin clockwise in place
    assert (left.power, right.power) == (0.5, -0.5)
    assert base.stop() is True and not base.is_moving()


def test_base_velocity_and_timed_moves(base: WheeledBase) -> None:
    left, right = base.motors
    base.set_velocity(220.0, 0.0)  # one wheel circumference per second = 60 rpm = half of max_rpm
    assert (left.power, right.power) == pytest.approx((0.5, 0.5))
    started = time.monotonic()
    motion = base.move_straight(-44, 220)  # 0.2 s backwards
    assert motion is not None and left.power < 0 and right.power < 0
    assert motion.wait(2) is True
    assert 0.2 <= time.monotonic() - started < 0.6
    assert not base.is_moving()
    motion = base.spin(90, 45)  # 2 s counter-clockwise: left back, right forward
    assert motion is not None and left.power < 0 < right.power
    base.stop()
    assert motion.wait(1) is False and not base.is_moving()
    with pytest.raises(InvalidCommand):
        base.move_straight(100, 0)
    with pytest.raises(InvalidCommand):
        base.set_power(2.0, 0.0)


def test_direction_is_the_sign_of_speed_times_amount(factory: Factory, base: WheeledBase) -> None:
    """Viam's rule for GoFor, MoveStraight and Spin: a negative speed reverses the move as a negative amount does."""
    motor = Motor(MotorConfig("m", MotorPins(dir=9, pwm=10), max_rpm=120), factory)
    for rpm, revolutions, forward in ((60, 1, True), (-60, 1, False), (60, -1, False), (-60, -1, True)):
        motion = motor.go_for(rpm, revolutions)
        assert motion is not None and (motor.power > 0) is forward, (rpm, revolutions)
        motor.stop()
    left, right = base.motors
    for distance, speed, forward in ((100, 50, True), (100, -50, False), (-100, 50, False), (-100, -50, True)):
        base.move_straight(distance, speed)
        assert (left.power > 0, right.power > 0) == (forward, forward), (distance, speed)
        base.stop()
    for angle, rate, ccw in ((90, 45, True), (90, -45, False), (-90, 45, False), (-90, -45, True)):
        base.spin(angle, rate)
        assert (right.power > 0 > left.power) is ccw, (angle, rate)
        base.stop()


def test_timed_moves_follow_the_applied_duty_and_refuse_impossible_ones(factory: Factory, base: WheeledBase) -> None:
    capped = Motor(MotorConfig("capped", MotorPins(dir=9, pwm=10), max_rpm=120, max_power_pct=0.5), factory)
    motion = capped.go_for(rpm=120, revolutions=0.1)  # 0.05 s at full speed; at the capped half duty, 0.1 s
    assert motion is not None and motion.duration == pytest.approx(0.1)
    capped.stop()
    with pytest.raises(InvalidCommand, match="at most 86400 s"):
        capped.go_for(rpm=60, revolutions=1e9)
    with pytest.raises(InvalidCommand, match="at most 86400 s"):
        base.move_straight(9e18, 100)
    with pytest.raises(InvalidCommand, match="too slow"):
        base.spin(90, 0.001)
    assert not capped.is_moving() and not base.is_moving()


class Flaky:
    """Outputs whose PWM writes fail, as a pigpiod that stopped answering would."""

    def off(self, output: Output) -> None:
        if output.pwm:
            raise OSError("pigpiod did not answer")
        output.device.pin.state = 1 if output.off_high else 0


def test_a_failed_cut_still_releases_the_bridge(factory: Factory) -> None:
    motor = Motor(MotorConfig("m", MotorPins(dir=9, pwm=10, en_high=11), max_rpm=120), factory, outputs=Flaky())
    motor.set_power(0.5)
    with pytest.raises(OSError):
        motor.stop()
    assert pin_state(factory, 11) == 0 and pin_state(factory, 9) == 0 and not motor.is_moving()  # enable off regardless


def test_base_force_off_tries_every_motor(factory: Factory) -> None:
    bad = Motor(MotorConfig("bad", MotorPins(dir=9, pwm=10)), factory, outputs=Flaky())
    good = Motor(MotorConfig("good", MotorPins(dir=11, pwm=12)), factory)
    base = WheeledBase(BaseConfig("b", ("bad",), ("good",), 200, 200), [bad], [good])
    good.set_power(0.5)
    with pytest.raises(OSError):
        base.force_off()
    assert pin_state(factory, 12) == 0
