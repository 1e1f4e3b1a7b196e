"""The shipped unit (systemd/rover-safety.service) as a rover: installed in a throwaway systemd, on the pigpiod
emulator, with its journal and gRPC clients. Used by tests/test_systemd.py.

The unit runs as ``User=rover-safety`` under ``ProtectHome=yes``, so it can neither enter a checkout whose
directories only root may traverse (``mktemp -d`` makes them 0700) nor see one under /home or /root at all. So it
does not run this checkout's venv in place: ``present_code`` shows the code to it inside the instance, under
``SERVICE_VENV`` (/run/harness-code, in the instance's own /run, which the sandbox shows read-only):

* ``site-packages``: this venv's site-packages, bind-mounted read-only (a bind mount reaches past the 0700
  ancestors and past ProtectHome=);
* ``src/rover_safety/<name>``: a copy of each source folder that setup.cfg's ``package_dir`` maps to
  ``rover_safety.<name>``, made world-readable (the venv's editable install maps them to the checkout's own
  paths, which the sandbox may hide: its finder is never loaded, see below);
* a venv around them: ``pyvenv.cfg`` naming the Python this venv was made from (/usr/bin/python3.11 as `make`
  builds it), ``bin/python*`` linked to it, ``bin/rover-safety`` (the console script, as pip writes it), and its
  own ``lib/python3.X/site-packages`` holding only ``harness-code.pth``, which puts ``src`` and the bound
  ``site-packages`` on the path. Only that directory's .pth files are read, not the bound one's (the editable
  finder), and the service's ``sys.executable`` is this venv's python, so a child it starts with it (the
  config reader) finds the same code.

The unit is installed exactly as shipped but for its Exec lines' executable and ``--config`` (``shipped_unit``).
"""

from __future__ import annotations

import configparser
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rover_safety.config import load as load_config

from .daemons import CHECKOUT as CHECKOUT  # re-exported: tests/test_systemd.py imports it from here
from .daemons import example_config
from .grpc_client import Client
from .net import free_port
from .pigpiod_emulator import Cmd, EmulatorClient
from .systemd_harness import SystemdInstance, unavailable_reason

UNIT = "rover-safety.service"
UNIT_FILE = CHECKOUT / "systemd" / UNIT
CATALOG_FILE = CHECKOUT / "systemd" / "rover-safety.catalog"
INSTALL_SH = CHECKOUT / "systemd" / "install.sh"
EXECUTABLE = Path(sys.executable).parent / "rover-safety"  # this venv's, for runs outside the instance
# The Python this venv was made from (its bin/python links to it): the harness's venv for the service links to it too.
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
SERVICE_VENV = "/run/harness-code"  # inside the instance: this checkout's code as the service can read it
SERVICE_EXECUTABLE = f"{SERVICE_VENV}/bin/rover-safety"
SERVICE_PYTHON = f"{SERVICE_VENV}/bin/python"
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


def shipped_unit(executable: str | Path = SERVICE_EXECUTABLE, config: str = CONFIG) -> str:
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
    """Why the unit's sandbox cannot see `path` (as the instance's processes name it), or None if it can."""
    for hidden, why in (("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"), ("/run/user", "ProtectHome=yes"),
                        ("/run", "the harness's /run")):  # /tmp and /var/tmp: the harness binds them in
        if path.is_relative_to(hidden):
            return f"{path} is under {hidden}, which the unit cannot see ({why})"
    return None


@pytest.fixture(scope="session")
def service_user() -> pwd.struct_passwd:
    """The rover-safety user and the gpio group on this machine (created by install.sh --user-only if missing)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"real systemd unavailable: {reason}")
    result = subprocess.run(["bash", str(INSTALL_SH), "--user-only"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"install.sh --user-only failed:\n{result.stdout}{result.stderr}"
    return pwd.getpwnam("rover-safety")


# ---- this checkout's code, shown to the sandboxed service -------------------------------------------------------


@dataclass(frozen=True)
class ServiceCode:
    """Where the service finds this checkout's code inside the instance (see the module docstring)."""

    venv: str = SERVICE_VENV  # what install.sh takes as ROVER_SAFETY_VENV: it has bin/python and bin/rover-safety
    executable: str = SERVICE_EXECUTABLE
    python: str = SERVICE_PYTHON


def package_dirs() -> dict[str, Path]:
    """setup.cfg's package_dir: each top-level module of rover_safety and the checkout's folder that holds it."""
    setup = configparser.ConfigParser()
    setup.read(CHECKOUT / "setup.cfg")
    pairs = (line.split("=", 1) for line in setup["options"]["package_dir"].splitlines() if "=" in line)
    return {package.strip(): CHECKOUT / folder.strip() for package, folder in pairs}


