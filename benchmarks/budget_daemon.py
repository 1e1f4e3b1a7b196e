"""`rover-safety serve` as a child process for bench_budget.py: started inside a CPU budget with a notify socket of
our own (READY=1 timed from the exec), its stderr read line by line (the expiry lines), its threads sampled in /proc."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.budget_cgroup import Cgroup, launcher

# "session <id> from <peer> expired: no heartbeat for 500ms; stopped m03 (moving: m03), outputs off 0.42 ms after the
# deadline" -- the same wording before and after the asyncio move (daemon/journal.py describe()).
EXPIRED = re.compile(r"session (\S+) from (\S+) expired: .*?stopped (.*?)(?: \(moving: [^)]*\))?"
                     r"(?:, outputs off ([\d.]+) ms after the deadline)?$")
SUPPRESSED = re.compile(r"(\d+) session events from (\S+) were not logged one by one")
LISTENING = re.compile(r"listening on [^ ]*:(\d+)[ ,]")
NOT_REALTIME = "without real-time priority"
STRIP_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID",
             "LISTEN_FDNAMES")


@dataclass(frozen=True)
class ExpiryLine:
    at: float  # when the line arrived (time.monotonic())
    session_id: str
    stopped: str
    full_stop_ms: float | None  # the daemon's own figure: deadline -> every output off (the stop thread's stop())


@dataclass
class TaskSample:
    """One thread: name, CPU ns, voluntary and involuntary context switches."""

    name: str
    cpu_ns: int
    voluntary: int
    involuntary: int


@dataclass
class Idle:
    seconds: float
    cpu_s: float = 0.0
    voluntary: int = 0
    involuntary: int = 0
    threads: int = 0
    by_name: list[tuple[str, int, int, float]] = field(default_factory=list)  # name, threads, wake-ups, CPU s


def tasks(pid: int) -> dict[int, TaskSample]:
    out: dict[int, TaskSample] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines()
                              if ":" in line)
                out[int(task.name)] = TaskSample((task / "comm").read_text().strip(),
                                                 int((task / "schedstat").read_text().split()[0]),
                                                 int(status["voluntary_ctxt_switches"]),
                                                 int(status["nonvoluntary_ctxt_switches"]))
            except (OSError, KeyError, ValueError):
                continue
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process so far (schedstat: nanoseconds, exact)."""
    return sum(t.cpu_ns for t in tasks(pid).values()) / 1e9


def idle_between(before: dict[int, TaskSample], after: dict[int, TaskSample], seconds: float) -> Idle:
    idle = Idle(seconds, threads=len(after))
    groups: dict[str, list[float]] = {}
    for tid, now in after.items():
        then = before.get(tid, TaskSample(now.name, 0, 0, 0))
        cpu = (now.cpu_ns - then.cpu_ns) / 1e9
        vol, invol = now.voluntary - then.voluntary, now.involuntary - then.involuntary
        idle.cpu_s += cpu
        idle.voluntary += vol
        idle.involuntary += invol
        group = groups.setdefault(now.name, [0, 0, 0.0])
        group[0] += 1
        group[1] += vol + invol
        group[2] += cpu
    idle.by_name = sorted(((n, int(g[0]), int(g[1]), g[2]) for n, g in groups.items()), key=lambda r: (-r[2], r[0]))
    return idle


def policies(pid: int) -> Counter[str]:
    """How many of the process's threads run under each scheduling policy (Python 3.11 threads all share the process's
    name in /proc, so the deadline and stop threads show as the SCHED_FIFO ones)."""
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    out: Counter[str] = Counter()
    for tid in tasks(pid):
        with contextlib.suppress(OSError):
            policy = os.sched_getscheduler(tid)
            label = names.get(policy, str(policy))
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                label += f" {os.sched_getparam(tid).sched_priority}"
            out[label] += 1
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class DaemonProcess:
    """One `rover-safety serve --config X` inside `group`, pinned to `cpu`, with NOTIFY_SOCKET pointing at a datagram
    socket of ours; a thread reads its stderr (kept in `lines` and copied to `log_path`), another the notify socket."""

    def __init__(self, command: list[str], config: Path, group: Cgroup | None, cpu: int | None, log_path: Path,
                 watchdog_usec: int = 0, nice: int = 0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-budget-notify-"))
        self.notify_path = self._dir / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.notify_path))
        self._sock.settimeout(0.2)
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self.ready_at: float | None = None
        self.listening_at: float | None = None
        self.port = 0
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k not in STRIP_ENV}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [*launcher(group, cpu, nice), *command, "serve", "--config", str(config)]
        if watchdog_usec:  # as under the unit's WatchdogSec=: the deadline loop pings at half of it
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            argv = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *argv]
        self._closed = False
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.pid = self.proc.pid  # the shell and taskset exec in place: this is the daemon's pid
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()
        self._notify = threading.Thread(target=self._listen, name="daemon-notify", daemon=True)
        self._notify.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            now = time.monotonic()
            self._log.write(f"{now:.6f} {line}\n")
            with self._changed:
                self.lines.append((now, line))
                if self.listening_at is None and (m := LISTENING.search(line)):
                    self.listening_at, self.port = now, int(m.group(1))
                self._changed.notify_all()

    def _listen(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode(errors="replace")
            with self._changed:
                if self.ready_at is None and "READY=1" in text.split("\n"):
                    self.ready_at = now
                self._changed.notify_all()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Until READY=1 and the listening line (with the port) have both arrived, the process ended, or timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.ready_at is None or self.listening_at is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._changed.wait(min(left, 0.1))
        return True

    def text(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def expiries(self, start: float = 0.0, end: float = float("inf")) -> list[ExpiryLine]:
        out = []
        with self._changed:
            lines = [(t, line) for t, line in self.lines if start <= t <= end]
        for t, line in lines:
            if m := EXPIRED.search(line):
                out.append(ExpiryLine(t, m.group(1), m.group(3), float(m.group(4)) if m.group(4) else None))
        return out

    def suppressed(self, start: float = 0.0, end: float = float("inf")) -> int:
        """Session events the daemon's journal budget summarised instead of logging them one by one."""
        with self._changed:
            return sum(int(m.group(1)) for t, line in self.lines if start <= t <= end
                       and (m := SUPPRESSED.search(line)))

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (every output off, exit 0), SIGKILL if it hangs; the exit code."""
        code: int | None = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        else:
            code = self.proc.returncode
        self._reader.join(5)
        self._closed = True
        self._notify.join(2)
        self._sock.close()
        self._log.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        with contextlib.suppress(OSError):
            self.notify_path.unlink()
            self._dir.rmdir()
        return code
