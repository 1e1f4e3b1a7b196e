"""The shipped unit (systemd/rover-safety.service) as a rover: installed in a throwaway systemd, on the pigpiod
emulator, with its journal and gRPC clients. Used by tests/test_systemd.py."""

from __future__ import annotations

import json
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rover_safety.config import load as load_config

from .daemons import example_config
from .grpc_client import Client
from .net import free_port
from .pigpiod_emulator import Cmd, EmulatorClient
from .systemd_harness import SystemdInstance, unavailable_reason

CHECKOUT = Path(__file__).resolve().parent.parent.parent
UNIT = "rover-safety.service"
UNIT_FILE = CHECKOUT / "systemd" / UNIT
CATALOG_FILE = CHECKOUT / "systemd" / "rover-safety.catalog"
INSTALL_SH = CHECKOUT / "systemd" / "install.sh"
VENV = Path(sys.prefix)
EXECUTABLE = Path(sys.executable).parent / "rover-safety"
SHIPPED_EXECUTABLE = "/opt/rover-safety/venv/bin/rover-safety"
SHIPPED_CONFIG = "/etc/rover-safety/config.yaml"
CONF_DIR = "/run/rover-safety-test"  # inside the instance: its private /run, readable under ProtectSystem=strict
CONFIG = f"{CONF_DIR}/config.yaml"

# The pins of config/example.yaml (what conftest.example_config serves): every output, and each motor's PWM pin.
# Its motors have no en_low pin, so "off" is every output low.
_EXAMPLE = {m.name: m.pins.used() for m in load_config(CHECKOUT / "config" / "example.yaml").motors}
OUTPUTS = tuple(sorted({pin for pins in _EXAMPLE.values() for pin in pins.values()}))
LEFT_PWM, RIGHT_PWM = _EXAMPLE["left"]["pwm"], _EXAMPLE["right"]["pwm"]
assert not any("en_low" in pins for pins in _EXAMPLE.values())

systemd_test = pytest.mark.systemd


# ---- the unit and its user -------------------------------------------------------------------------------------


def shipped_unit(executable: str | Path = EXECUTABLE, config: str = CONFIG) -> str:
    """The shipped unit with the executable and the config path replaced on the Exec lines, nothing else."""
    lines = []
    for line in UNIT_FILE.read_text().splitlines(keepends=True):
        if line.startswith(("ExecStart=", "ExecStopPost=", "ExecReload=")):
            line = line.replace(SHIPPED_EXECUTABLE, str(executable)).replace(SHIPPED_CONFIG, config)
        lines.append(line)
    text = "".join(lines)
    assert text.count(f"{executable} ") == 2 and text.count(f"--config {config}\n") == 2, "unit's Exec lines moved?"
    return text


def unit_setting(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT_FILE.read_text().splitlines() if line.startswith(f"{key}=")]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", value)
    assert match, f"cannot read {value!r} as a duration"
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


WATCHDOG_SEC = seconds(unit_setting("WatchdogSec")[0])
TIMEOUT_ABORT_SEC = seconds(unit_setting("TimeoutAbortSec")[0])


def hidden_by_the_sandbox(path: Path) -> str | None:
    for hidden, why in (("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"),
                        ("/run", "the harness's /run")):  # /tmp and /var/tmp: the harness binds them in
        if path.is_relative_to(hidden):
            return f"{path} is under {hidden}, which the unit cannot see ({why})"
    return None


