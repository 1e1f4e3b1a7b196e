"""Boot a throwaway systemd (PID 1 of private namespaces) for tests that need a real service manager.

See shared/reference/systemd-tests.md.  The instance gets new PID, mount, UTS and cgroup namespaces; the
network namespace is shared, so units reach servers of the test process on 127.0.0.1.  Inside it:

* /tmp, /var/tmp, /run and /var/log are fresh tmpfs (systemd's tmpfiles would otherwise clean the host's);
  the directories passed as ``share`` (by default pytest's basetemp, the venv and the checkout, where they
  lie under one of those) are bind-mounted back at the same path, so units can run files from ``tmp_path``;
  ``bind(source, target)`` mounts any directory (read-only) at a path of the instance's own, such as one under its
  /run, which a sandboxed unit still sees and whose ancestors every user may enter (tests/support/systemd_rover.py
  shows the checkout's code to the rover-safety service that way);
* /dev is a private tmpfs with null/zero/full/random/urandom/tty, a new devpts and /dev/console, which is a
  pty drained into ``<workdir>/console.log`` (no /dev/kmsg: journald does not import the host's kernel log);
* /proc/sys and /sys are read-only; /sys/fs/cgroup is a cgroup2 mount of the instance's own sub-cgroup, so
  two instances do not share (or leave behind) cgroups and the host's cgroup tmpfs is never touched;
* everything sysinit.target, basic.target, default.target and network-online.target would pull in is masked
  (sysusers, tmpfiles, sysctl, debugfs mounts, apt timers, ...), except journald, so starting a unit with
  DefaultDependencies=yes has no effect on the host.

PID 1 logs with --log-target=journal-or-kmsg: to the journal once journald runs, to /dev/console before (there
is no kmsg inside); journald forwards everything to the console too, so console.log is a full boot-and-run log.

tests/conftest.py registers this module as a pytest plugin, so every test can take the fixture ``systemd``::

    from tests.support.systemd_harness import SystemdInstance

    def test_unit(systemd: SystemdInstance, tmp_path: Path) -> None:
        systemd.install_unit("x.service", f"[Service]\nExecStart={sys.executable} {tmp_path / 'x.py'}\n")
        systemd.start("x.service")
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .daemons import CHECKOUT

SYSTEMD_BINARY = Path("/lib/systemd/systemd")
UNIT_DIR = "/run/systemd/system"
MASK_DIR = "/run/systemd/system.control"  # first in the search path: beats /etc/systemd/system
REMOUNTED = (Path("/tmp"), Path("/var/tmp"), Path("/run"), Path("/var/log"))
REQUIRED_TOOLS = ("unshare", "nsenter", "mount", "systemctl", "journalctl")
PULLED_TARGETS = ("sysinit.target", "basic.target", "default.target", "network-online.target")
BOOT_ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "SYSTEMD_COLORS": "0"}
CGROUP_PREFIX = "rover-systemd-harness-"  # + test process PID + counter
KEEP_UNMASKED = ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket")

BOOT_SCRIPT = r"""#!/bin/sh
# Runs inside the new namespaces as the future PID 1; usage: boot.sh CONSOLE_PTY [SHARED_DIR...]
set -eu
console=$1; shift
mount -n --make-rprivate /
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
i=0
for dir in "$@"; do
    i=$((i + 1)); mkdir -p /run/harness/share$i; mount -n --bind "$dir" /run/harness/share$i
done
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/log
i=0
for dir in "$@"; do
    i=$((i + 1)); mkdir -p "$dir"; mount -n --move /run/harness/share$i "$dir"
done

dev=/run/harness/dev
mkdir -p $dev
mount -n -t tmpfs -o mode=0755,nosuid tmpfs $dev
for node in null zero full random urandom tty; do
    touch $dev/$node; mount -n --bind /dev/$node $dev/$node
done
touch $dev/console; mount -n --bind "$console" $dev/console
mkdir $dev/pts $dev/shm
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $dev/pts
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs $dev/shm
ln -s pts/ptmx $dev/ptmx; ln -s /proc/self/fd $dev/fd
ln -s /proc/self/fd/0 $dev/stdin; ln -s /proc/self/fd/1 $dev/stdout; ln -s /proc/self/fd/2 $dev/stderr
mount -n --move $dev /dev

mount -n --bind /proc/sys /proc/sys; mount -n -o remount,bind,ro /proc/sys
mount -n -o remount,bind,ro /sys
mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup

