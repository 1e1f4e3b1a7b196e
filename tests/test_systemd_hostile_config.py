"""Under the real systemd: the daemon is SIGKILLed mid-drive after its config file was broken in a way that once
made safe-stop raise something other than a ConfigError, touch no pin, and leave the unit failed with the motors
on. ExecStopPost's safe-stop must turn every output off from the daemon's record, whatever the file holds."""

from __future__ import annotations

import time

import pytest

from tests.support.systemd_rover import LEFT_PWM, RIGHT_PWM, UNIT, Rover, message, systemd_test
from tests.support.waiting import wait_until

BROKEN = {
    "int tag with junk": "pwm_freq: !!int 800Hz",
    "nesting thousands deep": "a: " + "[" * 5000 + "]" * 5000,
}


@systemd_test
@pytest.mark.parametrize("breakage", list(BROKEN))
def test_a_config_broken_beyond_config_errors_cannot_keep_the_motors_on(rover: Rover, breakage: str) -> None:
    rover.start(heartbeat_window="30s")  # no expiry interferes: only safe-stop can stop the motors
    client = rover.client()
    client.start_session()
    client.set_power("left", 0.6)
    client.set_power("right", -0.4)
    assert rover.duty(LEFT_PWM) > 0 and rover.duty(RIGHT_PWM) > 0
    cursor = rover.systemd.cursor()
    text = rover.config()
    rover.write_config(text.replace("pwm_freq: 800", BROKEN[breakage]) if "pwm_freq" in BROKEN[breakage]
                       else text + BROKEN[breakage] + "\n")

    killed = time.monotonic()
    rover.systemd.run("kill", "-KILL", str(rover.main_pid()))
    wait_until(rover.outputs_off, timeout=10, what="outputs off after SIGKILL with a broken config")
    for gpio in (LEFT_PWM, RIGHT_PWM):
        offs = rover.off_commands(gpio, killed)
        assert offs and offs[0] - killed < 5, f"GPIO{gpio} was not driven off by safe-stop: {offs}"
    stop = rover.journal_entry(lambda e: message(e).startswith("safe-stop: ") and " outputs off in " in message(e),
                               cursor, timeout=15)
    assert f"left.pwm (GPIO{LEFT_PWM}) -> duty 0" in message(stop)
    complaint = rover.journal_entry(lambda e: "going by the daemon's record only" in message(e), cursor)
    assert "Traceback" not in message(complaint)
    # The restarts fail on the broken config (each one followed by safe-stop); however it ends, nothing runs.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and rover.show("ActiveState") not in ("failed", "active"):
        time.sleep(0.1)
    assert rover.outputs_off(), "the unit ended with an output on"
    assert rover.show("ActiveState") in ("failed", "activating", "active", "deactivating"), rover.show("ActiveState")
    if rover.show("ActiveState") == "failed":
        assert rover.systemd.show(UNIT, "Result") != "success"
