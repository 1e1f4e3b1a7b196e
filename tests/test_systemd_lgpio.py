"""The shipped unit on lgpio (a Raspberry Pi 5) under a real systemd, the fake lgpio standing in for the chip.

The unit is installed as shipped (only the Exec lines' executable and --config substituted); a test-only drop-in
puts the fake on PYTHONPATH, makes its chip state file writable and binds a Pi 5's /proc/cpuinfo for gpiozero
(tests/support/lgpio_systemd.py says exactly what is real and what stands in). What is proved:

- the daemon on lgpio under the full sandbox: it opens /dev/gpiochip0 (a real character device node, root:gpio
  0660, through the unit's device cgroup and its user's gpio group), drives and expires at the lines; SIGKILL
  mid-PWM, then ExecStopPost's safe-stop drives every recorded line off, the ones left high too, and Restart=
  brings it back; `systemctl stop` leaves everything off: test_lgpio_unit_...
- DeviceAllow=char-gpiochip is what lets the daemon at the chip, and it matches through /proc/devices: with this
  kernel's /proc/devices (no gpiochip major) the device cgroup denies the node (EPERM), with one that lists the
  node's major as gpiochip (as a Pi's does) it allows it, and with the unit's DeviceAllow= list emptied it denies
  it again; a node outside the service's groups is EACCES. Each is one clear line, from the daemon and from
  safe-stop: test_device_access_...
- WorkingDirectory=/tmp and Environment=LG_WD=/tmp are what lgpio's notification pipe needs: without both the
  daemon fails with lgpio's pipe error, clearly; either one alone suffices: test_working_directory_...
- install.sh on a Pi 5 writes a config on lgpio and pulls no pigpiod in: test_install_sh_on_a_pi5_...

What this cannot prove without a Pi: that a Pi 5's kernel lists its gpiochip major in /proc/devices under that
name (Raspberry Pi OS: "254 gpiochip"), the real lgpio's behaviour inside this sandbox (its C library, its PWM
threads under the system-call filter), and what the RP1 chip does with a released line (docs/HARDWARE.md).
"""

from __future__ import annotations

import grp
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_lgpio import on_raspberry_pi
from tests.support.hil import EXAMPLE_PINS
from tests.support.lgpio_daemon import bad_lines, first_off, ns, off_level, off_or_released
from tests.support.lgpio_systemd import NODE, LgpioRover
from tests.support.systemd_harness import SystemdInstance
from tests.support.systemd_rover import INSTALL_SH, UNIT, ServiceCode, install_catalog_inside, systemd_test

pytestmark = [
    pytest.mark.timeout(300),
    # the fake never shadows a Pi's real lgpio; there, tests/test_lgpio_hardware.py runs the real one
    pytest.mark.skipif(on_raspberry_pi(), reason="a Raspberry Pi: the fake lgpio stands in only where there is none"),
]

LATE = 0.2


@pytest.fixture
def rover(systemd: SystemdInstance, service_code: ServiceCode) -> Iterator[LgpioRover]:
    made = LgpioRover(systemd, service_code)
    try:
        yield made
    finally:
        made.close()


def all_off(rover: LgpioRover) -> bool:
    return not bad_lines(rover.chip, EXAMPLE_PINS)