mkdir -p /run/systemd/system /run/systemd/journald.conf.d
cat > /run/systemd/journald.conf.d/harness.conf <<'EOF'
[Journal]
Storage=volatile
ForwardToConsole=yes
TTYPath=/dev/console
MaxLevelConsole=debug
EOF
cat > /run/systemd/system/harness.target <<'EOF'
[Unit]
Description=rover-safety test harness
Requires=systemd-journald.socket
Wants=systemd-journald.service
After=systemd-journald.socket systemd-journald.service
EOF
exec /lib/systemd/systemd --system --unit=harness.target --log-target=journal-or-kmsg --log-level=info
"""


class SystemdHarnessError(RuntimeError):
    """A command inside the instance failed, or the instance did not come up."""


def unavailable_reason() -> str | None:
    """Why a systemd instance cannot be booted here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (unshare/mount of a private systemd)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not os.access(SYSTEMD_BINARY, os.X_OK):
        return f"{SYSTEMD_BINARY} not found (apt-get install systemd)"
    if _own_cgroup2_dir() is None:
        return "no writable cgroup2 hierarchy"
    return None


def _own_cgroup2_dir() -> Path | None:
    """Directory of this process's cgroup in the cgroup2 hierarchy (hybrid or unified host)."""
    mount_point = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype == "cgroup2":
            mount_point = Path(fields[4])
            break
    if mount_point is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = mount_point / line[3:].lstrip("/")
            return own if os.access(own, os.W_OK) else None
    return None