def _copy_readable(source: Path, target: Path) -> None:
    """Copy a source folder (keeping mtimes, so its byte-code stays valid) with modes every user can read."""
    shutil.copytree(source, target)
    target.chmod(0o755)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


CONSOLE_SCRIPT = """#!{python}
# rover-safety in the harness's venv for the sandboxed service (written by tests/support/systemd_rover.py)
import sys
from rover_safety.daemon.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def present_code(systemd: SystemdInstance) -> ServiceCode:
    """Show this checkout's code to the service inside `systemd`, as a venv at SERVICE_VENV (module docstring)."""
    code = ServiceCode()
    root = systemd.root_path(code.venv)
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    own_site = root / "lib" / python / "site-packages"
    for directory in (root, root / "bin", root / "src", root / "src" / "rover_safety", own_site.parent, own_site):
        directory.mkdir(mode=0o755, parents=True)
    path = [f"{code.venv}/src"]
    for k, site in enumerate(sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})):
        inside = f"{code.venv}/site-packages" + (f"-{k}" if k else "")
        systemd.bind(Path(site), inside)
        path.append(inside)
    for package, folder in package_dirs().items():
        _copy_readable(folder, root / "src" / Path(*package.split(".")))
    files = {
        root / "pyvenv.cfg": f"home = {BASE_PYTHON.parent}\ninclude-system-site-packages = false\n"
                             f"version = {'.'.join(map(str, sys.version_info[:3]))}\n",
        own_site / "harness-code.pth": "".join(f"{directory}\n" for directory in path),
        root / "bin" / "rover-safety": CONSOLE_SCRIPT.format(python=f"{code.venv}/bin/{python}"),
    }
    for file, text in files.items():
        file.write_text(text)
        file.chmod(0o755 if file.parent.name == "bin" else 0o644)
    for name in (python, "python3", "python"):
        (root / "bin" / name).symlink_to(BASE_PYTHON if name == python else python)
    return code


def check_service_can_run(systemd: SystemdInstance, code: ServiceCode) -> None:
    """Fail (not skip) with the reason where the rover-safety user cannot run `code` as the unit will."""
    hidden = hidden_by_the_sandbox(BASE_PYTHON)
    problems = [hidden] if hidden else []
    probe = systemd.run(
        "runuser", "-u", "rover-safety", "--", code.python, "-c",
        "import rover_safety.daemon.cli as cli, systemd.daemon, systemd.journal; print(cli.__file__)",
        check=False, timeout=60,
    )
    if probe.returncode != 0:
        problems.append(f"the rover-safety user cannot import rover_safety and systemd-python with {BASE_PYTHON} "
                        f"from {code.venv}: {probe.stderr.strip()[-400:]}")
    elif not probe.stdout.strip().startswith(f"{code.venv}/src/"):
        problems.append(f"rover_safety came from {probe.stdout.strip()}, not from the copy in {code.venv}/src")
    if problems:
        pytest.fail(
            "the unit runs as User=rover-safety in a sandbox, and cannot run this checkout's code:\n  "
            + "\n  ".join(problems)
            + "\nRun these tests from a venv made from the system's Python (`/usr/bin/python3 -m venv .venv && "
            ".venv/bin/pip install -e '.[dev,systemd]'`, as `make test` does), installed with a umask that leaves "
            "its files readable by every user (022).",
            pytrace=False,
        )


@pytest.fixture
def service_code(systemd: SystemdInstance, service_user: pwd.struct_passwd) -> ServiceCode:
    """This checkout's code, shown to the service in this test's instance and checked to run as its user."""
    code = present_code(systemd)
    check_service_can_run(systemd, code)
    return code


# ---- a rover: the unit in an instance, the emulator, clients ---------------------------------------------------


class Rover:
    """The shipped unit in a systemd instance, on the pigpiod emulator, with gRPC on a free loopback port."""

    def __init__(self, systemd: SystemdInstance, emulator: EmulatorClient, code: ServiceCode) -> None:
        self.systemd, self.emulator, self.code = systemd, emulator, code
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
        self.systemd.install_unit(UNIT, shipped_unit(self.code.executable))
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
        """`journalctl -u rover-safety.service -o json FIELD=value...`, the entries after the cursor `since`."""
        return self.systemd.journal(unit=UNIT, since_cursor=since, matches=matches)

    def journal_entry(self, predicate: Callable[[dict[str, Any]], bool], since: str | None, timeout: float = 10.0,
                      **matches: str) -> dict[str, Any]:
        """The first entry after `since` with these fields for which `predicate` is true, waiting for it."""
        return self.systemd.wait_for_journal(predicate, timeout, unit=UNIT, since_cursor=since, matches=matches)

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
def rover(systemd: SystemdInstance, emulator: EmulatorClient, service_code: ServiceCode) -> Iterator[Rover]:
    rover = Rover(systemd, emulator, service_code)
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
