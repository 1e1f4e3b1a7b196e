"""The pigpiod emulator, exercised with the real pigpio client and gpiozero's PiGPIOFactory."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pigpio
import pytest
from gpiozero import DigitalInputDevice, DigitalOutputDevice, Motor, PWMOutputDevice
from gpiozero.pins.pigpio import PiGPIOFactory
from rover_safety.drivers.pins.pigpio import stop_connection

from tests.support.hil import cpu_ticks
from tests.support.pigpiod_emulator import (
    PI_UNKNOWN_COMMAND,
    Cmd,
    EmulatorClient,
    PigpiodEmulator,
)

HOST = "127.0.0.1"
DEAD_PIGPIOD = (struct.error, OSError)  # what pigpio raises once pigpiod has gone


@pytest.fixture
def emu() -> Iterator[PigpiodEmulator]:
    with PigpiodEmulator() as emulator:
        yield emulator


@pytest.fixture
def pi(emu: PigpiodEmulator) -> Iterator[pigpio.pi]:
    client = pigpio.pi(HOST, emu.port, show_errors=False)
    assert client.connected
    yield client
    stop_connection(client)


@pytest.fixture
def factory(emu: PigpiodEmulator) -> Iterator[PiGPIOFactory]:
    f = PiGPIOFactory(host=HOST, port=emu.port)
    yield f
    f.close()


def test_pigpio_connects(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    assert pi.get_hardware_revision() == 0xA02082
    assert emu.client_count == 2  # command socket + notification socket
    names = [c.name for c in emu.log]
    assert names[:2] == ["BR1", "NOIB"]


def test_mode_write_read(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    assert pi.get_mode(17) == pigpio.INPUT
    pi.set_mode(17, pigpio.OUTPUT)
    pi.write(17, 1)
    assert pi.read(17) == 1
    assert (emu.pin(17).mode, emu.pin(17).level, emu.pin(17).function) == (pigpio.OUTPUT, 1, "write")
    pi.write(17, 0)
    assert pi.read(17) == 0 and emu.pin(17).level == 0
    pi.set_mode(17, pigpio.INPUT)
    pi.set_pull_up_down(17, pigpio.PUD_UP)
    assert pi.read(17) == 1 and emu.pin(17).pull == pigpio.PUD_UP
    emu.set_input(17, 0)
    assert pi.read(17) == 0


@pytest.mark.parametrize(
    ("asked", "got"), [(1234, 1000), (900, 1000), (45, 50), (99, 100), (100_000, 8000), (1, 10), (0, 10)]
)
def test_pwm_frequency_rounds_like_pigpiod(emu: PigpiodEmulator, pi: pigpio.pi, asked: int, got: int) -> None:
    assert pi.get_PWM_frequency(18) == 800  # pigpiod's default
    assert pi.set_PWM_frequency(18, asked) == got
    assert pi.get_PWM_frequency(18) == got == emu.pin(18).frequency


def test_pwm_duty_and_range(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    assert pi.get_PWM_range(18) == 255
    with pytest.raises(pigpio.error):
        pi.get_PWM_dutycycle(18)  # not a PWM pin yet
    assert pi.set_PWM_range(18, 1000) == 250  # the real range at 800 Hz
    pi.set_PWM_dutycycle(18, 500)
    assert pi.get_PWM_dutycycle(18) == 500
    state = emu.pin(18)
    assert (state.mode, state.level, state.duty, state.range, state.function) == (1, 1, 500, 1000, "pwm")
    assert state.pwm_running and state.duty_cycle == 0.5
    assert pi.set_PWM_frequency(18, 1000) == 1000 and pi.get_PWM_real_range(18) == 200
    pi.set_PWM_range(18, 100)  # pigpiod rescales a running duty
    assert pi.get_PWM_dutycycle(18) == 50
    with pytest.raises(pigpio.error):
        pi.set_PWM_dutycycle(18, 101)
    pi.set_PWM_dutycycle(18, 0)
    assert not emu.pin(18).pwm_running and emu.pin(18).level == 0 and pi.read(18) == 0
    pi.set_PWM_dutycycle(18, 100)
    pi.write(18, 0)  # a write stops PWM, as in pigpiod
    assert emu.pin(18).function == "write" and emu.pin(18).duty == 0


def test_hardware_pwm_servo_and_misc(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    pi.hardware_PWM(18, 25_000, 250_000)  # HP carries the duty in a 4-byte extension
    state = emu.pin(18)
    assert (state.mode, state.function, state.frequency, state.duty, state.level) == (2, "hw_pwm", 25_000, 250_000, 1)
    assert pi.get_PWM_dutycycle(18) == 250_000 and pi.get_PWM_range(18) == 1_000_000
    assert [c.ext for c in emu.log if c.cmd == Cmd.HP] == [struct.pack("<I", 250_000)]
    with pytest.raises(pigpio.error):
        pi.hardware_PWM(17, 25_000, 250_000)  # no hardware PWM on GPIO 17
    pi.set_servo_pulsewidth(4, 1500)
    assert pi.get_servo_pulsewidth(4) == 1500 and emu.pin(4).pulsewidth == 1500
    pi.set_watchdog(5, 100)
    pi.set_glitch_filter(5, 300)
    assert (emu.pin(5).watchdog_ms, emu.pin(5).glitch_us) == (100, 300)
    pi.set_mode(22, pigpio.OUTPUT)
    pi.set_bank_1(1 << 22)
    assert pi.read_bank_1() >> 22 & 1 == 1
    assert 0 <= pi.get_current_tick() < 2**32


def test_unknown_and_bad_requests_get_errors(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    with pytest.raises(pigpio.error):
        pi.gpio_trigger(4, 10, 1)  # unemulated, carries a 4-byte extension: the stream stays in step
    assert pi.read(4) == 1
    with socket.create_connection((HOST, emu.port)) as raw:
        raw.sendall(struct.pack("<4I", 250, 1, 2, 0))
        assert struct.unpack("<3Ii", raw.recv(16)) == (250, 1, 2, PI_UNKNOWN_COMMAND)
        raw.sendall(struct.pack("<4I", Cmd.WRITE, 99, 1, 0))
        assert struct.unpack("<3Ii", raw.recv(16))[3] == pigpio.PI_BAD_GPIO
        raw.sendall(struct.pack("<4I", 110, 0, 0, 2**31))  # SHELL with an absurd extension: dropped
        assert raw.recv(16) == b""
    assert pi.read(4) == 1


def test_gpiozero_pwm_output_device(emu: PigpiodEmulator, factory: PiGPIOFactory) -> None:
    dev = PWMOutputDevice(18, pin_factory=factory)
    state = emu.pin(18)
    assert (state.function, state.duty, state.range, state.frequency, state.level) == ("pwm", 0, 10_000, 100, 0)
    dev.value = 0.5
    assert emu.pin(18).duty == 5000 and emu.pin(18).level == 1
    t = time.monotonic()
    dev.value = 0
    assert [c.name for c in emu.commands_since(t)] == ["PRG", "GDC", "PWM"]
    assert emu.pin(18).duty == 0 and emu.pin(18).level == 0
    dev.close()
    assert emu.pin(18).mode == pigpio.INPUT


def test_gpiozero_digital_output_device(emu: PigpiodEmulator, factory: PiGPIOFactory) -> None:
    dev = DigitalOutputDevice(17, pin_factory=factory)
    assert (emu.pin(17).mode, emu.pin(17).level) == (pigpio.OUTPUT, 0)
    dev.on()
    assert emu.pin(17).level == 1
    dev.off()
    assert emu.pin(17).level == 0
    dev.close()


def test_gpiozero_motor(emu: PigpiodEmulator, factory: PiGPIOFactory) -> None:
    motor = Motor(forward=23, backward=24, pwm=True, pin_factory=factory)
    motor.forward(0.6)
    assert (emu.pin(23).duty, emu.pin(24).duty, emu.pin(23).level, emu.pin(24).level) == (6000, 0, 1, 0)
    motor.backward(0.3)
    assert (emu.pin(23).duty, emu.pin(24).duty, emu.pin(23).level, emu.pin(24).level) == (0, 3000, 0, 1)
    motor.stop()
    assert (emu.pin(23).duty, emu.pin(24).duty, emu.pin(23).level, emu.pin(24).level) == (0, 0, 0, 0)
    assert emu.pin(23).frequency == emu.pin(24).frequency == 100
    motor.close()


def test_gpiozero_input_gets_notifications(emu: PigpiodEmulator, factory: PiGPIOFactory) -> None:
    button = DigitalInputDevice(16, pull_up=False, pin_factory=factory)
    pressed: list[bool] = []
    button.when_activated = lambda: pressed.append(True)
    emu.set_input(16, 1)
    deadline = time.monotonic() + 2
    while not pressed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pressed and button.value == 1
    button.close()


CHILD = """
import sys, time
from gpiozero import PWMOutputDevice
from gpiozero.pins.pigpio import PiGPIOFactory
dev = PWMOutputDevice(18, frequency=1000, pin_factory=PiGPIOFactory(host="127.0.0.1", port=int(sys.argv[1])))
dev.value = 0.7
print("driving", flush=True)
time.sleep(30)
"""


def test_killed_client_leaves_pwm_running(emu: PigpiodEmulator) -> None:
    with subprocess.Popen([sys.executable, "-c", CHILD, str(emu.port)], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            assert select.select([child.stdout], [], [], 10)[0], "child never started driving"
            assert child.stdout.readline() == b"driving\n"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
        finally:
            child.kill()
    assert emu.wait_for(lambda: emu.client_count == 0, timeout=5)
    state = emu.pin(18)
    assert state.pwm_running and (state.duty, state.range, state.frequency, state.level) == (7000, 10_000, 1000, 1)
    assert [c.p2 for c in emu.log if c.cmd == Cmd.PWM and c.p1 == 18][-1] == 7000  # nothing stopped it


def test_stop_makes_next_write_raise_and_state_survives_restart(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    port = emu.port
    pi.set_PWM_dutycycle(18, 200)
    notify_thread = pi._notify
    emu.stop()
    assert emu.client_count == 0 and not emu.running
    with pytest.raises(DEAD_PIGPIOD):
        pi.write(17, 1)
    stop_connection(pi)  # also ends pigpio's notify thread, which spins once pigpiod has gone
    notify_thread.join(2)
    assert not notify_thread.is_alive()
    assert emu.pin(18).duty == 200  # PWM keeps running in a dead pigpiod's pins
    emu.start()
    assert emu.port == port
    again = pigpio.pi(HOST, port, show_errors=False)
    try:
        assert again.get_PWM_dutycycle(18) == 200
    finally:
        stop_connection(again)


def test_idle_client_notify_thread_does_not_spin(pi: pigpio.pi) -> None:
    stat = f"/proc/self/task/{pi._notify.native_id}/stat"
    before = cpu_ticks(stat)
    time.sleep(0.5)
    assert cpu_ticks(stat) - before <= 2  # a spinning thread would use about 50


def test_log_helpers(emu: PigpiodEmulator, pi: pigpio.pi) -> None:
    emu.clear_log()
    t = time.monotonic()
    pi.write(17, 1)
    (entry,) = emu.commands_since(t)
    assert entry[1:] == (Cmd.WRITE, 17, 1, 0, b"", 0) and entry.name == "WRITE"
    assert t <= entry.t <= time.monotonic()
    assert emu.commands_since(time.monotonic()) == []
    assert not emu.wait_for(lambda: emu.pin(17).level == 0, timeout=0.05)
    assert emu.wait_for(lambda: emu.pin(17).level == 1, timeout=0.05)


def test_standalone_process() -> None:
    with EmulatorClient.spawn() as client:
        pi = pigpio.pi(HOST, client.port, show_errors=False)
        try:
            assert pi.connected and pi.get_hardware_revision() == 0xA02082
            t = time.monotonic()
            pi.set_PWM_dutycycle(18, 100)
            assert client.pin(18).duty == 100 and client.pin(18).level == 1
            (entry,) = client.log(since=t)
            assert entry.name == "PWM" and (entry.p1, entry.p2, entry.result) == (18, 100, 0)
            assert t <= entry.t <= time.monotonic()  # one monotonic clock across processes
            client.set_input(5, 1)
            assert pi.read(5) == 1
            assert len(client.pins()) == 54
            client.stop_pigpiod()
            with pytest.raises(DEAD_PIGPIOD):
                pi.write(17, 1)
        finally:
            stop_connection(pi)
        assert client.pin(18).duty == 100
        client.start_pigpiod()
        again = pigpio.pi(HOST, client.port, show_errors=False)
        try:
            assert again.get_PWM_dutycycle(18) == 100
        finally:
            stop_connection(again)
        assert client.wait_for(lambda: client.status()["clients"] == 0, timeout=2)
    assert client.process is not None and client.process.returncode is not None