@pytest.fixture(scope="session")
def service_user() -> pwd.struct_passwd:
    """The rover-safety user and the gpio group on this machine (created by install.sh --user-only if missing),
    and a check that this user can run this venv, as the unit will. Fails (does not skip) when it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"real systemd unavailable: {reason}")
    result = subprocess.run(["bash", str(INSTALL_SH), "--user-only"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"install.sh --user-only failed:\n{result.stdout}{result.stderr}"
    interpreter = Path(sys.executable).resolve()
    problems = [p for p in map(hidden_by_the_sandbox, (interpreter, EXECUTABLE, CHECKOUT)) if p]
    probe = subprocess.run(
        ["runuser", "-u", "rover-safety", "--", sys.executable, "-c",
         "import rover_safety.daemon.cli, systemd.daemon, systemd.journal"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    if probe.returncode != 0:
        problems.append(f"the rover-safety user cannot run {sys.executable} (-> {interpreter}) with rover_safety "
                        f"and systemd-python: {probe.stderr.strip()[-400:]}")
    if problems:
        pytest.fail(
            "the unit runs as User=rover-safety in a sandbox, and cannot run this venv:\n  " + "\n  ".join(problems)
            + "\nRun these tests from a venv made from /usr/bin/python3 (as `make test` does) in a checkout outside "
            "/home and /root, e.g. `/usr/bin/python3 -m venv .venv && .venv/bin/pip install -e "
            "'.[dev,systemd]'`.",
            pytrace=False,
        )
    return pwd.getpwnam("rover-safety")


# ---- a rover: the unit in an instance, the emulator, clients ---------------------------------------------------


class Rover:
    """The shipped unit in a systemd instance, on the pigpiod emulator, with gRPC on a free loopback port."""

    def __init__(self, systemd: SystemdInstance, emulator: EmulatorClient) -> None:
        self.systemd, self.emulator = systemd, emulator
        self.port = free_port()
        systemd.root_path(CONF_DIR).mkdir(mode=0o755, exist_ok=True)
        self.clients: list[Client] = []

    def config(self, heartbeat_window: str = "2s") -> str:
        text = example_config(heartbeat_window, "pigpio", host="localhost", port=self.emulator.port)
        return text.replace('"127.0.0.1:0"', f'"127.0.0.1:{self.port}"')

    def write_config(self, text: str) -> None:
        staged = self.systemd.root_path(f"{CONFIG}.new")
        staged.write_text(text)
        staged.chmod(0o644)
        staged.rename(self.systemd.root_path(CONFIG))

    def start(self, heartbeat_window: str = "2s") -> None:
        self.write_config(self.config(heartbeat_window))
        self.systemd.install_unit(UNIT, shipped_unit())
        self.systemd.start(UNIT)

    def client(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def show(self, prop: str) -> str:
        return self.systemd.show(UNIT, prop)

    def main_pid(self) -> int:
        return self.systemd.main_pid(UNIT)

    def host_pids(self) -> list[int]:
        """The unit's processes as this (the host's) PID namespace numbers them."""
        procs = self.systemd.cgroup / "system.slice" / UNIT / "cgroup.procs"
        return [int(p) for p in procs.read_text().split()] if procs.exists() else []

    def duty(self, gpio: int) -> float:
        return self.emulator.pin(gpio).duty_cycle

    def outputs_off(self) -> bool:
        return all(p.duty_cycle == 0 and p.level == 0 for p in map(self.emulator.pin, OUTPUTS))

    def off_commands(self, gpio: int, since: float) -> list[float]:
        """When (time.monotonic()) pigpiod got a duty-0 PWM command for `gpio` since `since`."""
        return [c.t for c in self.emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == gpio and c.p2 == 0]

    def last_pwm_before(self, gpio: int, t: float, since: float) -> int:
        """Duty of the last PWM command on `gpio` in [since, t)."""
        duties = [c.p2 for c in self.emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == gpio and c.t < t]
        assert duties, f"no PWM command on GPIO{gpio}"
        return duties[-1]

    def journal(self, since: str | None, **matches: str) -> list[dict[str, Any]]:
        """`journalctl -u rover-safety.service -o json FIELD=value...`, the entries after the cursor `since`.

        Not the harness's since_cursor: journalctl 252's --after-cursor skips the first entry that matches when the
        cursor's own entry does not (it steps over "the cursor's entry" regardless); --cursor and dropping the
        cursor's entry here is exact.
        """
        args = ["journalctl", "--no-pager", "-o", "json", "-u", UNIT]
        args += ["--cursor", since] if since else []
        args += [f"{field}={value}" for field, value in matches.items()]
        entries = [json.loads(line) for line in self.systemd.run(*args).stdout.splitlines() if line.strip()]
        return [entry for entry in entries if entry["__CURSOR"] != since]

    def journal_entry(self, predicate: Callable[[dict[str, Any]], bool], since: str | None, timeout: float = 10.0,
                      **matches: str) -> dict[str, Any]:
        """The first entry after `since` with these fields for which `predicate` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.journal(since, **matches)
            for entry in entries:
                if predicate(entry):
                    return entry
            if time.monotonic() > deadline:
                seen = "\n".join(message(entry) for entry in entries[-20:])
                raise AssertionError(f"no such journal entry ({matches}) within {timeout} s; last ones:\n{seen}")
            time.sleep(0.05)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def monotonic(entry: dict[str, Any]) -> float:
    """A journal entry's CLOCK_MONOTONIC time in seconds: comparable with time.monotonic() and the emulator's log."""
    return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6


def message(entry: dict[str, Any]) -> str:
    return str(entry.get("MESSAGE", ""))


@pytest.fixture
def emulator() -> Iterator[EmulatorClient]:
    client = EmulatorClient.spawn()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rover(systemd: SystemdInstance, emulator: EmulatorClient, service_user: pwd.struct_passwd) -> Iterator[Rover]:
    rover = Rover(systemd, emulator)
    try:
        yield rover
    finally:
        rover.close()


def install_catalog_inside(systemd: SystemdInstance, catalog: Path | None = CATALOG_FILE) -> None:
    """Private (tmpfs) /usr/lib/systemd/catalog and /var/lib/systemd/catalog inside the instance, so that
    `journalctl --update-catalog` and `-x` there never touch the host's, holding systemd's own catalog as on any
    system; with `catalog`, install and index that too."""
    for directory in ("/usr/lib/systemd/catalog", "/var/lib/systemd/catalog"):
        systemd.run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory)
    systemd_catalog = Path("/usr/lib/systemd/catalog/systemd.catalog")  # the host's, read from outside
    if systemd_catalog.exists():
        shutil.copyfile(systemd_catalog, systemd.root_path(str(systemd_catalog)))
    if catalog is not None:
        shutil.copyfile(catalog, systemd.root_path(f"/usr/lib/systemd/catalog/{catalog.name}"))
    systemd.run("journalctl", "--update-catalog")
