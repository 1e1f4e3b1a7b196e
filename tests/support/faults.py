"""Fault injection for the reliability tests (tests/test_reliability*.py): the daemon as a child process on a
standalone pigpiod emulator, clients as processes of their own, network namespaces, CPU hogs, and the record of
every figure (``build/reliability.json``, rendered into docs/RELIABILITY.md by scripts/reliability_report.py).

Times are CLOCK_MONOTONIC everywhere (``time.monotonic()`` in every process, the emulator's command log), so a
stop seen in pigpiod's log compares directly with when a client sent and got its heartbeats answered.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .daemons import CHECKOUT as CHECKOUT  # re-exported: tests/test_reliability_load.py imports it from here
from .hil import Served
from .pigpiod_emulator import Cmd, EmulatorClient

RESULTS = Path(os.environ.get("ROVER_SAFETY_RELIABILITY_JSON", str(CHECKOUT / "build" / "reliability.json")))
PYTHON = sys.executable
EXPIRED = re.compile(r"session (\S+) from (\S+) expired: .*outputs off ([\d.]+) ms after the deadline")
# Motors on the dir+pwm wiring, one pin pair each: (dir, pwm).
MOTOR_PINS = ((9, 10), (11, 12), (13, 19), (16, 20), (21, 26), (17, 22), (27, 23), (24, 25))


# ---- figures ---------------------------------------------------------------------------------------------------


def ms_stats(seconds: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p99, max of a list of durations in seconds, as milliseconds (rounded to 0.01 ms)."""
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "min": round(1000 * ordered[0], 2), "p50": at(0.5), "p99": at(0.99),
            "max": round(1000 * ordered[-1], 2)}


def show(stats: Mapping[str, float], keys: Sequence[str] = ("p50", "p99", "max")) -> str:
    """`p50 1.2 / p99 3.4 / max 5.6` (ms)."""
    if not stats.get("n"):
        return "none"
    return " / ".join(f"{k} {stats[k]:.1f}" for k in keys)


@dataclass
class Row:
    """One line of docs/RELIABILITY.md's table, as a test recorded it."""

    key: str
    fault: str
    test: str
    trials: int = 0
    outcome: str = ""
    figure: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    recorded: str = ""
    kind: str = "measured"  # measured | linked | soak


