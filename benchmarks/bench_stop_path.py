"""The stop path on pigpio, per wiring: pigpiod commands and time from stop() to the last off command.

    python benchmarks/bench_stop_path.py [--stops 300]

Runs the pigpiod emulator (tests/pigpiod_emulator.py) as a separate process on loopback, so that the client's
timing is not shared with the emulator's GIL, and reads its command log (time.monotonic() of each request, the
same clock as ours). For each wiring, a motor is driven (alternately forward and reverse) and stopped `--stops`
times, on two paths:

- rover-safety: `Motor.stop()` (PWM 0 on the PWM outputs first, then direction low and enables inactive, one
  pigpiod command per output on the factory's connection);
- gpiozero: its own classes on the same pins: `Motor(a, b, pwm=True)` for a+b, `PhaseEnableMotor(dir, pwm)` for
  dir+pwm, and for a+b+pwm (no gpiozero class) `.off()` on a PWMOutputDevice and two DigitalOutputDevices.

For each stop: the commands sent between the stop() call and its return, the time from the call to the last command
that drove an output off (as the emulator saw it arrive), and the time to return. Prints a Markdown table with
p50/p99 in microseconds, and the floor: one raw `pi.set_PWM_dutycycle(pin, 0)` round trip.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pigpio
from gpiozero import DigitalOutputDevice, PhaseEnableMotor, PWMOutputDevice
from gpiozero import Motor as GpiozeroMotor
from rover_safety.config import MotorConfig, MotorPins
from rover_safety.drivers import Motor, open_factory

TESTS = Path(__file__).resolve().parent.parent / "tests"
PWM, WRITE = 5, 4  # pigpiod command numbers


def load_emulator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pigpiod_emulator", TESTS / "pigpiod_emulator.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pigpiod_emulator"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Case:
    name: str
    pins: MotorPins
    gpiozero: str  # what gpiozero offers for this wiring


CASES = [
    Case("a+b+pwm", MotorPins(a=17, b=27, pwm=22), "PWMOutputDevice + 2 DigitalOutputDevice, .off() each"),
    Case("a+b+pwm, en_high+en_low", MotorPins(a=17, b=27, pwm=22, en_high=23, en_low=24), "(no enables)"),
    Case("dir+pwm", MotorPins(dir=5, pwm=6), "PhaseEnableMotor(phase=dir, enable=pwm).stop()"),
    Case("dir+pwm, en_high", MotorPins(dir=5, pwm=6, en_high=13), "(no enables)"),
    Case("a+b", MotorPins(a=20, b=21), "Motor(forward=a, backward=b, pwm=True).stop()"),
    Case("a+b, en_low", MotorPins(a=20, b=21, en_low=16), "(enable stays on in gpiozero)"),
]


@dataclass
class Stats:
    commands: list[int]
    to_last_off: list[float]  # seconds from the stop() call to the last off command's arrival
    to_return: list[float]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def is_off(cmd: Any) -> bool:
    """Inside a stop, every WRITE drives an output to its off level (en_low: high) and PWM 0 cuts power."""
    return bool((cmd.cmd == PWM and cmd.p2 == 0) or cmd.cmd == WRITE)


def measure(emulator: Any, stops: int, drive: Callable[[float], object], stop: Callable[[], object]) -> Stats:
    windows: list[tuple[float, float]] = []
    for i in range(stops):
        drive(0.6 if i % 2 == 0 else -0.6)
        called = time.monotonic()
        stop()
        windows.append((called, time.monotonic()))
    log = emulator.log(since=windows[0][0])
    stats = Stats([], [], [])
    j = 0
    for called, returned in windows:
        while j < len(log) and log[j].t < called:
            j += 1
        inside = []
        while j < len(log) and log[j].t <= returned:
            inside.append(log[j])
            j += 1
        offs = [c.t for c in inside if is_off(c)]
        stats.commands.append(len(inside))
        stats.to_last_off.append((max(offs) if offs else returned) - called)
        stats.to_return.append(returned - called)
    return stats


Path3 = tuple[Callable[[float], None], Callable[[], object], Callable[[], None]]  # drive(power), stop(), close()


def rover_safety_path(factory: Any, case: Case) -> Path3:
    motor = Motor(MotorConfig("m", case.pins), factory)
    return motor.set_power, motor.stop, motor.close


def gpiozero_path(factory: Any, case: Case) -> Path3:
    p = case.pins
    if p.wiring == "a+b":
        motor = GpiozeroMotor(forward=p.a, backward=p.b, pwm=True, pin_factory=factory)

        def drive_ab(power: float) -> None:
            motor.value = power

        return drive_ab, motor.stop, motor.close
    if p.wiring == "dir+pwm":
        pe = PhaseEnableMotor(phase=p.dir, enable=p.pwm, pwm=True, pin_factory=factory)

        def drive_pe(power: float) -> None:
            pe.value = power

        return drive_pe, pe.stop, pe.close
    speed = PWMOutputDevice(p.pwm, pin_factory=factory)
    a, b = DigitalOutputDevice(p.a, pin_factory=factory), DigitalOutputDevice(p.b, pin_factory=factory)

    def drive(power: float) -> None:
        (a if power > 0 else b).on()
        (b if power > 0 else a).off()
        speed.value = abs(power)

    def stop() -> None:
        speed.off()
        a.off()
        b.off()

    def close() -> None:
        for device in (speed, a, b):
            device.close()

    return drive, stop, close


def floor(emulator: Any, host: str, stops: int) -> Stats:
    pi = pigpio.pi(host, emulator.port)
    try:
        pi.set_PWM_dutycycle(18, 0)
        return measure(emulator, stops, lambda power: pi.set_PWM_dutycycle(18, 100),
                       lambda: pi.set_PWM_dutycycle(18, 0))
    finally:
        pi.stop()


def row(name: str, what: str, s: Stats) -> str:
    commands = sorted(set(s.commands))
    count = str(commands[0]) if len(commands) == 1 else f"{commands[0]}..{commands[-1]}"
    us = [1e6 * pct(v, q) for v in (s.to_last_off, s.to_return) for q in (0.5, 0.99)]
    return f"| {name} | {what} | {count} | {us[0]:.0f} / {us[1]:.0f} | {us[2]:.0f} / {us[3]:.0f} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--stops", type=int, default=300, help="stops per wiring and path (default 300)")
    args = ap.parse_args(argv)
    emu_module = load_emulator()
    host = "127.0.0.1"
    with emu_module.EmulatorClient.spawn(host=host) as emulator:
        print(f"# stop path on pigpio: {args.stops} stops per row, pigpiod emulator in its own process on loopback")
        print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
              f"{time.strftime('%Y-%m-%d')}")
        print()
        print("| wiring | path | pigpiod commands per stop | call -> last off command, us p50 / p99 "
              "| call -> return, us p50 / p99 |")
        print("|---|---|---|---|---|")
        print(row("(floor)", "one raw `pi.set_PWM_dutycycle(pin, 0)`", floor(emulator, host, args.stops)))
        for case in CASES:
            for path, build in (("rover-safety `Motor.stop()`", rover_safety_path), ("gpiozero", gpiozero_path)):
                if path == "gpiozero" and case.gpiozero.startswith("("):
                    continue  # gpiozero has no enables to turn off: the row without enables compares
                factory = open_factory("pigpio", host, emulator.port)
                try:
                    drive, stop, close = build(factory, case)
                    stats = measure(emulator, args.stops, drive, stop)
                    close()
                finally:
                    factory.close()
                outputs = len(case.pins.used())
                what = f"{path} ({outputs} outputs)" if path != "gpiozero" else f"gpiozero: {case.gpiozero}"
                print(row(case.name, what, stats))
                emulator.clear_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
