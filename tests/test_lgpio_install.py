"""`make install` (systemd/install.sh) gives a new config the pin factory that fits the board: lgpio on a Raspberry
Pi 5, pigpio on older Pis (saying that pigpiod must run), pigpio off a Pi (saying so, and why not mock); read from
/proc/device-tree/model, else /proc/cpuinfo's Revision, here from files named by ROVER_SAFETY_BOARD_MODEL and
ROVER_SAFETY_CPUINFO. `install.sh --detect-board` is the same choice without installing anything; the choice is
always said, never silent. (The whole install, into a throwaway systemd, is tests/test_systemd.py's.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.daemons import CHECKOUT

INSTALL_SH = CHECKOUT / "systemd" / "install.sh"
EXAMPLE = CHECKOUT / "config" / "example.yaml"

PI5 = "Raspberry Pi 5 Model B Rev 1.0"
MODELS = [
    (PI5, "lgpio"),
    ("Raspberry Pi 500 Rev 1.0", "lgpio"),
    ("Raspberry Pi Compute Module 5 Rev 1.0", "lgpio"),
    ("Raspberry Pi 4 Model B Rev 1.4", "pigpio"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "pigpio"),
    ("Raspberry Pi Zero 2 W Rev 1.0", "pigpio"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "pigpio"),
]
REVISIONS = [("d04170", "lgpio"), ("c04170", "lgpio"), ("b03114", "pigpio"), ("a02082", "pigpio"),
             ("902120", "pigpio"), ("0013", "pigpio"), ("1000002", "pigpio")]


def detect(tmp_path: Path, model: str | None = None, cpuinfo: str = "", **env: str) -> tuple[str, str]:
    """Run `install.sh --detect-board` (as whoever runs the tests: it needs no root); its choice and its message."""
    model_file, cpuinfo_file = tmp_path / "model", tmp_path / "cpuinfo"
    if model is not None:
        model_file.write_bytes(model.encode() + b"\0")  # the device tree's string ends in a NUL
    cpuinfo_file.write_text(cpuinfo)
    result = subprocess.run(
        ["bash", str(INSTALL_SH), "--detect-board"], capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "/usr/bin:/bin", "ROVER_SAFETY_BOARD_MODEL": str(model_file),
             "ROVER_SAFETY_CPUINFO": str(cpuinfo_file), **env},
    )
    assert result.returncode == 0, result.stderr
    *lines, choice = result.stdout.strip().splitlines()
    said = "\n".join(lines)
    match = re.fullmatch(r"pin_factory: (\w+)", choice)
    assert match and said.startswith("rover-safety install: board: "), result.stdout
    return match[1], said


@pytest.mark.parametrize(("model", "factory"), MODELS)
def test_the_device_tree_model_picks_the_factory(tmp_path: Path, model: str, factory: str) -> None:
    chosen, said = detect(tmp_path, model)
    assert chosen == factory
    assert f"board: {model} (from {tmp_path / 'model'}); pin_factory: {factory}" in said
    if factory == "lgpio":
        assert "a Raspberry Pi 5 has only lgpio: pigpiod does not run on it" in said
    else:
        assert "pigpiod must run: sudo apt install pigpiod && sudo systemctl enable --now pigpiod" in said


@pytest.mark.parametrize(("revision", "factory"), REVISIONS)
def test_without_a_device_tree_cpuinfo_revision_picks_it(tmp_path: Path, revision: str, factory: str) -> None:
    cpuinfo = f"processor\t: 0\nHardware\t: BCM2835\nRevision\t: {revision}\nSerial\t\t: 100000001\n"
    chosen, said = detect(tmp_path, None, cpuinfo)
    assert chosen == factory, said
    assert f"with Revision {revision} (from {tmp_path / 'cpuinfo'}); pin_factory: {factory}" in said


def test_the_device_tree_comes_before_cpuinfo(tmp_path: Path) -> None:
    assert detect(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", "Revision\t: d04170\n")[0] == "pigpio"
    assert detect(tmp_path, "", f"Revision\t: d04170\nModel\t\t: {PI5}\n") == (
        "lgpio", f"rover-safety install: board: {PI5} with Revision d04170 (from {tmp_path / 'cpuinfo'}); "
                 "pin_factory: lgpio (a Raspberry Pi 5 has only lgpio: pigpiod does not run on it)")


@pytest.mark.parametrize(("model", "cpuinfo"), [(None, "processor\t: 0\nvendor_id\t: GenuineIntel\n"),
                                                ("Pine64 RockPro64 v2.1", ""), (None, "Revision\t: 0000\n")],
                         ids=["x86", "another-board", "revision-0000"])
def test_off_a_pi_it_is_pigpio_and_says_so(tmp_path: Path, model: str | None, cpuinfo: str) -> None:
    """Off a Pi: pigpio (only a pigpiod on a Pi can drive a rover from here), never a silent mock."""
    chosen, said = detect(tmp_path, model, cpuinfo)
    assert chosen == "pigpio"
    assert "board: not a Raspberry Pi: " in said
    assert "pin_factory: pigpio, which needs a pigpiod: point gpio.pigpio.host at a Pi's" in said
    assert "or set pin_factory: mock to try it on simulated pins (nothing driven)" in said


def test_an_explicit_factory_wins_and_a_pi5_says_what_it_needs(tmp_path: Path) -> None:
    chosen, said = detect(tmp_path, PI5, ROVER_SAFETY_PIN_FACTORY="mock")
    assert chosen == "mock" and "pin_factory: mock, as ROVER_SAFETY_PIN_FACTORY says" in said
    result = subprocess.run(["bash", str(INSTALL_SH), "--detect-board"], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "ROVER_SAFETY_BOARD_MODEL": str(tmp_path / "model"),
                                 "ROVER_SAFETY_PIN_FACTORY": "pigpio"}, check=False)
    assert result.returncode == 0 and "warning: this is a Raspberry Pi 5, which only lgpio drives" in result.stdout
    bad = subprocess.run(["bash", str(INSTALL_SH), "--detect-board"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "ROVER_SAFETY_PIN_FACTORY": "gpiod"}, check=False)
    assert bad.returncode == 1
    assert "ROVER_SAFETY_PIN_FACTORY=gpiod: use pigpio, lgpio, rpigpio or mock" in bad.stderr


@pytest.mark.parametrize("factory", ["lgpio", "pigpio"])
def test_the_line_a_new_config_gets(factory: str) -> None:
    """What install.sh writes over the example's `pin_factory: mock` line (its sed, run on the example here), and
    that the result is a valid config on that factory."""
    script = INSTALL_SH.read_text()
    assert "line=$(printf '  pin_factory: %-25s# pigpio | lgpio | rpigpio | mock' \"$factory\")" in script
    line = subprocess.run(["bash", "-c", "printf '  pin_factory: %-25s# pigpio | lgpio | rpigpio | mock' \"$1\"",
                           "-", factory], capture_output=True, text=True, check=True).stdout
    written = subprocess.run(["sed", "-e", f"s/^  pin_factory: mock .*/{line}/", str(EXAMPLE)], capture_output=True,
                             text=True, check=True).stdout
    assert written.count(line + "\n") == 1 and "pin_factory: mock" not in written
    from rover_safety.config import parse

    config = parse(written, "config.yaml")
    assert config.pin_factory == factory and config.lgpio_chip is None  # lgpio: the chip is detected
