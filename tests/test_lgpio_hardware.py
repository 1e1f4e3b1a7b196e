"""The lgpio path on a real Raspberry Pi (a Pi 5, or a Pi 4/3 with lgpio): what only the real chip can show, read
back with Raspberry Pi OS's `pinctrl get`, which reads a pin's function and level without claiming it.

All `hardware`: deselected unless ROVER_SAFETY_HIL=1 (tests/conftest.py). On the rover, with the motors unable to
move and the service stopped (docs/HARDWARE.md), after `make test` and `.venv/bin/pip install lgpio`:

    ROVER_SAFETY_HIL=1 .venv/bin/python -m pytest -m hardware tests/test_lgpio_hardware.py

Everything else of the lgpio path runs on the fake without a Pi (tests/test_lgpio.py, test_lgpio_daemon.py,
test_systemd_lgpio.py); these check the fake's three claims about the real thing: software PWM really toggles the
line and a stop really leaves it low; a SIGKILL leaves the line driven and static (wherever the PWM had it); and a
line safe-stop claimed and released stays low (the kernel, and RP1's persist_gpio_outputs on a Pi 5, keep a
released output's level; if a kernel reverted it to an input instead, the board's pull-down holds it low).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.grpc_client import Client
from tests.support.hil import EXAMPLE_PINS, no_traceback
from tests.support.lgpio_daemon import Rig, lgpio_config, make_rig, off_level, run, served

pytestmark = [pytest.mark.hardware, pytest.mark.timeout(120)]

PINCTRL = re.compile(r"^\s*(\d+): (\w+)\b.*\| (hi|lo)\b")


def pinctrl(gpio: int) -> tuple[str, int]:
    """(function, level) of a pin as `pinctrl get` reads it: function "op" (output), "ip" (input), ...; 1 or 0."""
    tool = shutil.which("pinctrl")
    assert tool is not None, "pinctrl (Raspberry Pi OS's raspi-utils) is needed to read the pins back"
    out = subprocess.run([tool, "get", str(gpio)], capture_output=True, text=True, timeout=5, check=True).stdout
    match = PINCTRL.match(out)
    assert match and int(match[1]) == gpio, out
    return match[2], int(match[3] == "hi")


def levels(gpio: int, samples: int = 200) -> set[int]:
    """The levels seen over `samples` reads (a running PWM shows both)."""
    return {pinctrl(gpio)[1] for _ in range(samples)}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    tmp_path.chmod(0o755)
    return make_rig(tmp_path, real=True)


def config(rig: Rig, window: str = "5s") -> Path:
    path = rig.directory / "rover.yaml"
    path.write_text(lgpio_config(window))
    return path


def test_real_pwm_toggles_and_a_stop_leaves_every_line_low(rig: Rig) -> None:
    with served(rig, config(rig)) as daemon:
        client = Client(daemon.port)
        try:
            client.start()
            client.set_power("left", 0.5)
            assert pinctrl(17) == ("op", 1) and pinctrl(27) == ("op", 0)
            assert levels(22) == {0, 1}, "left's PWM does not toggle GPIO22"
            daemon.signal(signal.SIGTERM)  # the daemon's own stop of every output, then it lets go of the lines
            assert daemon.wait() == 0, daemon.text
        finally:
            client.close()
    no_traceback(daemon.text)
    for role, gpio in EXAMPLE_PINS.items():
        assert levels(gpio, 50) == {off_level(role)}, f"{role} (GPIO{gpio}) is not held at its off level"


def test_real_sigkill_leaves_the_line_driven_and_safe_stop_drives_it_low(rig: Rig) -> None:
    path = config(rig)
    with served(rig, path) as daemon:
        client = Client(daemon.port)
        try:
            client.start()
            client.set_power("left", 0.5)
            assert levels(22) == {0, 1}
            daemon.signal(signal.SIGKILL)
            assert daemon.wait() == -signal.SIGKILL
        finally:
            client.close()
    time.sleep(0.05)
    function, _ = pinctrl(22)
    left = levels(22, 100)
    assert function == "op" and len(left) == 1, f"after SIGKILL GPIO22 is {function} {left}: driven and static?"
    assert pinctrl(17) == ("op", 1), "left.a should still be driven high by the dead daemon's released line"
    result = run(rig, "safe-stop", "--config", str(path))
    assert result.returncode == 0, result.stderr
    no_traceback(result.stderr)
    for role, gpio in EXAMPLE_PINS.items():
        assert levels(gpio, 50) == {off_level(role)}, f"{role} (GPIO{gpio}) not off after safe-stop"
        assert pinctrl(gpio)[0] in ("op", "ip")  # released: still an output at its level (or an input, pulled)
