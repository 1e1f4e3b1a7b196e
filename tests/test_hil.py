"""The real pigpio path, end to end: the daemon and its drivers on gpiozero's PiGPIOFactory talking to pigpiod.

Every test taking the `gpio` fixture runs against the pigpiod emulator, and also against a real pigpiod on a Pi when
ROVER_SAFETY_HIL=1 (the `[hardware]` variants; see docs/HARDWARE.md). Outputs are read back with pigpio's own reads;
when an output went off comes from the emulator's command log (monotonic timestamps, the test's clock) or, on
hardware, from polling those reads. Tests that need the command log or kill pigpiod run on the emulator only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
from gpiozero.pins import Factory
from rover_safety.config import MotorConfig, MotorPins
from rover_safety.daemon.app import Daemon
from rover_safety.drivers import Motor, PinFactoryError, open_factory
from rover_safety.sessions.stopping import STOP_TIMEOUT

from tests.support.daemons import DaemonFactory, rig
from tests.support.grpc_client import Client, code_of
from tests.support.hil import (
    EXAMPLE_PINS,
    INPUT,
    OUTPUT,
    Gpio,
    Out,
    assert_all_off,
    first_off,
    on_raspberry_pi,
    pigpio_config,
)
from tests.support.logs import Records, captured
from tests.support.net import free_port
from tests.support.pigpiod_emulator import Cmd, Command

pytestmark = pytest.mark.timeout(60)

LATE = 0.2  # seconds after the deadline: generous, see the lapse test

@pytest.fixture
def records() -> Iterator[Records]:
    with captured(logging.DEBUG) as handler:
        yield handler


def approx(value: float) -> float:
    """pytest.approx, typed as the float it compares equal to (for use inside Out(...))."""
    return cast(float, pytest.approx(value))


# --- the daemon, over gRPC, on pigpio -------------------------------------------------------------------------------


def test_drive_heartbeat_lapse_stops_pwm_at_the_deadline(gpio: Gpio, make_daemon: DaemonFactory) -> None:
    """Heartbeats keep the motors running; when they stop, PWM goes to 0 at the deadline: not before, and soon after
    (typically 1-2 ms; the bound is generous for a loaded 2-core CI machine running emulator, daemon and test in one
    process)."""
    window = 0.3
    daemon: Daemon = make_daemon(pigpio_config(gpio, "300ms"))
    client = Client(daemon.port)
    try:
        client.start()
        client.set_power("left", 0.6)
        client.set_power("right", -0.4)
        assert gpio.read(22) == Out(OUTPUT, 1, approx(0.6))
        assert (gpio.read(17), gpio.read(27)) == (Out(OUTPUT, 1, None), Out(OUTPUT, 0, None))  # a high: forward
        assert (gpio.read(19), gpio.read(26)) == (Out(OUTPUT, 1, approx(0.4)), Out(OUTPUT, 0, None))  # reverse
        sent, answered = client.beat(8, window / 5)  # 8 x window/5 = 0.48 s of heartbeats, well past one window
        assert gpio.duty_now(22) == approx(0.6), "stopped although heartbeats were on time"
        assert gpio.duty_now(19) == approx(0.4)
        off = gpio.off_windows([22, 19], since=answered, timeout=3)
        for pin, (earliest, latest) in off.items():
            assert earliest >= sent + window, f"GPIO{pin} went off {1000 * (sent + window - earliest):.1f} ms early"
            late = latest - (answered + window)
            assert late <= LATE, f"GPIO{pin} went off {1000 * late:.1f} ms after the deadline"
        assert_all_off(gpio, EXAMPLE_PINS, wait=1)  # direction pins too, not just PWM
        code, _ = code_of(client.heartbeat)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        client.close()


def test_expiry_sends_one_off_command_per_output_of_what_the_session_drove(
    emulated: Gpio, make_daemon: DaemonFactory
) -> None:
    """At the deadline the session thread itself cuts left's PWM (one command: the power is off), then a stop thread
    runs the full stop: PWM 0 once more (whatever a command in flight may have done meanwhile), a and b low. Nothing
    else: right, driven by another session, is not touched (the health check's TICKs are left out)."""
    daemon: Daemon = make_daemon(pigpio_config(emulated, "200ms"))
    mover, other = Client(daemon.port), Client(daemon.port)
    try:
        mover.start()
        other.start()
        mover.set_power("left", 0.5)
        other.set_power("right", 0.5)
        t = time.monotonic()

        def stopped() -> bool:
            """b (GPIO27) released, the stop thread's last write, and the expiry published (after the whole stop,
            so any stray command of the stop path would be in the log by then)."""
            released = any(c.cmd == Cmd.WRITE and c.p1 == 27 for c in emulated.commands_since(t))
            return released and any(e.kind == "expired" for e in daemon.events.expiries())

        while not stopped():  # only `other` heartbeats
            assert time.monotonic() < t + 3, "left never stopped"
            other.heartbeat()
            time.sleep(0.03)
        assert emulated.duty_now(19) == approx(0.5)
        stop = [c for c in emulated.commands_since(t) if c.cmd != Cmd.TICK and c.p1 in (22, 17, 27, 26, 19)]
        assert [(c.name, c.p1, c.p2) for c in stop] == [
            ("PWM", 22, 0),  # the cut, from the session-deadline thread
            ("PWM", 22, 0), ("WRITE", 17, 0), ("WRITE", 27, 0),  # the full stop, from a stop thread
        ]
        # The full stop is bounded by the stop path's timeout (past it the pins are forced off instead).
        assert stop[-1].t - stop[0].t < STOP_TIMEOUT
    finally:
        mover.close()
        other.close()


# --- every wiring, right at the pins ---------------------------------------------------------------------------------

WIRINGS = {
    "a+b+pwm": dict(a=17, b=27, pwm=22),
    "dir+pwm": dict(dir=5, pwm=6),
    "a+b": dict(a=20, b=21),
}
ENABLE_PINS = {"a+b+pwm": (23, 24), "dir+pwm": (13, 16), "a+b": (16, 13)}
ENABLES = ["", "en_high", "en_low", "en_high+en_low"]


def wiring_pins(wiring: str, enables: str) -> MotorPins:
    pins: dict[str, int] = dict(WIRINGS[wiring])
    high, low = ENABLE_PINS[wiring]
    if "en_high" in enables:
        pins["en_high"] = high
    if "en_low" in enables:
        pins["en_low"] = low
    return MotorPins(**pins)


def expected(pins: MotorPins, power: float, flip: bool = False) -> dict[str, Out]:
    """Every output's mode, level and duty (None: not a PWM pin) at `power` (0: stopped)."""
    wiring = pins.wiring
    forward = (power > 0) != flip
    duty = abs(power)
    out: dict[str, Out] = {}
    if wiring == "a+b":  # both PWM: the active one carries the duty, the other duty 0
        on, idle = ("a", "b") if forward else ("b", "a")
        out[on] = Out(OUTPUT, int(duty > 0), approx(duty))
        out[idle] = Out(OUTPUT, 0, 0.0)
    else:
        out["pwm"] = Out(OUTPUT, int(duty > 0), approx(duty))
        if wiring == "dir+pwm":
            out["dir"] = Out(OUTPUT, int(duty > 0 and forward), None)
        else:
            out["a"] = Out(OUTPUT, int(duty > 0 and forward), None)
            out["b"] = Out(OUTPUT, int(duty > 0 and not forward), None)
    if pins.en_high is not None:
        out["en_high"] = Out(OUTPUT, int(duty > 0), None)
    if pins.en_low is not None:
        out["en_low"] = Out(OUTPUT, int(duty == 0), None)
    return out


def read_motor(gpio: Gpio, pins: MotorPins) -> dict[str, Out]:
    return gpio.read_all(pins.used())


@pytest.fixture
def pigpio_factory(gpio: Gpio) -> Iterator[Factory]:
    factory = open_factory("pigpio", gpio.host, gpio.port)
    yield factory
    factory.close()


@pytest.mark.parametrize("flip", [False, True], ids=["", "dir_flip"])
@pytest.mark.parametrize("enables", ENABLES)
@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_wiring_at_the_pins(gpio: Gpio, pigpio_factory: Factory, wiring: str, enables: str, flip: bool) -> None:
    """Exact levels and duty for forward, reverse, stop and after close, on pigpio; stop leaves every output off."""
    pins = wiring_pins(wiring, enables)
    motor = Motor(MotorConfig("m", pins, dir_flip=flip), pigpio_factory)
    assert motor.wiring == wiring
    assert read_motor(gpio, pins) == expected(pins, 0.0), "not everything starts off"
    motor.set_power(0.5)
    assert read_motor(gpio, pins) == expected(pins, 0.5, flip)
    motor.set_power(-0.25)
    assert read_motor(gpio, pins) == expected(pins, -0.25, flip)
    assert motor.stop() is True
    assert read_motor(gpio, pins) == expected(pins, 0.0)
    motor.set_power(1.0)
    assert read_motor(gpio, pins) == expected(pins, 1.0, flip)
    since = time.monotonic()
    motor.close()  # drives every output off, then gpiozero releases the pins as inputs (the board's pulls hold them)
    after = read_motor(gpio, pins)
    assert {role: out.mode for role, out in after.items()} == {role: INPUT for role in after}
    if gpio.emu is not None:  # a floating input keeps its last level: the off level it was driven to
        levels = {role: gpio.emu.pin(pin).level for role, pin in pins.used().items()}
        assert levels == {role: int(role == "en_low") for role in levels}
        _assert_driven_off_before_released(gpio.emu.commands_since(since), pins)


def _assert_driven_off_before_released(commands: list[Command], pins: MotorPins) -> None:
    for role, pin in pins.used().items():
        mine = [c for c in commands if c.p1 == pin]
        released = next(i for i, c in enumerate(mine) if c.cmd == Cmd.MODES and c.p2 == INPUT)
        assert first_off(mine[:released], pin, int(role == "en_low")) is not None, f"{role} released while on"


@pytest.mark.parametrize(("asked", "runs"), [(800, 800), (900, 1000), (45, 50), (1234, 1000), (20000, 8000)])
def test_pwm_frequency_is_what_pigpio_runs(gpio: Gpio, pigpio_factory: Factory, asked: int, runs: int) -> None:
    """pigpio rounds pwm_freq to the nearest frequency it can do; the motor reports what it really runs."""
    motor = Motor(MotorConfig("m", MotorPins(a=20, b=21), pwm_freq=asked), pigpio_factory)
    assert motor.frequency == runs
    assert gpio.frequency(20) == gpio.frequency(21) == runs
    motor.close()


def test_startup_logs_the_effective_pwm_frequency(gpio: Gpio, make_daemon: DaemonFactory, records: Records) -> None:
    text = pigpio_config(gpio).replace("pwm_freq: 800", "pwm_freq: 900")
    text = text.replace("attributes: {pins: {dir: 26, pwm: 19}, max_rpm: 120}",
                        "attributes: {pins: {dir: 26, pwm: 19}, max_rpm: 120, pwm_freq: 45}")
    make_daemon(text)
    lines = [m for m in records.messages(logging.INFO) if m.startswith("motor ")]
    assert lines[0].startswith("motor left: a+b+pwm, PWM 1000 Hz"), lines
    assert "pwm_freq 900 Hz" in lines[0]
    assert lines[1].startswith("motor right: dir+pwm, PWM 50 Hz"), lines
    assert gpio.frequency(22) == 1000 and gpio.frequency(19) == 50


# --- the stop path is short -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("enables", ENABLES)
@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_stop_is_one_command_per_output(emulated: Gpio, wiring: str, enables: str) -> None:
    """Motor.stop(): exactly one pigpiod command per output, PWM 0 first, then direction low and enables inactive."""
    factory = open_factory("pigpio", emulated.host, emulated.port)
    try:
        pins = wiring_pins(wiring, enables)
        motor = Motor(MotorConfig("m", pins), factory)
        pwm = {"a", "b"} if wiring == "a+b" else {"pwm"}
        for power in (0.7, -0.7):
            motor.set_power(power)
            started = time.monotonic()
            motor.stop()
            returned = time.monotonic()
            sent = emulated.commands_since(started)
            wanted_pwm = sorted(("PWM", pins.used()[r], 0) for r in pwm)
            wanted_rest = sorted(("WRITE", p, int(r == "en_low")) for r, p in pins.used().items() if r not in pwm)
            got = [(c.name, c.p1, c.p2) for c in sent]
            assert len(got) == len(pins.used()), f"{len(got)} commands for {len(pins.used())} outputs: {got}"
            assert sorted(got[: len(pwm)]) == wanted_pwm, "PWM must go to 0 first"
            assert sorted(got[len(pwm):]) == wanted_rest
            assert all(c.result == 0 for c in sent)
            assert sent[-1].t <= returned
            assert read_motor(emulated, pins) == expected(pins, 0.0)
        motor.close()
    finally:
        factory.close()


# --- pin factories: exactly the one asked for ------------------------------------------------------------------------


def test_missing_pigpiod_is_a_clear_error(recwarn: pytest.WarningsRecorder) -> None:
    port = free_port()
    with pytest.raises(PinFactoryError, match=rf"cannot reach pigpiod at 127\.0\.0\.1:{port}.*is it running"):
        open_factory("pigpio", "127.0.0.1", port)
    assert not [w for w in recwarn if "Fallback" in type(w.message).__name__]


@pytest.mark.skipif(on_raspberry_pi(), reason="lgpio and RPi.GPIO do work on a Raspberry Pi")
@pytest.mark.parametrize("kind", ["lgpio", "rpigpio"])
def test_pi_only_factories_refuse_off_a_pi(kind: str, recwarn: pytest.WarningsRecorder) -> None:
    with pytest.raises(PinFactoryError, match=rf"gpio\.pin_factory {kind}: "):
        open_factory(kind)
    assert not [w for w in recwarn if "Fallback" in type(w.message).__name__]


# --- losing the GPIO backend ------------------------------------------------------------------------------------------


def test_losing_pigpiod_is_noticed_at_once_and_refuses_motion(
    emulated: Gpio, make_daemon: DaemonFactory, records: Records
) -> None:
    """Nothing moving, pigpiod dies: noticed well within one window, logged critical, motion refused, fatal; pigpio's
    notification thread (which spins on its dead socket) is stopped at once, so the CPU stays idle."""
    assert emulated.emu is not None
    daemon: Daemon = make_daemon(pigpio_config(emulated, "2s"))
    notify_thread = rig(daemon).factory.connection._notify  # pigpio.pi's notification thread
    client = Client(daemon.port)
    try:
        client.start()
        cpu_before = time.process_time()
        lost_at = emulated.kill_pigpiod()
        deadline = lost_at + 2.0
        while daemon.failure is None and time.monotonic() < deadline:
            time.sleep(0.001)
        noticed = time.monotonic() - lost_at
        assert daemon.failure is not None and "lost the GPIO backend" in daemon.failure
        assert noticed < 0.5, f"noticed {noticed:.3f} s after pigpiod died (window 2 s)"
        notify_thread.join(1)
        assert not notify_thread.is_alive(), "pigpio's notification thread still runs (spinning on a dead socket)"
        time.sleep(0.5)
        cpu = time.process_time() - cpu_before
        assert cpu < 0.3, f"{cpu:.2f} s of CPU in {time.monotonic() - lost_at:.2f} s after pigpiod died"
        assert make_daemon.fatal_calls == 1
        assert [m for m in records.messages(logging.CRITICAL) if "lost the GPIO backend" in m]
        assert daemon.motion_refused()
        with pytest.raises(grpc.RpcError) as info:
            client.set_power("left", 0.5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "motion refused" in (info.value.details() or "")
    finally:
        client.close()


def test_a_hung_pigpiod_is_noticed_within_one_window(emulated: Gpio, make_daemon: DaemonFactory) -> None:
    """pigpiod still connected but answering nothing: the health check's command times out (half a window)."""
    assert emulated.emu is not None
    daemon: Daemon = make_daemon(pigpio_config(emulated, "400ms"))
    with emulated.emu._cond:  # every command now waits for the emulator: a hung pigpiod
        hung_at = time.monotonic()
        while daemon.failure is None and time.monotonic() < hung_at + 2:
            time.sleep(0.005)
        noticed = time.monotonic() - hung_at
    assert daemon.failure is not None and "did not answer within 0.2 s" in daemon.failure
    assert noticed < 0.4 + 0.25, f"noticed {noticed:.3f} s after pigpiod hung (window 0.4 s; 0.25 s for a busy CI)"
    assert daemon.motion_refused()