def record(row: Row) -> None:
    """Merge `row` into RESULTS (by key), under a lock: tests in several processes may record at once."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            rows: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        except ValueError:
            rows = {}
        rows.setdefault("rows", {})[row.key] = asdict(row)
        rows["machine"] = {"cpus": os.cpu_count(), "load": list(os.getloadavg())}
        staged = RESULTS.with_suffix(".tmp")
        staged.write_text(json.dumps(rows, indent=1, sort_keys=True))
        staged.replace(RESULTS)


class Finding:
    """What one reliability test found: checks that all run (failures collected), then one recorded row; the test
    fails afterwards with every failed check, so the row is recorded either way."""

    def __init__(self, request: pytest.FixtureRequest, key: str, fault: str) -> None:
        self.row = Row(key=key, fault=fault, test=request.node.nodeid)
        self.started = time.monotonic()

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.row.problems.append(problem)
        return ok

    def finish(self, trials: int, outcome: str, figure: str, **figures: Any) -> None:
        row = self.row
        row.trials, row.outcome, row.figure, row.figures = trials, outcome, figure, figures
        row.passed = not row.problems
        row.seconds = round(time.monotonic() - self.started, 1)
        row.recorded = time.strftime("%Y-%m-%d %H:%M:%S")
        record(row)
        print(f"\n[reliability] {row.key}: {trials} trials; {outcome}; {figure}")
        for k, v in figures.items():
            print(f"[reliability]   {k}: {v}")
        assert not row.problems, "\n".join(row.problems)


# ---- the rover's config ----------------------------------------------------------------------------------------


def rover_yaml(pigpio_port: int, *, window: str = "200ms", bind: str = "127.0.0.1:0", motors: int = 2,
               pigpio_host: str = "127.0.0.1", insecure: bool = False, limits: Mapping[str, int] | None = None) -> str:
    """A config of `motors` dir+pwm motors m0.. on pigpio at pigpio_host:pigpio_port."""
    lines = ["network:", f'  bind_address: "{bind}"']
    if insecure:
        lines.append("  insecure: true")
    lines += ["  sessions:", f"    heartbeat_window: {window}"]
    if limits:
        lines.append("  limits:")
        lines += [f"    {k}: {v}" for k, v in limits.items()]
    lines += ["gpio:", "  pin_factory: pigpio", f"  pigpio: {{host: {pigpio_host}, port: {pigpio_port}}}",
              "components:"]
    for i in range(motors):
        d, p = MOTOR_PINS[i]
        lines += [f"  - name: m{i}", "    type: motor", "    model: gpio",
                  f"    attributes: {{pins: {{dir: {d}, pwm: {p}}}, max_rpm: 120}}"]
    return "\n".join(lines) + "\n"


def pwm_pin(motor: str) -> int:
    return MOTOR_PINS[int(motor.removeprefix("m"))][1]


# ---- pigpiod ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(host: str = "127.0.0.1", nice: int | None = -5, realtime: bool = False) -> Iterator[EmulatorClient]:
    """A standalone pigpiod emulator (its own process, so its timestamps are not held up by the test's GIL).

    It is measuring equipment here: given a higher priority than ordinary processes (like pigpiod's own
    real-time DMA engine, which never waits for the CPU), so that CPU-load tests measure the daemon, not it;
    with `realtime`, SCHED_FIFO below the daemon's own deadline threads (root only).
    """
    emu = EmulatorClient.spawn(host=host)
    try:
        if nice is not None and emu.process is not None:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{emu.process.pid}/task"):
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                    if realtime:
                        os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(5))
        yield emu
    finally:
        emu.close()


def off_times(emu: EmulatorClient, pin: int, since: float) -> list[float]:
    """When pigpiod got a duty-0 PWM command for `pin` since `since` (its own timestamps)."""
    return [c.t for c in emu.log(since) if c.cmd == Cmd.PWM and c.p1 == pin and c.p2 == 0 and c.result >= 0]


def first_off(emu: EmulatorClient, pin: int, since: float, timeout: float) -> float | None:
    """The first duty-0 command for `pin` after `since`, waiting up to `timeout` for the duty to read 0."""
    emu.wait_for(lambda: emu.pin(pin).duty == 0, timeout, interval=0.01)
    offs = off_times(emu, pin, since)
    return offs[0] if offs else None


def duty(emu: EmulatorClient, pin: int) -> float:
    return emu.pin(pin).duty_cycle


# ---- the daemon as a process -----------------------------------------------------------------------------------


DaemonProc = Served  # `rover-safety serve` as a child process: tests/support/hil.py


@contextlib.contextmanager
def daemon(tmp: Path, text: str, name: str = "rover.yaml", **kwargs: Any) -> Iterator[DaemonProc]:
    """A started daemon on the config `text`, killed (if it still runs) at the end whatever happens."""
    path = tmp / name
    path.write_text(text)
    proc = DaemonProc(path, **kwargs)
    try:
        yield proc.started()
    finally:
        proc.close()


# ---- clients as processes --------------------------------------------------------------------------------------


@dataclass
class Call:
    what: str
    s: float
    a: float | None = None
    ok: bool | None = None
    code: str = ""


class ClientProc:
    """tests/support/fault_client.py as a child process (see its docstring for what it prints); `close()` (or the
    end of a `with` block) kills it. It also exits by itself once this process is gone (its stdin, a pipe from
    here, reads end of file), so a test that dies without closing it leaves no client heartbeating."""

    def __init__(self, target: str, motor: str, *, prefix: Sequence[str] = (), interval: float = 0.04,
                 timeout: float = 1.0, recover: bool = False, power: float = 0.5) -> None:
        argv = [*prefix, PYTHON, "-m", "tests.support.fault_client", "--target", target, "--motor", motor,
                "--interval", str(interval), "--timeout", str(timeout), "--power", str(power)]
        if recover:
            argv.append("--recover")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=CHECKOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.motor = motor
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        """The first event (from the start) for which predicate(event) holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"client for {self.motor}: no {what} within {timeout} s: {self.events[-5:]}")
                self._changed.wait(min(left, 0.1))

    def wait_count(self, predicate: Any, count: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(1 for e in self.events if predicate(e)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"client for {self.motor}: fewer than {count} {what} in {timeout} s")
                self._changed.wait(min(left, 0.1))

    def ready(self, timeout: float = 30) -> ClientProc:
        self.wait_for(lambda e: e["ev"] == "ready", timeout, "ready line")
        return self

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> float:
        sent = time.monotonic()
        os.kill(self.proc.pid, sig)
        return sent

    def calls(self) -> list[Call]:
        """Every call it sent, with its answer (if any), in order."""
        with self._changed:
            events = list(self.events)
        calls: list[Call] = []
        for e in events:
            if e["ev"] == "send":
                calls.append(Call(e["what"], e["s"]))
            elif e["ev"] in ("ok", "err"):
                for c in reversed(calls):
                    if c.s == e["s"]:
                        c.a, c.ok, c.code = e["a"], e["ev"] == "ok", e.get("code", "OK")
                        break
        return calls

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(2)

    def __enter__(self) -> ClientProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Deadline:
    """Where the daemon's deadline for a session must lie, from its client's calls: not before `lo` (the last
    answered call was sent at lo - window, and the daemon heard it no earlier), not after `hi` (nothing was heard
    after the last answer, or after `cutoff` for a call left unanswered)."""

    lo: float
    hi: float


def deadline_of(calls: Sequence[Call], cutoff: float, window: float) -> Deadline:
    """The deadline bounds of the session whose calls these are, for a client cut off at `cutoff`.

    Only the calls of the client's last session before the cut count (from its last `start`)."""
    before = [c for c in calls if c.s < cutoff]
    starts = [i for i, c in enumerate(before) if c.what == "start" and c.ok]
    assert starts, "the client never started a session before the cut"
    mine = before[starts[-1]:]
    answered = [c for c in mine if c.ok]
    lo = max(c.s for c in answered) + window
    reach = [c.a for c in answered if c.a is not None]
    reach += [min(c.a, cutoff) if c.a is not None else cutoff for c in mine if not c.ok]
    return Deadline(lo, max(reach) + window)


def run_sessions(target: str, sessions: int, seconds: float, interval: float, *, prefix: Sequence[str] = (),
                 nice: int | None = None) -> subprocess.Popen[str]:
    """tests/support/fault_sessions.py as a child process (started; `sessions_summary` reads its result)."""
    argv = [*prefix, PYTHON, "-m", "tests.support.fault_sessions", "--target", target, "--sessions", str(sessions),
            "--seconds", str(seconds), "--interval", str(interval)]

    if nice is not None:  # the `nice` command, not a preexec_fn: no fork of this process (see tests/conftest.py)
        argv = ["nice", "-n", str(nice), *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=CHECKOUT)


def sessions_summary(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the live clients did not finish in time") from None
    summaries = [json.loads(line) for line in out.splitlines() if '"summary"' in line]
    assert summaries, f"the live clients printed no summary (exit {proc.returncode}): {out[-2000:]}"
    result: dict[str, Any] = summaries[-1]
    return result


# ---- CPU load --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_cpus(count: int = 4, seconds: float = 60.0) -> Iterator[list[int]]:
    """`count` processes spinning at nice 0 (each ends by itself after `seconds`; ended at once on exit)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    procs = [subprocess.Popen([PYTHON, "-c", code]) for _ in range(count)]
    for p in procs:  # set from here, not in a preexec_fn (no fork of this process; see tests/conftest.py)
        os.setpriority(os.PRIO_PROCESS, p.pid, 0)
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)


# ---- network namespaces ----------------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


class Netns:
    """Two network namespaces made for one test: the daemon's (`daemon_ns`) and a client's (`client_ns`), joined
    by a veth pair; and a second veth pair from this (the root) namespace into the daemon's, through which the
    daemon reaches a pigpiod emulator listening here on `gpio_host`. `close` deletes it all."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{random.randrange(100, 999)}"
        self.daemon_ns, self.client_ns = f"rsrel-d{tag}", f"rsrel-c{tag}"
        self.gpio_link = f"rsg{tag}"
        octet = random.randrange(1, 250)
        net = f"10.{random.randrange(200, 250)}.{octet}"
        self.daemon_host, self.client_host = f"{net}.1", f"{net}.2"
        self.gpio_host, self.gpio_peer = f"{net}.5", f"{net}.6"
        self.client_link = "rsc0"  # the client namespace's end of the link to the daemon
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        d, c = self.daemon_ns, self.client_ns
        ip("netns", "add", d)
        ip("netns", "add", c)
        ip("-n", d, "link", "set", "lo", "up")
        ip("-n", c, "link", "set", "lo", "up")
        ip("-n", d, "link", "add", "rsd0", "type", "veth", "peer", "name", self.client_link, "netns", c)
        ip("-n", d, "addr", "add", f"{self.daemon_host}/30", "dev", "rsd0")
        ip("-n", c, "addr", "add", f"{self.client_host}/30", "dev", self.client_link)
        ip("-n", d, "link", "set", "rsd0", "up")
        ip("-n", c, "link", "set", self.client_link, "up")
        ip("link", "add", self.gpio_link, "type", "veth", "peer", "name", "rsg0", "netns", d)
        ip("addr", "add", f"{self.gpio_host}/30", "dev", self.gpio_link)
        ip("-n", d, "addr", "add", f"{self.gpio_peer}/30", "dev", "rsg0")
        ip("link", "set", self.gpio_link, "up")
        ip("-n", d, "link", "set", "rsg0", "up")

    def exec_in(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def link(self, up: bool) -> float:
        """Set the client's end of its link to the daemon up or down; returns when that was done."""
        ip("-n", self.client_ns, "link", "set", self.client_link, "up" if up else "down")
        return time.monotonic()

    def close(self) -> None:
        for ns in (self.client_ns, self.daemon_ns):
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.gpio_link, check=False)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"rsrel-probe{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None
