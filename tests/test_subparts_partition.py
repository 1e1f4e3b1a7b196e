"""A partition between the boards of a two-board rover, in network namespaces: the arm (a sub-part) in one, the
primary in another, the user's client beside the primary. Cut the link mid-drive: the arm stops what the
primary's session drove there within its own window, the primary reports the part lost and ends the session that
drove it; restore the link: the arm is back and can be driven again."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import ClientProc, DaemonProc, Netns, daemon, emulator, netns_unavailable
from tests.support.hil import RUN_CLI, cli_env
from tests.support.keys import new_certificate, new_key, secured
from tests.support.subparts import ARM_MOTORS, SHOULDER_PWM
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ARM_WINDOW = 0.4


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    made = Netns()
    try:
        yield made
    finally:
        made.close()


def part_state(netns: Netns, port: int) -> str:
    """The arm's link state as the primary reports it, asked from the primary's namespace by the operator CLI."""
    result = subprocess.run([*netns.exec_in(netns.client_ns), *RUN_CLI, "sessions", "--address", f"127.0.0.1:{port}",
                             "--json"], capture_output=True, text=True, timeout=30, check=False, env=cli_env())
    assert result.returncode == 0, result.stderr
    (part,) = json.loads(result.stdout)["parts"]
    return str(part["state"])


def test_a_partition_between_the_boards(netns: Netns, tmp_path: Path) -> None:
    certificate = new_certificate(tmp_path / "tls", names=("arm.test",), addresses=(netns.daemon_host,))
    key = new_key("primary")
    with emulator(host=netns.gpio_host) as arm_gpio:
        arm_text = secured(f"""network:
  bind_address: "{netns.daemon_host}:0"
  sessions: {{heartbeat_window: 400ms}}
gpio:
  pin_factory: pigpio
  pigpio: {{host: {netns.gpio_host}, port: {arm_gpio.port}}}
{ARM_MOTORS}""", certificate, (key,))
        with daemon(tmp_path, arm_text, name="arm.yaml", prefix=netns.exec_in(netns.daemon_ns)) as arm:
            primary_text = f"""network:
  bind_address: "127.0.0.1:0"
  sessions: {{heartbeat_window: 2s}}
gpio: {{pin_factory: mock}}
remotes:
  - name: arm
    address: "{netns.daemon_host}:{arm.port}"
    tls: {{fingerprint: "{certificate.fingerprint}"}}
    auth: {{key_id: {key.id}, key: {key.key}}}
"""
            with daemon(tmp_path, primary_text, name="primary.yaml",
                        prefix=netns.exec_in(netns.client_ns)) as primary:
                wait_until(lambda: part_state(netns, primary.port) == "connected", timeout=20,
                           what="the primary connected to the arm", interval=0.2)
                user = ClientProc(f"127.0.0.1:{primary.port}", "arm:shoulder", prefix=netns.exec_in(netns.client_ns),
                                  interval=0.2, recover=True)
                try:
                    user.ready()
                    user.go()
                    wait_until(lambda: arm_gpio.pin(SHOULDER_PWM).duty_cycle > 0, timeout=10,
                               what="the user driving arm:shoulder through the primary")
                    cut = netns.link(False)  # the primary and its user on one side, the arm on the other
                    wait_until(lambda: arm_gpio.pin(SHOULDER_PWM).duty_cycle == 0, timeout=ARM_WINDOW + 3,
                               what="the arm to stop on its own")
                    took = time.monotonic() - cut
                    print(f"the arm stopped {took * 1000:.0f} ms after the link was cut (its window "
                          f"{ARM_WINDOW * 1000:.0f} ms)")
                    assert took <= ARM_WINDOW + 0.3, f"the arm stopped {took:.3f} s after the cut"
                    wait_until(lambda: part_state(netns, primary.port) == "lost", timeout=10,
                               what="the primary reporting the arm lost", interval=0.2)
                    primary.wait_line(r"part arm at .* lost: .*ended 1 session", timeout=10)
                    netns.link(True)
                    wait_until(lambda: part_state(netns, primary.port) == "connected", timeout=20,
                               what="the arm back", interval=0.2)
                    # the user's client (recovering as the SDKs do) drives again through a fresh session
                    wait_until(lambda: arm_gpio.pin(SHOULDER_PWM).duty_cycle > 0, timeout=20,
                               what="the user driving the arm again")
                finally:
                    user.close()
                assert isinstance(primary, DaemonProc)
