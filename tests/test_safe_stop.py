"""`rover-safety safe-stop`: every output of every configured motor off, without the daemon, fast, idempotent.

Runs against the pigpiod emulator, and against a real pigpiod with ROVER_SAFETY_HIL=1 (see docs/HARDWARE.md).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from rover_safety.api import motor_pb2

from tests.support.grpc_client import Client
from tests.support.hil import (
    ALL_MOTOR_PINS,
    OUTPUT,
    Gpio,
    Out,
    assert_all_off,
    no_traceback,
    nowhere_config,
    pigpio_config,
    rover_safety,
    served,
    with_aux,
    write_config,
)
from tests.support.pigpiod_emulator import Cmd

pytestmark = pytest.mark.timeout(90)

def drive_everything(client: Client) -> None:
    client.start()
    client.set_power("left", 0.6)
    client.set_power("right", -0.5)
    client.set_power("aux", 0.7)


def safe_stop(config: Path, gpio: Gpio) -> float:
    """Run `rover-safety safe-stop --config`; check it succeeded on one line, quickly. Returns when it started."""
    started = time.monotonic()
    result = rover_safety("safe-stop", "--config", str(config))
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    no_traceback(result.stderr)
    (line,) = result.stderr.strip().splitlines()
    match = re.search(r"safe-stop: 9 outputs off in ([0-9.]+) ms", line)
    assert match, line
    # Well under a second: connecting to pigpiod and driving all 9 outputs off, as the command measures it. The
    # whole process, interpreter start-up and imports included, takes about 0.3 s on an idle 2-core machine; the
    # bound on that is loose because CI machines are shared.
    assert float(match.group(1)) < 250, line
    assert took < 5.0, f"safe-stop took {took:.2f} s, interpreter start-up included"
    if gpio.emulated:
        # one command per output, every PWM one first (besides connecting, and a live daemon's health checks)
        sent = [c for c in gpio.commands_since(started) if c.cmd not in (Cmd.BR1, Cmd.NOIB, Cmd.NC, Cmd.TICK)]
        assert [(c.name, c.p1, c.p2) for c in sent] == [
            ("PWM", 22, 0), ("PWM", 19, 0), ("PWM", 20, 0), ("PWM", 21, 0),
            ("WRITE", 17, 0), ("WRITE", 27, 0), ("WRITE", 26, 0), ("WRITE", 13, 0), ("WRITE", 16, 1),
        ]
        connected = next(c.t for c in gpio.commands_since(started) if c.cmd == Cmd.BR1)
        assert sent[-1].t - connected < 0.1, "from connecting to the last output off"
    return started


def test_safe_stop_after_the_daemon_was_killed(gpio: Gpio, tmp_path: Path) -> None:
    """SIGKILL leaves PWM running in pigpiod; safe-stop turns every output off (PWM 0, direction low, en_high low,
    en_low high) in well under a second, exits 0, and does the same again when run twice."""
    config = write_config(tmp_path, with_aux(pigpio_config(gpio, "5s")))
    with served(config) as daemon, Client(daemon.port) as client:
        drive_everything(client)
        assert gpio.read(16) == Out(OUTPUT, 0, None) and gpio.read(13) == Out(OUTPUT, 1, None)  # enabled
        daemon.signal(signal.SIGKILL)
        assert daemon.wait() == -signal.SIGKILL
    # as real pigpiod would, the (emulated) pigpiod keeps generating PWM for the dead daemon
    assert gpio.read(22).duty == pytest.approx(0.6)
    assert gpio.read(19).duty == pytest.approx(0.5)
    assert gpio.read(20).duty == pytest.approx(0.7)
    safe_stop(config, gpio)
    assert_all_off(gpio, ALL_MOTOR_PINS)
    safe_stop(config, gpio)  # idempotent
    assert_all_off(gpio, ALL_MOTOR_PINS)


def test_safe_stop_while_the_daemon_runs(gpio: Gpio, tmp_path: Path) -> None:
    """Safe to run under a live daemon: outputs go off, and the daemon keeps working (it can drive again, and still
    stops on a lapse), because each PWM pin stays a PWM pin."""
    config = write_config(tmp_path, with_aux(pigpio_config(gpio, "1500ms")))
    with served(config) as daemon, Client(daemon.port) as client:
        drive_everything(client)
        safe_stop(config, gpio)
        assert_all_off(gpio, ALL_MOTOR_PINS)
        assert daemon.returncode is None, daemon.text
        client.set_power("left", 0.4)  # the same session, still live: motion calls count as heartbeats
        client.motor.SetPower(motor_pb2.SetPowerRequest(name="right", power_pct=0.3), metadata=client.md,
                              timeout=5)
        assert gpio.read(22).duty == pytest.approx(0.4) and gpio.read(19).duty == pytest.approx(0.3)
        assert gpio.wait(lambda: gpio.duty_now(22) == 0 and gpio.duty_now(19) == 0, timeout=5), "no lapse stop"
        daemon.wait_line(" expired: ", timeout=5)
        assert "ERROR" not in daemon.text and "CRITICAL" not in daemon.text, daemon.text
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_safe_stop_without_pigpiod_fails_clearly(tmp_path: Path) -> None:

    text, port = nowhere_config()
    config = write_config(tmp_path, with_aux(text))
    started = time.monotonic()
    result = rover_safety("safe-stop", "--config", str(config))
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    no_traceback(result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert ("safe-stop could not reach the hardware for the configured outputs: cannot reach pigpiod at "
            f"127.0.0.1:{port}") in line