def _set_parent_death_signal() -> None:
    """preexec_fn: SIGKILL unshare (and, through --kill-child, systemd) when the thread that booted it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SystemdInstance:
    """A systemd booted as PID 1 of private namespaces; see the module docstring.

    ``pid`` is systemd's PID as the host sees it; PIDs reported by systemd (``main_pid``) are PIDs of the
    instance's PID namespace, usable with ``run("kill", ...)``.
    """

    _counter = 0

    def __init__(self, workdir: Path, share: Iterable[Path] = (), boot_timeout: float = 30.0,
                 code: Iterable[Path] = ()) -> None:
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        self.boot_log = self.workdir / "boot.log"
        self.boot_seconds = 0.0
        self.state = ""
        self.pid = 0
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        self._console_fd = self._console_slave = -1
        code = list(code)  # shared too, and bound read-only into every service, even one with PrivateTmp=
        shared = _shared_dirs([self.workdir, *share, *code])

        cgroup_parent = _own_cgroup2_dir()
        if cgroup_parent is None:
            raise SystemdHarnessError("no writable cgroup2 hierarchy")
        _remove_stale_cgroups(cgroup_parent)
        SystemdInstance._counter += 1
        self.cgroup = cgroup_parent / f"{CGROUP_PREFIX}{os.getpid()}-{SystemdInstance._counter}"
        self.cgroup.mkdir()
        atexit.register(self.close)
        try:
            self._boot(shared, time.monotonic() + boot_timeout)
            self._show_code_to_private_tmp(_shared_dirs(code))
        except BaseException:
            self.close()
            raise

    def _show_code_to_private_tmp(self, code: list[Path]) -> None:
        """A service with PrivateTmp= gets an empty /tmp and /var/tmp: bind the code directories under them (a
        checkout or venv in /tmp, say) into every service, read-only, so its ExecStart= can still be found."""
        hidden = [p for p in code if p.is_relative_to("/tmp") or p.is_relative_to("/var/tmp")]
        if not hidden:
            return
        drop_in = self.root_path(f"{UNIT_DIR}/service.d/50-harness-shares.conf")
        drop_in.parent.mkdir(parents=True, exist_ok=True)
        drop_in.write_text("[Service]\n" + "".join(f"BindReadOnlyPaths=-{p}\n" for p in hidden))
        self.daemon_reload()

    # ---- boot and teardown -------------------------------------------------------------------------------

    def _boot(self, shared: list[Path], deadline: float) -> None:
        script = self.workdir / "boot.sh"
        script.write_text(BOOT_SCRIPT)
        # /dev/console must be a tty (journald and PID 1 refuse anything else): a pty whose slave we keep open,
        # so that reading the master never fails with EIO while systemd has closed its end.
        self._console_fd, self._console_slave = os.openpty()
        tty.setraw(self._console_slave)
        started = time.monotonic()
        with self.boot_log.open("wb") as boot_log:
            self._proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--uts", "--cgroup",
                 "/bin/sh", str(script), os.ttyname(self._console_slave), *map(str, shared)],
                stdin=subprocess.DEVNULL, stdout=boot_log, stderr=subprocess.STDOUT, env=BOOT_ENVIRONMENT,
                start_new_session=True, preexec_fn=self._enter_cgroup,
            )
        self._reader = threading.Thread(target=self._drain_console, name="systemd-console", daemon=True)
        self._reader.start()
        self.pid = self._wait_for_child(deadline)
        self.state = self._wait_until_running(deadline)
        self._mask_host_units()
        self.boot_seconds = time.monotonic() - started

    def _enter_cgroup(self) -> None:
        (self.cgroup / "cgroup.procs").write_text("0")
        _set_parent_death_signal()

    def _drain_console(self) -> None:
        with self.console_log.open("ab") as log:
            while not self._stop_reader.is_set():
                ready, _, _ = select.select([self._console_fd], [], [], 0.2)
                if ready:
                    log.write(os.read(self._console_fd, 65536).replace(b"\r\n", b"\n"))
                    log.flush()

    def _wait_for_child(self, deadline: float) -> int:
        assert self._proc is not None
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self._boot_error(f"unshare exited with {self._proc.returncode}")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            if pids:
                return int(pids[0])
            time.sleep(0.01)
        raise self._boot_error("unshare forked no child")

    def _wait_until_running(self, deadline: float) -> str:
        assert self._proc is not None
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self._boot_error(f"systemd exited (unshare status {self._proc.returncode})")
            result = self.run("systemctl", "is-system-running", check=False, timeout=10)
            last = (result.stdout + result.stderr).strip()
            if last in ("running", "degraded"):
                return last
            if last == "maintenance":  # rescue or emergency mode: harness.target failed
                raise self._boot_error("systemd entered rescue/emergency mode")
            time.sleep(0.05)
        raise self._boot_error(f"systemctl is-system-running still says {last!r}")

    def _boot_error(self, what: str) -> SystemdHarnessError:
        time.sleep(0.3)  # let the console reader catch up
        return SystemdHarnessError(
            f"systemd did not come up: {what}\n"
            f"--- {self.boot_log} ---\n{_tail(self.boot_log)}\n--- {self.console_log} ---\n{_tail(self.console_log)}"
        )

    def _mask_host_units(self) -> None:
        listed = self.systemctl("list-dependencies", "--plain", "--all", *PULLED_TARGETS).stdout.split()
        active = set(self.systemctl("list-units", "--all", "--state=active", "--plain", "--no-legend").stdout.split())
        masks = self.root_path(MASK_DIR)
        masks.mkdir(parents=True, exist_ok=True)
        for name in set(listed) - active:
            if not name.endswith((".target", ".slice")) and name not in KEEP_UNMASKED:
                (masks / name).symlink_to("/dev/null")
        self.daemon_reload()

    def close(self) -> None:
        """Kill systemd and everything in its namespace; remove its cgroup. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):  # unshare --kill-child takes systemd along
                os.kill(self.pid or self._proc.pid, signal.SIGKILL)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._stop_reader.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
        for fd in (self._console_fd, self._console_slave):
            if fd >= 0:
                os.close(fd)
        _remove_cgroup_tree(self.cgroup)

    def __enter__(self) -> SystemdInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- running commands inside -------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the instance's mount, PID and UTS namespaces (network is the host's)."""
        command = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise SystemdHarnessError(
                f"{' '.join(argv)} exited with {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def root_path(self, path: str) -> Path:
        """Host path of ``path`` as the instance sees it (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")

    def bind(self, source: Path, target: str, read_only: bool = True) -> None:
        """Bind-mount ``source`` (a path the instance sees) at ``target`` inside the instance, before the units that
        need it start. A bind mount reaches past directories that only root may enter and past those a unit's
        sandbox hides (ProtectHome=), so a service user can read what lies below, as far as its own modes allow."""
        self.root_path(target).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.run("mount", "--bind", str(source), target)
        if read_only:
            self.run("mount", "-o", "remount,bind,ro", target)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def install_unit(self, name: str, text: str) -> None:
        """Write ``name`` into /run/systemd/system inside the instance and daemon-reload."""
        self.root_path(f"{UNIT_DIR}/{name}").write_text(text)
        self.daemon_reload()
        fragment = self.show(name, "FragmentPath")
        if fragment != f"{UNIT_DIR}/{name}":
            raise SystemdHarnessError(f"{name} is loaded from {fragment!r}, not {UNIT_DIR}: shadowed?")

    def start(self, name: str, timeout: float = 30.0) -> None:
        self.systemctl("start", name, timeout=timeout)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        self.systemctl("stop", name, timeout=timeout)

    def is_active(self, name: str) -> bool:
        return self.systemctl("is-active", "--quiet", name, check=False).returncode == 0

    def show(self, name: str, prop: str) -> str:
        """One property of a unit (``systemctl show -p PROP --value``)."""
        return self.systemctl("show", "-p", prop, "--value", name).stdout.rstrip("\n")

    def main_pid(self, name: str) -> int:
        """MainPID of a unit, as a PID of the instance's namespace; 0 if none."""
        return int(self.show(name, "MainPID"))

    def wait_for_state(self, name: str, state: str, timeout: float = 10.0, prop: str = "ActiveState") -> None:
        """Wait until ``prop`` (ActiveState, SubState, ...) of ``name`` equals ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.show(name, prop)
            if current == state:
                return
            if time.monotonic() > deadline:
                status = self.systemctl("status", name, check=False).stdout
                raise SystemdHarnessError(f"{name}: {prop} is {current!r}, not {state!r} after {timeout}s\n{status}")
            time.sleep(0.05)

    def analyze_verify(self, unit_file: Path) -> subprocess.CompletedProcess[str]:
        """``systemd-analyze verify`` of a unit file (which must be visible inside); check the returncode."""
        return self.run("systemd-analyze", "verify", str(unit_file), check=False)

    # ---- journal -----------------------------------------------------------------------------------------

    def journal(self, unit: str | None = None, since_cursor: str | None = None,
                matches: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Journal entries (``journalctl -o json``), oldest first.

        ``unit`` is journalctl's -u (messages of the unit and systemd's messages about it), ``since_cursor``
        excludes that entry and older ones, ``matches`` are FIELD=value matches (ANDed).
        """
        args = ["journalctl", "--no-pager", "-o", "json"]
        if unit is not None:
            args += ["-u", unit]
        if since_cursor is not None:
            # --cursor and drop that entry: journalctl 252's --after-cursor with matches loses the first match
            args += ["--cursor", since_cursor]
        args += [f"{field}={value}" for field, value in (matches or {}).items()]
        entries = [json.loads(line) for line in self.run(*args).stdout.splitlines() if line.strip()]
        return [e for e in entries if e.get("__CURSOR") != since_cursor]

    def cursor(self) -> str | None:
        """Cursor of the newest journal entry, for ``journal(since_cursor=...)``."""
        entries = self.run("journalctl", "--no-pager", "-o", "json", "-n", "1").stdout.splitlines()
        return json.loads(entries[-1])["__CURSOR"] if entries else None

    def wait_for_journal(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                         unit: str | None = None, since_cursor: str | None = None,
                         matches: Mapping[str, str] | None = None) -> dict[str, Any]:
        """First entry (of ``journal(unit, since_cursor, matches)``) for which ``predicate`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.journal(unit=unit, since_cursor=since_cursor, matches=matches)
            for entry in entries:
                if predicate(entry):
                    return entry
            if time.monotonic() > deadline:
                seen = "\n".join(str(entry.get("MESSAGE")) for entry in entries[-20:])
                raise SystemdHarnessError(f"no matching journal entry ({dict(matches or {})}) after {timeout}s; last "
                                          f"messages:\n{seen}")
            time.sleep(0.05)


def _shared_dirs(candidates: Iterable[Path]) -> list[Path]:
    """The candidates that lie under a directory remounted inside, minus those nested in another one."""
    found: list[Path] = []
    for path in sorted({Path(os.path.realpath(p)) for p in candidates}):
        if path.is_relative_to("/run"):
            raise SystemdHarnessError(f"cannot share {path}: /run is replaced before shares are bound")
        if any(path.is_relative_to(root) for root in REMOUNTED) and not any(path.is_relative_to(f) for f in found):
            found.append(path)
    return found


def _remove_stale_cgroups(parent: Path) -> None:
    """Remove the cgroups of instances whose test process was killed before it could clean up."""
    for cgroup in parent.glob(f"{CGROUP_PREFIX}*"):
        owner = cgroup.name.removeprefix(CGROUP_PREFIX).split("-")[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            with contextlib.suppress(OSError):
                _remove_cgroup_tree(cgroup, timeout=0)


def _remove_cgroup_tree(root: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while root.exists():
        try:
            for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                path.rmdir()
            root.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as error:
        return f"({error})"


def default_shares(basetemp: Path) -> list[Path]:
    """pytest's basetemp, the interpreter's prefixes and the checkout: whatever of them lies under /tmp & co."""
    return [basetemp, *default_code()]


def default_code() -> list[Path]:
    """The interpreter's prefixes and the checkout: what services run, so what they must see."""
    return [Path(sys.prefix), Path(sys.base_prefix), CHECKOUT]


def boot_or_skip(workdir: Path, share: Iterable[Path] = (), code: Iterable[Path] = ()) -> SystemdInstance:
    """Boot an instance, or skip the test where that is impossible (tests/conftest.py fails skips under CI=true)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"real systemd unavailable: {reason}")
    return SystemdInstance(workdir, share=share, code=code)


@pytest.fixture(name="systemd")
def systemd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdInstance]:
    """Fixture ``systemd``: a freshly booted instance for one test; pytest's basetemp (so tmp_path) is visible
    inside (tests/conftest.py registers this module as a plugin)."""
    basetemp = tmp_path_factory.getbasetemp()
    instance = boot_or_skip(tmp_path_factory.mktemp("systemd"), share=[basetemp], code=default_code())
    try:
        yield instance
    finally:
        instance.close()
