"""Every way `rover-safety serve` can end with motion in progress leaves the outputs off, driven off before the
process closed its pigpiod connection and ended; and every way it can fail to start says why on one line.

The daemon runs as a real process on pigpio (the pigpiod emulator, or a real pigpiod with ROVER_SAFETY_HIL=1).
Faults are injected by tests/support/hil_inject.py, which patches one function and runs the real CLI.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rover_safety.api import motor_pb2

from tests.support.grpc_client import Client
from tests.support.hil import (
    EXAMPLE_PINS,
    LEFT,
    RIGHT,
    Gpio,
    Served,
    assert_off_before,
    assert_off_or_released,
    connection_closed_at,
    no_traceback,
    nowhere_config,
    on_raspberry_pi,
    pigpio_config,
    rover_safety,
    served,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

@contextlib.contextmanager
def driving(daemon: Served, gpio: Gpio) -> Iterator[Client]:
    """A client in a session driving left forward at 0.6 and right backward at 0.4; closed at the end."""
    with Client(daemon.port) as client:
        client.start()
        client.set_power("left", 0.6)
        client.set_power("right", -0.4)
        assert gpio.duty_now(LEFT["pwm"]) == pytest.approx(0.6) and gpio.duty_now(RIGHT["pwm"]) == pytest.approx(0.4)
        yield client


def assert_ended_with_outputs_off(gpio: Gpio, daemon: Served, since: float, pins: dict[str, int]) -> None:
    """Outputs off after the end; on the emulator also: each was driven off before the daemon said goodbye to
    pigpiod (NC, just before its sockets close) and before the process ended."""
    assert daemon.ended_at is not None
    assert_off_or_released(gpio, pins)
    if gpio.emulated:
        closed = connection_closed_at(gpio, since)
        assert closed is not None, "the daemon never closed its pigpiod connection"
        assert_off_before(gpio, pins, since, before=min(closed, daemon.ended_at))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_output_and_exits_0(gpio: Gpio, tmp_path: Path, sig: signal.Signals) -> None:
    with served(write_config(tmp_path, pigpio_config(gpio, "5s"))) as daemon, driving(daemon, gpio):
        sent = daemon.signal(sig)
        assert daemon.wait() == 0, daemon.text
    assert_ended_with_outputs_off(gpio, daemon, sent, EXAMPLE_PINS)
    assert f"{sig.name}: stopping every output and exiting" in daemon.text
    assert "shutdown: stopped left, right" in daemon.text or "shutdown: stopped base" in daemon.text
    no_traceback(daemon.text)


def test_unhandled_exception_in_a_handler_exits_1(gpio: Gpio, tmp_path: Path) -> None:
    config = write_config(tmp_path, pigpio_config(gpio, "5s"))
    with served(config, inject="handler") as daemon, driving(daemon, gpio) as client:
        sent = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.motor.SetRPM(motor_pb2.SetRPMRequest(name="left", rpm=60), metadata=client.md, timeout=5)
        # INTERNAL, or UNAVAILABLE when the daemon's shutdown cancels the call before its answer is out
        assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
        assert daemon.wait() == 1, daemon.text
    assert_ended_with_outputs_off(gpio, daemon, sent, EXAMPLE_PINS)
    assert "unexpected error in SetRPM" in daemon.text and "injected: a bug in a driver command" in daemon.text


def test_exception_in_the_session_deadline_loop_exits_1(gpio: Gpio, tmp_path: Path) -> None:
    """The loop dies at the session's deadline instead of expiring it: the daemon stops everything and exits 1."""
    config = write_config(tmp_path, pigpio_config(gpio, "300ms"))
    with served(config, inject="deadline-loop") as daemon, driving(daemon, gpio):
        sent = time.monotonic()
        assert daemon.wait() == 1, daemon.text
    assert_ended_with_outputs_off(gpio, daemon, sent, EXAMPLE_PINS)
    assert "the session deadline loop crashed" in daemon.text and "injected: a bug in the deadline loop" in daemon.text
    assert " expired: " not in daemon.text  # the outputs went off through the failure, not the expiry


def test_reload_that_fails_half_way_exits_1(gpio: Gpio, tmp_path: Path) -> None:
    """SIGHUP with a config that re-wires `left` and adds `aux`: left is closed, building aux fails; `right`, still
    moving, is stopped and the daemon exits 1."""
    config = write_config(tmp_path, pigpio_config(gpio, "5s"))
    with served(config, inject="reload") as daemon, driving(daemon, gpio):
        config.write_text(config.read_text().replace("max_rpm: 120                      #", "max_rpm: 100  #")
                          + "  - name: aux\n    type: motor\n    model: gpio\n"
                          "    attributes: {pins: {a: 20, b: 21}, max_rpm: 120}\n")
        sent = daemon.signal(signal.SIGHUP)
        assert daemon.wait() == 1, daemon.text
    assert_ended_with_outputs_off(gpio, daemon, sent, EXAMPLE_PINS)
    assert "reload failed half-way" in daemon.text and "injected: cannot build the new components" in daemon.text


def test_losing_pigpiod_exits_non_zero_without_burning_cpu(emulated: Gpio, tmp_path: Path) -> None:
    """pigpiod dies while nothing moves: noticed within one heartbeat window, logged critical, exit 1, and the
    process uses little CPU from pigpiod's death to its own (pigpio's notification thread would spin a core)."""
    window = 2.0
    with served(write_config(tmp_path, pigpio_config(emulated, "2s"))) as daemon:
        Client(daemon.port).start()
        time.sleep(0.2)  # settle after start-up
        cpu_before = daemon.cpu_now()
        died = emulated.kill_pigpiod()
        noticed, _ = daemon.wait_line(r"CRITICAL .*lost the GPIO backend", timeout=window)
        assert daemon.wait() == 1, daemon.text
    assert daemon.ended_at is not None and daemon.cpu_seconds is not None
    assert noticed - died < window / 4, f"noticed {noticed - died:.3f} s after pigpiod died"
    assert daemon.ended_at - died < window, f"exited {daemon.ended_at - died:.3f} s after pigpiod died"
    cpu = daemon.cpu_seconds - cpu_before
    assert cpu < 0.3, f"{cpu:.2f} s of CPU from pigpiod's death to exit ({daemon.ended_at - died:.2f} s)"
    assert "refusing motion" in daemon.text and "runs safe-stop" in daemon.text
    no_traceback(daemon.text)


# --- the pin factory is explicit and verified at start-up -----------------------------------------------------------


def _refused_at_start(tmp_path: Path, text: str) -> str:
    started = time.monotonic()
    result = rover_safety("serve", "--config", str(write_config(tmp_path, text)), timeout=30)
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    no_traceback(result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_pigpiod_refuses_to_start(tmp_path: Path) -> None:
    text, port = nowhere_config()
    line = _refused_at_start(tmp_path, text)
    assert f"cannot start: gpio.pin_factory pigpio: cannot reach pigpiod at 127.0.0.1:{port}" in line


@pytest.mark.skipif(on_raspberry_pi(), reason="lgpio and RPi.GPIO do work on a Raspberry Pi")
@pytest.mark.parametrize("kind", ["lgpio", "rpigpio"])
def test_pi_only_factory_off_a_pi_refuses_to_start(tmp_path: Path, kind: str) -> None:
    text = nowhere_config()[0].replace("pin_factory: pigpio", f"pin_factory: {kind}")
    line = _refused_at_start(tmp_path, text)
    assert f"CRITICAL cannot start: gpio.pin_factory {kind}: " in line
    module = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO"}[kind]
    assert f"the Python module {module} is not installed" in line or "Raspberry Pi" in line