@systemd_test
def test_lgpio_unit_drives_expires_and_is_safe_stopped_after_sigkill(rover: LgpioRover) -> None:
    rover.make_node()
    rover.list_gpiochip_major()
    rover.install("1s")  # (a loaded 2-core machine: a shorter window can lapse between two calls)
    rover.start()
    chip = rover.chip
    pid = rover.main_pid()
    assert all(chip.line(p).owner_pid == pid and chip.line(p).owner_alive for p in EXAMPLE_PINS.values())
    assert all_off(rover), "the daemon drives every output off before READY"
    status = Path(f"/proc/{rover.host_pid()}/status").read_text()
    groups = next(line.split()[1:] for line in status.splitlines() if line.startswith("Groups:"))
    assert str(grp.getgrnam("gpio").gr_gid) in groups  # what opens the root:gpio 0660 node

    # Driving, then a lapse: PWM to 0 at the deadline, then the direction lines low.
    client = rover.client()
    client.start()
    client.set_power("left", 0.6)
    client.set_power("right", -0.4)
    assert (chip.line(22).duty, chip.line(19).duty, chip.line(17).level) == (60.0, 40.0, 1)
    window = client.window
    sent = time.monotonic()
    client.heartbeat()
    answered = time.monotonic()
    assert chip.wait_for(lambda: chip.line(22).duty == 0 and chip.line(19).duty == 0, 3 * window)
    assert chip.wait_for(lambda: all_off(rover), 1), bad_lines(chip, EXAMPLE_PINS)
    for gpio in (22, 19):
        off = first_off(chip.events_since(ns(answered)), gpio, 0)
        assert off is not None and off.pid == pid
        assert sent + window <= off.t <= answered + window + LATE, (gpio, off.t - sent - window)

    # SIGKILL mid-PWM: lgpio's PWM dies with the process, the lines stay driven (high, worst case); ExecStopPost's
    # safe-stop claims every one at its off level; Restart= brings the daemon back, on lines that are off.
    client.start()
    client.set_power("left", 0.6)
    client.set_power("right", 0.5)
    cursor = rover.systemd.cursor()
    killed = time.monotonic()
    rover.systemd.run("kill", "-KILL", str(pid))
    line = rover.wait_journal(lambda m: m.startswith("safe-stop: "), cursor)
    assert re.match(r"safe-stop: 5 outputs off in [0-9.]+ ms", line), line
    events = chip.events_since(ns(killed))
    reaped = {e.gpio: e for e in events if e.kind == "reaped" and e.pid == pid}
    assert set(reaped) == set(EXAMPLE_PINS.values())
    assert reaped[22].level == 1 and reaped[19].level == 1, "the killed daemon's PWM lines were left high"
    claims = [e for e in events if e.kind == "claim_output" and e.pid not in (pid, 0)]
    stopper = claims[0].pid
    assert [(e.gpio, e.level) for e in claims if e.pid == stopper] == [
        (22, 0), (19, 0), (17, 0), (27, 0), (26, 0)]  # PWM lines first, every one at its off level
    rover.systemd.wait_for_state("rover-safety.service", "active", timeout=15)
    again = rover.main_pid()
    assert again not in (0, pid, stopper)
    assert chip.wait_for(lambda: chip.line(22).owner_pid == again, 5) and all_off(rover)

    # systemctl stop: SIGTERM (every output off, exit 0), then safe-stop once more; the lines stay off.
    cursor = rover.systemd.cursor()
    rover.systemd.stop("rover-safety.service")
    rover.wait_journal(lambda m: m.startswith("safe-stop: 5 outputs off"), cursor)
    assert all(off_or_released(chip.line(p), off_level(r)) for r, p in EXAMPLE_PINS.items())
    assert all_off(rover), "safe-stop leaves every line an output at its off level"
    alarms = [str(e.get("MESSAGE")) for e in rover.journal(None) if e.get("PRIORITY") in ("0", "1", "2")]
    assert not alarms, alarms  # nothing critical from the daemon or safe-stop, the SIGKILL included


def refused(rover: LgpioRover, *expected: str) -> tuple[str, str]:
    """Start the unit, which must fail; the daemon's and safe-stop's lines about it (each must contain every
    `expected` text), after which the unit is kept from restarting."""
    cursor = rover.systemd.cursor()
    assert not rover.start(check=False), rover.status()
    daemon = rover.wait_journal(lambda m: m.startswith("cannot start: "), cursor)
    stopper = rover.wait_journal(lambda m: m.startswith("safe-stop could not reach the hardware"), cursor)
    rover.give_up()
    for text in expected:
        assert text in daemon, daemon
        assert text in stopper, stopper
    return daemon, stopper


@systemd_test
def test_device_access_is_the_units_device_cgroup_and_the_gpio_group(rover: LgpioRover) -> None:
    rover.install()

    # This kernel's /proc/devices names no gpiochip major: DeviceAllow=char-gpiochip matches nothing and
    # DevicePolicy=closed denies the node (EPERM) — as it would on a Pi whose kernel had no gpiochip driver.
    rover.make_node()
    daemon, _ = refused(rover, "the device cgroup denies /dev/gpiochip0", "DeviceAllow=char-gpiochip rw")
    assert f"character device major {rover.major}, which /proc/devices calls misc" in daemon, daemon

    # A /proc/devices that lists the node's major as gpiochip (as a Pi's kernel lists its own): allowed, it runs.
    rover.list_gpiochip_major()
    rover.start()
    assert all_off(rover) and rover.chip.line(22).owner_pid == rover.main_pid()
    rover.systemd.stop("rover-safety.service")

    # ...and it is the shipped DeviceAllow=char-gpiochip that allows it: emptied (the rest kept), denied again.
    rover.drop_in("60-test-no-gpiochip", "[Service]\nDeviceAllow=\nDeviceAllow=/dev/gpiomem rw\n")
    refused(rover, "the device cgroup denies /dev/gpiochip0")
    rover.drop_in("60-test-no-gpiochip", None)

    # A node the service's groups do not own (root:root 0660): permission denied, naming the group to be in.
    rover.make_node(group="root")
    refused(rover, f"permission denied on {NODE} (root:root, mode 0660): run as a member of group root")
    rover.make_node()
    rover.start()
    rover.systemd.stop("rover-safety.service")


