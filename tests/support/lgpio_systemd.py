"""The shipped unit on lgpio under a real systemd (a throwaway instance, tests/support/systemd_harness.py), with the
fake lgpio standing in for a Raspberry Pi 5's chip. Used by tests/test_systemd_lgpio.py.

What is real: systemd 252 and the unit exactly as shipped (``systemd_rover.shipped_unit``: only the Exec lines'
executable and --config differ), its user in the ``gpio`` group, its sandbox, its device cgroup. What stands in:

* ``/dev/gpiochip0`` is a character device node made with mknod inside the instance's private /dev, owned by
  ``root:gpio`` mode 0660 as Raspberry Pi OS's udev rule makes the real one. This kernel has no gpiochip driver, so
  the node borrows the major:minor of a driver any user may open (``/dev/net/tun``'s 10:200, else ``/dev/fuse``'s
  10:229): opening it is a real open(2), through file permissions and the unit's device cgroup. The fake lgpio
  opens that node as lg does (``open("/dev/gpiochip0", O_RDWR)``) and keeps the chip's state in a file.
* ``/proc/devices`` inside the instance can be given a line ``10 gpiochip`` (a copy bind-mounted over it): what a
  Pi's kernel lists for its gpiochip major (there, ``254 gpiochip``). systemd resolves the unit's
  ``DeviceAllow=char-gpiochip rw`` through that file when the unit starts; with this kernel's own file the rule
  matches nothing.
* A test-only drop-in, ``rover-safety.service.d/50-test-fake-lgpio.conf`` (``SCAFFOLDING``): the fake on
  PYTHONPATH, its chip state file (and only that file) writable, and a Pi 5's /proc/cpuinfo bound over the real
  one for gpiozero. It loosens nothing the unit restricts for the daemon's own sake: no device, group, path or
  capability the shipped unit denies a Pi 5's daemon.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .fake_lgpio import PI5_REVISION, FakeChip, create
from .grpc_client import Client
from .lgpio_daemon import lgpio_config
from .net import free_port
from .systemd_harness import UNIT_DIR, SystemdInstance
from .systemd_rover import CONF_DIR, CONFIG, UNIT, ServiceCode, message, shipped_unit

FAKE_DIR = "/run/fake-lgpio"  # inside the instance; the unit's sandbox shows /run read-only
FAKE_CODE = f"{FAKE_DIR}/code"
CHIP_STATE = f"{FAKE_DIR}/chip.state"
CPUINFO = f"{FAKE_DIR}/cpuinfo"
DEVICES = f"{FAKE_DIR}/devices"
NODE = "/dev/gpiochip0"
FAKE_SOURCE = Path(__file__).resolve().parent / "fake_lgpio"
DROP_IN_DIR = f"{UNIT_DIR}/{UNIT}.d"
SCAFFOLDING = f"""# TEST SCAFFOLDING (tests/support/lgpio_systemd.py), never installed on a rover: the fake lgpio in
# place of the real module, its chip state file writable (the one path added), and a Raspberry Pi 5's /proc/cpuinfo
# for gpiozero. The device node, its group and the device cgroup are the shipped unit's own.
[Service]
Environment=PYTHONPATH={FAKE_CODE}/site
Environment=ROVER_SAFETY_FAKE_LGPIO_CHIP={CHIP_STATE}
ReadWritePaths={CHIP_STATE}
BindReadOnlyPaths={CPUINFO}:/proc/cpuinfo
"""
# Character devices that open for any user, to stand in for a gpiochip (this kernel has none): major, minor
STAND_INS = (Path("/dev/net/tun"), Path("/dev/fuse"))


def stand_in_device() -> tuple[int, int]:
    for path in STAND_INS:
        try:
            st = path.stat()
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    pytest.fail(f"none of {', '.join(map(str, STAND_INS))} exists to lend its driver to /dev/gpiochip0", pytrace=False)


class LgpioRover:
    """The shipped unit in a systemd instance on the fake chip (see the module docstring), gRPC on a free port."""

    def __init__(self, systemd: SystemdInstance, code: ServiceCode) -> None:
        self.systemd, self.code = systemd, code
        self.port = free_port()
        self.clients: list[Client] = []
        self.major, self.minor = stand_in_device()
        for directory in (FAKE_DIR, FAKE_CODE, f"{FAKE_CODE}/site", CONF_DIR):
            path = systemd.root_path(directory)
            path.mkdir(mode=0o755, exist_ok=True)
            path.chmod(0o755)
        for name in ("_impl.py", "site/lgpio.py"):  # the fake is stdlib only: these two files are all of it
            target = systemd.root_path(f"{FAKE_CODE}/{name}")
            shutil.copyfile(FAKE_SOURCE / name, target)
            target.chmod(0o644)
        create(systemd.root_path(CHIP_STATE))  # mode 0666: the service user maps it read-write
        real = systemd.run("cat", "/proc/cpuinfo").stdout
        lines = [line for line in real.splitlines() if not line.startswith(("Revision", "Model"))]
        cpuinfo = systemd.root_path(CPUINFO)
        cpuinfo.write_text("\n".join([*lines, f"Revision\t: {PI5_REVISION:06x}",
                                      "Model\t\t: Raspberry Pi 5 Model B Rev 1.0", ""]))
        cpuinfo.chmod(0o644)
        self.chip = FakeChip(systemd.root_path(CHIP_STATE))

    # --- the stand-ins ---------------------------------------------------------------------------------------------

    def make_node(self, group: str = "gpio", mode: int = 0o660) -> None:
        """/dev/gpiochip0 inside the instance: a character device, `root:group`, `mode` (Raspberry Pi OS: gpio 0660)."""
        self.systemd.run("rm", "-f", NODE)
        self.systemd.run("mknod", "-m", f"{mode:o}", NODE, "c", str(self.major), str(self.minor))
        self.systemd.run("chown", f"root:{group}", NODE)

    def list_gpiochip_major(self) -> None:
        """Give the instance a /proc/devices that names the node's major `gpiochip`, as a Pi's kernel lists its own."""
        devices = self.systemd.run("cat", "/proc/devices").stdout
        head, _, block = devices.partition("\nBlock devices:")
        listed = f"{head.rstrip()}\n{self.major:3d} gpiochip\n\nBlock devices:{block}"
        self.systemd.root_path(DEVICES).write_text(listed)
        self.systemd.run("mount", "--bind", DEVICES, "/proc/devices")

    def drop_in(self, name: str, text: str | None) -> None:
        """Write (None: remove) rover-safety.service.d/NAME.conf and daemon-reload."""
        path = self.systemd.root_path(f"{DROP_IN_DIR}/{name}.conf")
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.systemd.daemon_reload()

    # --- the unit --------------------------------------------------------------------------------------------------

    def config(self, heartbeat_window: str = "2s", extra: str = "") -> str:
        return lgpio_config(heartbeat_window, extra).replace('"127.0.0.1:0"', f'"127.0.0.1:{self.port}"')

    def write_config(self, text: str) -> None:
        staged = self.systemd.root_path(f"{CONFIG}.new")
        staged.write_text(text)
        staged.chmod(0o644)
        staged.rename(self.systemd.root_path(CONFIG))

    def install(self, heartbeat_window: str = "2s", extra: str = "") -> None:
        self.write_config(self.config(heartbeat_window, extra))
        self.drop_in("50-test-fake-lgpio", SCAFFOLDING)
        self.systemd.install_unit(UNIT, shipped_unit(self.code.executable))

    def start(self, check: bool = True) -> bool:
        """`systemctl start`; True if it came up (Type=notify: READY=1 once the pins are verified and off)."""
        result = self.systemd.systemctl("start", UNIT, check=False, timeout=60)
        if check:
            assert result.returncode == 0, self.status()
        return result.returncode == 0

    def give_up(self) -> None:
        """Stop a unit that failed to start from restarting (Restart=on-failure) and forget the failure."""
        self.systemd.systemctl("stop", UNIT, check=False)
        self.systemd.systemctl("reset-failed", UNIT, check=False)

    def status(self) -> str:
        return self.systemd.systemctl("status", "--no-pager", "-n", "30", UNIT, check=False).stdout

    def main_pid(self) -> int:
        return self.systemd.main_pid(UNIT)

    def host_pid(self) -> int:
        """The main process as this (the host's) PID namespace numbers it (for /proc)."""
        procs = self.systemd.cgroup / "system.slice" / UNIT / "cgroup.procs"
        inside = self.main_pid()
        for pid in procs.read_text().split():
            status = Path(f"/proc/{pid}/status").read_text()
            nspid = next(line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:"))
            if int(nspid) == inside:
                return int(pid)
        raise AssertionError(f"main pid {inside} not found in {procs}")

    def client(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def journal(self, since: str | None) -> list[dict[str, Any]]:
        return self.systemd.journal(unit=UNIT, since_cursor=since)

    def wait_journal(self, predicate: Callable[[str], bool], since: str | None, timeout: float = 15.0) -> str:
        entry = self.systemd.wait_for_journal(lambda e: predicate(message(e)), timeout=timeout, unit=UNIT,
                                              since_cursor=since)
        return message(entry)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.chip.close()