@systemd_test
def test_working_directory_and_lg_wd_give_lgpio_its_notification_pipe(rover: LgpioRover) -> None:
    rover.make_node()
    rover.list_gpiochip_major()
    rover.install()

    # Neither: the working directory is / (read-only under ProtectSystem=strict) and no LG_WD; lgpio's import fails.
    rover.drop_in("60-test-no-workdir", "[Service]\nWorkingDirectory=/\nUnsetEnvironment=LG_WD\n")
    cursor = rover.systemd.cursor()
    refused(rover, "lgpio cannot make its notification pipe /.lgd-nfy0 (/ is on a read-only file "
                   "system): run the daemon with a writable working directory, or set LG_WD")
    rover.wait_journal(lambda m: "Can't set permissions" in m and "/.lgd-nfy0" in m, cursor)  # lg's own complaint

    # Either alone suffices: LG_WD=/tmp with / as the working directory, or /tmp without LG_WD.
    for only in ("WorkingDirectory=/\n", "UnsetEnvironment=LG_WD\n"):
        rover.drop_in("60-test-no-workdir", f"[Service]\n{only}")
        cursor = rover.systemd.cursor()
        rover.start()
        assert all_off(rover), only
        rover.systemd.stop("rover-safety.service")
        rover.wait_journal(lambda m: m.startswith("safe-stop: 5 outputs off"), cursor)
    rover.drop_in("60-test-no-workdir", None)
    pid_before = rover.chip.line(22).owner_pid
    rover.start()
    assert rover.chip.line(22).owner_pid not in (None, pid_before)
    rover.systemd.run("kill", f"-{signal.SIGTERM.value}", str(rover.main_pid()))
    rover.systemd.wait_for_state("rover-safety.service", "inactive", timeout=15)


@systemd_test
def test_install_sh_on_a_pi5_writes_lgpio(systemd: SystemdInstance, service_code: ServiceCode) -> None:
    """`make install` on a Raspberry Pi 5 (its device-tree model, from a file here): a new config on lgpio, said so;
    no pigpiod pulled in; and since the venv it was given has no lgpio module, a warning that the service would
    refuse to start (a venv install.sh makes itself gets `pip install lgpio`)."""
    base = "/run/rover-safety-install"
    prefix, conf_dir = f"{base}/opt", f"{base}/etc"
    install_catalog_inside(systemd, catalog=None)
    systemd.root_path("/run/board-model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    env = ["env", f"ROVER_SAFETY_PREFIX={prefix}", f"ROVER_SAFETY_VENV={service_code.venv}",
           f"ROVER_SAFETY_CONF_DIR={conf_dir}", "ROVER_SAFETY_UNIT_DIR=/run/systemd/system",
           "ROVER_SAFETY_BOARD_MODEL=/run/board-model"]
    result = systemd.run(*env, "bash", str(INSTALL_SH), "--no-start", check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("board: Raspberry Pi 5 Model B Rev 1.0 (from /run/board-model); pin_factory: lgpio (a Raspberry Pi 5 "
            "has only lgpio: pigpiod does not run on it)") in out
    assert f"wrote a default {conf_dir}/config.yaml (pin_factory: lgpio)" in out
    assert f"warning: pin factory lgpio, but {service_code.venv} has no lgpio module" in out
    config = systemd.root_path(f"{conf_dir}/config.yaml").read_text()
    assert "\n  pin_factory: lgpio                    # pigpio | lgpio | rpigpio | mock\n" in config
    assert "  # lgpio: {chip: 0}" in config  # the chip is detected unless set
    assert not systemd.root_path(f"/run/systemd/system/{UNIT}.d/pigpio.conf").exists()
    assert "pigpiod.service" not in systemd.show(UNIT, "Wants").split()
    assert systemd.run(*env, "bash", str(INSTALL_SH), "--uninstall", check=False, timeout=120).returncode == 0
