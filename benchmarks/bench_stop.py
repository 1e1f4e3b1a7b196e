"""How fast rover-safety stops a motor when a session lapses, and what heartbeats cost; run `make bench`.

    python benchmarks/bench_stop.py [--window 1.0] [--expiries 210] [--seconds 5]

One run (about 55 s) measures, on this machine:

1. stop latency: a real Daemon in this process on mock PWM pins (14 motors, dir+pwm, BCM 0..27); 100 sessions
   heartbeat every window/5 over gRPC from 4 client processes while 14 "lanes" in 2 more processes each start a
   session, SetPower a motor with viam-sid metadata and go silent, over and over. For every expiry the latency is the
   mock pin's own change time (`pin._last_change`) of the PWM duty going to 0 minus the deadline the SessionManager
   expired the session under. Each stage is timed too: deadline -> the deadline loop's wait returned -> table lock
   re-taken -> dispatch -> stop thread running -> duty 0 at the pin -> stop() returned; a "witness" process does the
   same kind of timed wait at the same moments, to tell what the loaded machine costs any timer from what is lost
   inside the daemon's process.
2. heartbeats/s: the 4 heartbeat processes send SendSessionHeartbeat for their 100 sessions as fast as they can for
   5 s, with the false expiries (sessions that expired although their client kept heartbeating) counted by the
   daemon's own session manager and by the clients.
3. the floor: the same clients and request bytes against a trivial grpcio echo service in this process (same server
   model: grpc.server + ThreadPoolExecutor(32)): 5 s on its own, then 5 s each interleaved with heartbeats in 250 ms
   slots, so that whatever else runs on the machine weighs on both alike; the interleaved ratio is the one judged.
4. idle cost of `rover-safety serve --simulate` in its own process: CPU time and context switches over 5 s.

Every phase also reports how busy the machine was and how much of that was other processes.

It exits 0 whatever it measures (a measurement, not a gate) and prints "MISSED TARGET" for any figure off target.
`--switch-interval`, `--inline-cut`, `--rt`, `--nice` and `--ab` change the in-process daemon to try out proposed
changes; they are off unless asked for, so a plain run measures the daemon as shipped (at nice 0, see --nice).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import logging
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from rover_safety.api import motor_pb2, robot_pb2, safety_pb2

START_SESSION = "/viam.robot.v1.RobotService/StartSession"
HEARTBEAT = "/viam.robot.v1.RobotService/SendSessionHeartbeat"
SET_POWER = "/viam.component.motor.v1.MotorService/SetPower"
CLOSE_SESSION = "/rover_safety.v1.SafetyService/CloseSession"
ECHO_SERVICE = "bench.Echo"
ECHO = f"/{ECHO_SERVICE}/Call"
SERVER_WORKERS = 32  # the daemon's GRPC_WORKERS
MOTORS = 14  # dir+pwm: two pins each, BCM 0..27
POWER = 0.6

TARGET_P99_MS = 2.0
TARGET_MAX_MS = 5.0
TARGET_FLOOR_SHARE = 0.80

Call = Callable[..., Any]


def _raw(channel: grpc.Channel, method: str) -> Call:
    """A unary call that sends and receives bytes as they are (no serializers: the same cost for every service)."""
    return channel.unary_unary(method, None, None)


def _is_expired(exc: grpc.RpcError) -> bool:
    details = exc.details() if isinstance(exc, grpc.Call) else ""
    return "SESSION_EXPIRED" in (details or "")


# --- client processes ------------------------------------------------------------------------------------------


class Track:
    """Per-session heartbeat bookkeeping of one client process: gaps between successful sends, refusals."""

    def __init__(self, sessions: int) -> None:
        self._lock = threading.Lock()
        self.last = [0.0] * sessions
        self.max_gap = 0.0
        self.expired = 0  # SESSION_EXPIRED answers to a heartbeat: the client was on time, the daemon says no
        self.errors = 0

    def ok(self, i: int, sent: float) -> None:
        with self._lock:
            if self.last[i] and sent - self.last[i] > self.max_gap:
                self.max_gap = sent - self.last[i]
            if sent > self.last[i]:
                self.last[i] = sent

    def failed(self, exc: grpc.RpcError) -> None:
        with self._lock:
            if _is_expired(exc):
                self.expired += 1
            else:
                self.errors += 1


class Pacer(threading.Thread):
    """Heartbeats every session like Viam's SDKs: send, wait for the answer, sleep window/5, again."""

    def __init__(self, call: Call, requests: list[bytes], interval: float, track: Track) -> None:
        super().__init__(name="pacer", daemon=True)
        self.call, self.requests, self.interval, self.track = call, requests, interval, track
        self.halt = threading.Event()
        self.paused = threading.Event()
        self.sent = 0

    def run(self) -> None:
        now = time.monotonic()
        n = len(self.requests)
        due = [(now + self.interval * (i + 1) / n, i) for i in range(n)]  # staggered over one interval
        heapq.heapify(due)
        while not self.halt.is_set():
            at, i = due[0]
            delay = at - time.monotonic()
            if delay > 0 and self.halt.wait(delay):
                break
            if self.paused.is_set():  # the hammer keeps the sessions alive meanwhile
                heapq.heapreplace(due, (time.monotonic() + self.interval, i))
                continue
            sent = time.monotonic()
            try:
                self.call(self.requests[i], timeout=5.0)
                self.track.ok(i, sent)
                self.sent += 1
            except grpc.RpcError as exc:
                self.track.failed(exc)
            heapq.heapreplace(due, (time.monotonic() + self.interval, i))


def hammer(call: Call, requests: list[bytes], start: float, end: float, threads: int,
           track: Track | None) -> tuple[int, int]:
    """Closed-loop calls from `threads` threads between two monotonic instants; (completed in time, failed)."""
    counts = [0] * threads
    failures = [0] * threads

    def run(k: int) -> None:
        i = k
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while True:
            sent = time.monotonic()
            if sent >= end:
                return
            j = i % len(requests)
            try:
                call(requests[j], timeout=5.0)
            except grpc.RpcError as exc:
                failures[k] += 1
                if track is not None:
                    track.failed(exc)
            else:
                if time.monotonic() <= end:
                    counts[k] += 1
                if track is not None:
                    track.ok(j, sent)
            i += threads

    workers = [threading.Thread(target=run, args=(k,), name=f"hammer-{k}") for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts), sum(failures)


def alternate(calls: tuple[Call, Call], requests: list[bytes], start: float, slot: float, slots: int, threads: int,
              track: Track) -> tuple[list[int], int]:
    """Closed-loop calls alternating between two services in time slots shared by every client process, so that
    whatever else runs on the machine weighs on both alike: calls[1] in even slots, calls[0] in odd ones.

    Returns the calls completed in each slot, and the failures."""
    counts = [[0] * slots for _ in range(threads)]
    failures = [0] * threads

    def run(k: int) -> None:
        i = k
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while True:
            slot_now = int((time.monotonic() - start) // slot)
            if slot_now >= slots:
                return
            which = (slot_now + 1) % 2  # heartbeats first: the sessions have just been left by the pacer
            j = i % len(requests)
            sent = time.monotonic()
            try:
                calls[which](requests[j], timeout=5.0)
            except grpc.RpcError as exc:
                failures[k] += 1
                if which:
                    track.failed(exc)
            else:
                if int((time.monotonic() - start) // slot) == slot_now:  # only calls that fit in their slot count
                    counts[k][slot_now] += 1
                if which:
                    track.ok(j, sent)
            i += threads

    workers = [threading.Thread(target=run, args=(k,), name=f"alternate-{k}") for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [sum(c[s] for c in counts) for s in range(slots)], sum(failures)


def heartbeat_client(daemon_addr: str, echo_addr: str, sessions: int, window: float, conn: Connection) -> None:
    """One heartbeat process: owns `sessions` sessions; paces them, or hammers the daemon or the echo service."""
    daemon = grpc.insecure_channel(daemon_addr)
    echo = grpc.insecure_channel(echo_addr)
    start_session = _raw(daemon, START_SESSION)
    heartbeat = _raw(daemon, HEARTBEAT)
    close_session = _raw(daemon, CLOSE_SESSION)
    echo_call = _raw(echo, ECHO)
    track = Track(sessions)
    ids: list[str] = []
    requests = [robot_pb2.SendSessionHeartbeatRequest(id=f"{k:036d}").SerializeToString() for k in range(sessions)]
    pacer: Pacer | None = None
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "start":
            for _ in range(sessions):
                answer = robot_pb2.StartSessionResponse.FromString(
                    start_session(robot_pb2.StartSessionRequest().SerializeToString(), timeout=5.0))
                ids.append(answer.id)
            requests = [robot_pb2.SendSessionHeartbeatRequest(id=s).SerializeToString() for s in ids]
            pacer = Pacer(heartbeat, requests, window / 5, track)
            pacer.start()
            conn.send(ids)
        elif command == "hammer":
            target, begin, end, threads = args
            if target == "daemon":
                assert pacer is not None
                pacer.paused.set()
                done = hammer(heartbeat, requests, begin, end, threads, track)
                pacer.paused.clear()
            else:
                done = hammer(echo_call, requests, begin, end, threads, None)
            conn.send(done)
        elif command == "alternate":  # heartbeats in even slots, echo in odd ones
            begin, slot, slots, threads = args
            assert pacer is not None
            pacer.paused.set()
            conn.send(alternate((echo_call, heartbeat), requests, begin, slot, slots, threads, track))
            pacer.paused.clear()
        elif command == "close":
            if pacer is not None:
                pacer.halt.set()
                pacer.join()
            for session_id in ids:
                try:
                    close_session(safety_pb2.CloseSessionRequest(id=session_id).SerializeToString(), timeout=5.0)
                except grpc.RpcError:
                    track.errors += 1
            conn.send({"max_gap": track.max_gap, "expired": track.expired, "errors": track.errors,
                       "paced": pacer.sent if pacer else 0})
        elif command == "exit":
            daemon.close()
            echo.close()
            return


@dataclass(frozen=True)
class LaneRecord:
    session_id: str
    motor: str
    sent: float  # monotonic, this machine's clock: comparable with the daemon's
    answered: float
    error: str = ""


def expiry_client(daemon_addr: str, lanes: list[tuple[str, float]], cycles: int, window: float,
                  seed: int, conn: Connection) -> None:
    """Lanes of sessions that each drive one motor and go silent: one expiry per cycle per lane."""
    channel = grpc.insecure_channel(daemon_addr)
    start_session = _raw(channel, START_SESSION)
    set_power = _raw(channel, SET_POWER)
    start_bytes = robot_pb2.StartSessionRequest().SerializeToString()
    records: list[LaneRecord] = []
    conn.send("ready")
    _, begin = conn.recv()

    def lane(motor: str, offset: float, rng: random.Random) -> None:
        time.sleep(max(0.0, begin + offset - time.monotonic()))
        power = motor_pb2.SetPowerRequest(name=motor, power_pct=POWER).SerializeToString()
        for _ in range(cycles):
            session_id, error = "", ""
            sent = answered = time.monotonic()
            try:
                session_id = robot_pb2.StartSessionResponse.FromString(start_session(start_bytes, timeout=5.0)).id
                sent = time.monotonic()
                set_power(power, timeout=5.0, metadata=(("viam-sid", session_id),))
                answered = time.monotonic()
            except grpc.RpcError as exc:
                error = f"{exc.code() if isinstance(exc, grpc.Call) else exc!r}"
            records.append(LaneRecord(session_id, motor, sent, answered, error))
            # silent from here: the session lapses one window after SetPower; then the next session takes the motor
            time.sleep(window + 0.15 + rng.uniform(0.0, 0.25))

    threads = [threading.Thread(target=lane, args=(m, off, random.Random(seed * 100 + k)))
               for k, (m, off) in enumerate(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.send(records)
    conn.recv()
    channel.close()


def timer_witness(conn: Connection) -> None:
    """The deadline loop's kind of wait (a timed Condition.wait to a monotonic deadline) in a process of its own.

    It runs during the stop-latency phase, so its lateness is what the OS and the loaded machine cost any timer at the
    same moments; whatever the daemon's deadline loop loses beyond it is lost inside the daemon's process (the GIL).
    """
    _, end = conn.recv()
    lateness: list[float] = []
    rng = random.Random(7)
    condition = threading.Condition()
    with condition:
        while time.monotonic() < end:
            deadline = time.monotonic() + rng.uniform(0.02, 0.08)
            while (now := time.monotonic()) < deadline:
                condition.wait(deadline - now)
            lateness.append(now - deadline)
    conn.send(lateness)


# --- the daemon side: probes on the session manager and on the pins ------------------------------------------------


class TimedCondition(threading.Condition):
    """The session manager's condition variable, noting when a wait returned and when the table lock was re-taken."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.returned = (math.nan, math.nan)

    def _acquire_restore(self, state: Any) -> None:
        began = time.monotonic()  # the timed wait is over and this thread runs Python again: it holds the GIL
        super()._acquire_restore(state)  # type: ignore[misc]
        self.returned = (began, time.monotonic())


@dataclass
class Expiry:
    deadline: float
    woke: float  # the deadline loop's clock reading in the pass that expired it
    wait_returned: tuple[float, float]  # the last wait of the deadline loop before that: returned, lock re-taken
    batch: int  # how many sessions that pass expired
    resources: tuple[str, ...]
    switch_interval: float  # the GIL switch interval in force when the loop woke
    inline: bool = False
    dispatched: float = math.nan


class Probe:
    """Timestamps every stage of the stop path in the in-process daemon, without changing what it does."""

    def __init__(self) -> None:
        self.pins: dict[int, Any] = {}
        self.local = threading.local()
        self.pin_events: list[tuple[float, int, float, str, str]] = []  # (time, bcm, value, kind, session id)
        self.expiries: dict[str, Expiry] = {}
        self.stops: dict[tuple[str, str], tuple[float, float]] = {}  # (session, resource) -> thread start, return
        self.rt: int | None = None  # SCHED_FIFO priority for the deadline and stop threads (an experiment)
        self.gc: list[tuple[float, float, int]] = []  # the cyclic garbage collector's pauses: start, end, generation
        self._gc_began = 0.0
        self.inline = "never"  # or "always", or "alternate" (every other expiry: an A/B test under the same load)
        self._count = 0

    def on_pin_change(self, bcm: int, value: float) -> None:
        pin = self.pins.get(bcm)
        at = float(pin._last_change) if pin is not None else time.monotonic()
        session_id: str | None = getattr(self.local, "session_id", None)
        if session_id is not None:
            kind = "stop"
        else:
            from rover_safety.daemon.sessions import from_context

            session = from_context()
            kind, session_id = ("command", session.id) if session is not None else ("other", "")
        self.pin_events.append((at, bcm, value, kind, session_id))

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.monotonic()
        else:
            self.gc.append((self._gc_began, time.monotonic(), info["generation"]))

    def install(self, manager: Any) -> None:
        gc.callbacks.append(self.on_gc)
        collect_due = manager._collect_due
        dispatch = manager._dispatch
        stop_one = manager._stop_one
        condition = TimedCondition(manager._lock)
        with manager._lock:  # swap the condition under the loop's feet, then wake it from the old one
            old, manager._wake = manager._wake, condition
            old.notify_all()

        def collect_due_probe(now: float) -> Any:
            reports = collect_due(now)
            for report in reports:
                self._count += 1
                inline = self.inline == "always" or (self.inline == "alternate" and self._count % 2 == 0)
                self.expiries[report.session.id] = Expiry(report.deadline, now, condition.returned, len(reports),
                                                          report.resources, sys.getswitchinterval(), inline)
            return reports

        def dispatch_probe(report: Any) -> None:
            expiry = self.expiries.get(report.session.id)
            if expiry is not None and report.reason == "expired":
                expiry.dispatched = time.monotonic()
                if expiry.inline:  # experiment: duty 0 from the deadline thread itself, before the hand-off
                    self.local.session_id = report.session.id
                    try:
                        for name in report.resources:
                            cut = getattr(manager._resources.get(name), "cut", None)
                            if cut is not None:
                                cut()
                    finally:
                        self.local.session_id = None
            dispatch(report)

        if self.rt is not None:
            os.sched_setscheduler(manager._thread.native_id, os.SCHED_FIFO, os.sched_param(self.rt))

        def stop_one_probe(report: Any, name: str, resource: Any) -> None:
            began = time.monotonic()
            if self.rt is not None and not getattr(self.local, "rt", False):  # stop threads start on demand
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt))
                self.local.rt = True
            self.local.session_id = report.session.id
            try:
                stop_one(report, name, resource)
            finally:
                self.local.session_id = None
                self.stops[(report.session.id, name)] = (began, time.monotonic())

        setattr(manager, "_collect_due", collect_due_probe)  # noqa: B010 - instance attributes shadow the methods
        setattr(manager, "_dispatch", dispatch_probe)  # noqa: B010
        setattr(manager, "_stop_one", stop_one_probe)  # noqa: B010


def _config_text(window: float, port: int = 0) -> str:
    lines = [
        "network:",
        f'  bind_address: "127.0.0.1:{port}"',
        "  sessions:",
        f"    heartbeat_window: {round(window * 1000)}ms",
        "gpio:",
        "  pin_factory: mock",
        "components:",
    ]
    for k in range(MOTORS):
        lines += [f"  - name: m{k:02d}", "    type: motor", "    model: gpio",
                  f"    attributes: {{pins: {{pwm: {2 * k}, dir: {2 * k + 1}}}, pwm_freq: 800}}"]
    return "\n".join(lines) + "\n"


def _echo_server() -> tuple[grpc.Server, int]:
    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b""

    server = grpc.server(ThreadPoolExecutor(max_workers=SERVER_WORKERS, thread_name_prefix="echo"),
                         options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(call, None, None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


# --- idle cost ---------------------------------------------------------------------------------------------------


@dataclass
class Idle:
    seconds: float
    cpu: float  # CPU seconds over `seconds`, all threads
    cpu_ticks: float  # the same from /proc/<pid>/stat utime+stime (10 ms ticks), as a cross-check
    voluntary: int
    involuntary: int
    threads: int
    by_thread: list[tuple[str, int, int, float]] = field(default_factory=list)  # name, count, wake-ups, CPU s
    error: str = ""


def _tasks(pid: int) -> dict[int, tuple[str, int, int, int]]:
    """tid -> (name, CPU ns, voluntary, involuntary context switches)."""
    out = {}
    for tid_dir in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (tid_dir / "comm").read_text().strip()
            runtime = int((tid_dir / "schedstat").read_text().split()[0])
            status = dict(line.split(":", 1) for line in (tid_dir / "status").read_text().splitlines() if ":" in line)
            out[int(tid_dir.name)] = (name, runtime, int(status["voluntary_ctxt_switches"]),
                                      int(status["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError, ValueError):
            continue
    return out


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def measure_idle(config: Path, seconds: float) -> Idle:
    exe = Path(sys.executable).with_name("rover-safety")
    command = str(exe) if exe.exists() else shutil.which("rover-safety")
    if command is None:
        return Idle(seconds, 0, 0, 0, 0, 0, error="rover-safety console script not found")
    proc = subprocess.Popen([command, "serve", "--config", str(config), "--simulate"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "listening" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20):
            return Idle(seconds, 0, 0, 0, 0, 0, error=f"the daemon did not start (exit code {proc.poll()})")
        time.sleep(1.0)  # let start-up settle
        before, ticks0, t0 = _tasks(proc.pid), _ticks(proc.pid), time.monotonic()
        time.sleep(seconds)
        after, ticks1, t1 = _tasks(proc.pid), _ticks(proc.pid), time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        groups: dict[str, list[float]] = {}
        total_cpu, vol, invol = 0, 0, 0
        for tid, (name, runtime, v, nv) in after.items():
            _, runtime0, v0, nv0 = before.get(tid, (name, 0, 0, 0))
            total_cpu += runtime - runtime0
            vol += v - v0
            invol += nv - nv0
            group = groups.setdefault(name, [0, 0, 0.0])
            group[0] += 1
            group[1] += v - v0 + nv - nv0
            group[2] += (runtime - runtime0) / 1e9
        by_thread = sorted(((n, int(g[0]), int(g[1]), g[2]) for n, g in groups.items()), key=lambda r: -r[2])
        return Idle(t1 - t0, total_cpu / 1e9, (ticks1 - ticks0) / hz, vol, invol, len(after), by_thread)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the run -----------------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@dataclass(frozen=True)
class Share:
    """Shares of all CPUs over a phase."""

    busy: float
    ours: float  # this benchmark's processes
    others: float  # everything else on the machine
    steal: float  # taken by the hypervisor from this VM


class Load:
    """CPU use of the whole machine against this benchmark's own processes: other load on the machine shows."""

    def __init__(self) -> None:
        self.pids = [os.getpid()]
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cpus = os.cpu_count() or 1

    def sample(self) -> tuple[float, int, int, int]:
        """(time, busy ticks of the machine, ticks stolen by the hypervisor, ticks of this benchmark)."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = values
        ours = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):  # a client process that has ended
                ours += _ticks(pid)
        return time.monotonic(), user + nice + system + irq + softirq, steal, ours

    def between(self, a: tuple[float, int, int, int], b: tuple[float, int, int, int]) -> Share:
        scale = self.hz * (b[0] - a[0]) * self.cpus
        total, ours = (b[1] - a[1]) / scale, (b[3] - a[3]) / scale
        return Share(total, ours, max(0.0, total - ours), (b[2] - a[2]) / scale)


def _machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"machine: nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {model}, "
        f"load average {Path('/proc/loadavg').read_text().split(' ', 1)[0]} at the start",
        f"system:  {platform.platform()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}, grpcio {grpc.__version__}",
    ]


@dataclass
class Options:
    window: float
    expiries: int
    sessions: int
    heartbeat_procs: int
    lane_procs: int
    threads: int
    seconds: float
    idle_seconds: float
    switch_interval: float | None
    inline_cut: bool
    ab: float | None
    rt: int | None
    nice: int | None


@dataclass
class Measured:
    """One expiry, deadline to duty 0, by stage (NaN where a stage does not apply)."""

    latency: float
    returned: float
    relocked: float
    woke: float
    dispatch: float
    thread: float
    pin: float
    rest: float
    inline: bool
    switch_interval: float
    batch: int
    deadline: float
    gc: float = 0.0  # milliseconds of garbage collection that overlapped deadline -> duty 0


STAGES = (
    ("returned", "deadline -> loop's wait returned, GIL held", None),
    ("relocked", "wait returned -> table lock re-taken", None),
    ("woke", "deadline -> loop woke (clock read, both above)", None),
    ("dispatch", "loop woke -> dispatch (table lock released)", None),
    ("thread", "dispatch -> stop thread running", False),
    ("pin", "stop thread running -> duty 0 at the pin", False),
    ("pin", "dispatch -> duty 0 at the pin (inline cut)", True),
    ("rest", "duty 0 -> stop() returned (dir pin low)", None),
)


def _timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def _spread(values: Sequence[float]) -> str:
    return f"{ms(pct(values, 0.5)):>9}{ms(pct(values, 0.99)):>9}{ms(max(values)):>9}" if values else ""


def run(opts: Options) -> int:
    from rover_safety.config import load
    from rover_safety.daemon.app import Daemon

    started = time.monotonic()
    missed: list[str] = []
    notes: list[str] = []
    lines = ["command: python benchmarks/bench_stop.py " + " ".join(sys.argv[1:]), *_machine()]
    print("\n".join(lines), flush=True)
    machine = Load()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    config_path = tmp / "bench.yaml"
    config_path.write_text(_config_text(opts.window))

    # 4. idle first, while nothing else of ours runs
    print("idle cost ...", flush=True)
    a = machine.sample()
    idle = measure_idle(config_path, opts.idle_seconds)
    idle_load = machine.between(a, machine.sample())

    # the daemon as shipped, its operator log going to a file (as costly as a terminal, and quiet)
    log = logging.getLogger("rover-safety")
    handler = logging.FileHandler(tmp / "daemon.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    default_switch = sys.getswitchinterval()
    if opts.switch_interval is not None:
        sys.setswitchinterval(opts.switch_interval)
    probe = Probe()
    probe.inline = "alternate" if opts.ab else "always" if opts.inline_cut else "never"
    probe.rt = opts.rt
    daemon = Daemon(load(config_path), config_path=str(config_path), on_pin_change=probe.on_pin_change)
    daemon.start()
    assert daemon.rig is not None
    pwm_pin: dict[str, int] = {}
    for motor in daemon.rig.motors.values():
        for output in motor._outputs:
            probe.pins[output.bcm] = output.device.pin
            if output.pwm:
                pwm_pin[motor.name] = output.bcm
    probe.install(daemon.sessions)
    echo, echo_port = _echo_server()
    if opts.nice is not None:  # every thread there is now but this one, which spawns the clients; new ones inherit
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != threading.get_native_id():
                os.setpriority(os.PRIO_PROCESS, int(tid), opts.nice)
    daemon_addr, echo_addr = f"127.0.0.1:{daemon.port}", f"127.0.0.1:{echo_port}"

    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    hb_conns: list[Connection] = []
    lane_conns: list[Connection] = []
    per_proc = [opts.sessions // opts.heartbeat_procs + (k < opts.sessions % opts.heartbeat_procs)
                for k in range(opts.heartbeat_procs)]
    motors = [f"m{k:02d}" for k in range(MOTORS)]
    cycles = math.ceil(opts.expiries / MOTORS)
    loads: dict[str, Share] = {}
    try:
        for k in range(opts.heartbeat_procs):
            here, there = ctx.Pipe()
            procs.append(ctx.Process(target=heartbeat_client, args=(daemon_addr, echo_addr, per_proc[k], opts.window,
                                                                     there), name=f"heartbeat-{k}", daemon=True))
            hb_conns.append(here)
        for k in range(opts.lane_procs):
            here, there = ctx.Pipe()
            lanes = [(m, i / MOTORS * opts.window) for i, m in enumerate(motors) if i % opts.lane_procs == k]
            procs.append(ctx.Process(target=expiry_client, args=(daemon_addr, lanes, cycles, opts.window, k, there),
                                     name=f"lanes-{k}", daemon=True))
            lane_conns.append(here)
        witness_conn, there = ctx.Pipe()
        procs.append(ctx.Process(target=timer_witness, args=(there,), name="timer-witness", daemon=True))
        for proc in procs:
            proc.start()
            machine.pids.append(proc.pid)
        for conn in hb_conns + lane_conns:
            if not conn.poll(60):
                raise RuntimeError("a client process did not start")
            conn.recv()

        def hammer_all(target: str, seconds: float, phase: str = "") -> tuple[int, int, float]:
            begin = time.monotonic() + 0.2
            for conn in hb_conns:
                conn.send(("hammer", target, begin, begin + seconds, opts.threads))
            time.sleep(max(0.0, begin - time.monotonic()))
            a = machine.sample()
            results = [conn.recv() for conn in hb_conns]
            if phase:
                loads[phase] = machine.between(a, machine.sample())
            return sum(r[0] for r in results), sum(r[1] for r in results), seconds

        # 3a. the floor, before: warm the channels, then measure
        print("floor (echo service) ...", flush=True)
        hammer_all("echo", 0.5)
        floor_before = hammer_all("echo", opts.seconds, "floor, before")

        # 1. stop latency under 100 heartbeating sessions
        print(f"stop latency: {opts.sessions} heartbeating sessions, {cycles * MOTORS} expiries ...", flush=True)
        hb_ids: set[str] = set()
        for conn in hb_conns:
            conn.send(("start",))
        for conn in hb_conns:
            hb_ids.update(conn.recv())
        time.sleep(2 * opts.window)  # every pacer in its rhythm
        toggling = threading.Event()
        if opts.ab:
            ab_interval = opts.ab

            def toggle() -> None:  # the GIL switch interval alternates: expiries fall in either arm at random
                k = 0
                while not toggling.wait(0.5):
                    k += 1
                    sys.setswitchinterval(ab_interval if k % 2 else default_switch)
                sys.setswitchinterval(default_switch)

            toggler = threading.Thread(target=toggle, name="ab-toggle", daemon=True)
            toggler.start()
        begin = time.monotonic() + 0.2
        for conn in lane_conns:
            conn.send(("run", begin))
        witness_conn.send(("run", begin + cycles * (opts.window + 0.3)))  # about as long as the lanes run
        a = machine.sample()
        records: list[LaneRecord] = []
        for conn in lane_conns:
            records += conn.recv()
            conn.send(("exit",))
        time.sleep(opts.window + 0.5)  # the last sessions lapse and stop
        witness = witness_conn.recv()
        loads["stop latency"] = machine.between(a, machine.sample())
        phase_a = (a[0], time.monotonic())
        if opts.ab:
            toggling.set()
            toggler.join()

        # 2. heartbeats/s, as fast as the clients can send them
        print("heartbeats/s ...", flush=True)
        sustained = hammer_all("daemon", opts.seconds, "heartbeats/s")

        # 3b. heartbeats against the floor, interleaved in short slots so that other load weighs on both alike
        print("heartbeats/s against the floor, interleaved ...", flush=True)
        slot = min(0.25, opts.window / 4)
        slots = 2 * max(1, round(opts.seconds / slot))
        begin = time.monotonic() + 0.2
        for conn in hb_conns:
            conn.send(("alternate", begin, slot, slots, opts.threads))
        arms = [default_switch, opts.ab] if opts.ab else [sys.getswitchinterval()]
        if opts.ab:  # the switch interval alternates with every pair of slots (one heartbeat slot, one echo slot)

            def toggle_slots() -> None:
                for pair in range(slots // 2):
                    time.sleep(max(0.0, begin + pair * 2 * slot - time.monotonic()))
                    sys.setswitchinterval(arms[pair % 2])
                time.sleep(max(0.0, begin + slots * slot - time.monotonic()))
                sys.setswitchinterval(default_switch)

            toggler = threading.Thread(target=toggle_slots, name="ab-toggle", daemon=True)
            toggler.start()
        time.sleep(max(0.0, begin - time.monotonic()))
        a = machine.sample()
        mixed = [conn.recv() for conn in hb_conns]
        loads["interleaved"] = machine.between(a, machine.sample())
        if opts.ab:
            toggler.join()
        per_slot = [sum(r[0][s] for r in mixed) for s in range(slots)]
        interleaved_failed = sum(r[1] for r in mixed)
        time.sleep(0.3)
        for conn in hb_conns:
            conn.send(("close",))
        client_stats = [conn.recv() for conn in hb_conns]
        for conn in hb_conns:
            conn.send(("exit",))

        # what a full garbage collection costs in this process (the daemon's, with gRPC loaded), and after gc.freeze()
        tracked = len(gc.get_objects())
        full_gc = [_timed(gc.collect) for _ in range(5)]
        gc.freeze()
        frozen_gc = [_timed(gc.collect) for _ in range(5)]
        gc.unfreeze()
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        echo.stop(grace=None)
        daemon.shutdown()

    # --- analysis ---------------------------------------------------------------------------------------------
    events_by_pin: dict[int, list[tuple[float, int, float, str, str]]] = {}
    for event in sorted(probe.pin_events):
        events_by_pin.setdefault(event[1], []).append(event)
    measured: list[Measured] = []
    early, never_expired, no_stop, lane_errors, wrong_deadline = 0, 0, 0, 0, 0
    for record in records:
        if record.error or not record.session_id:
            lane_errors += 1
            continue
        expiry = probe.expiries.get(record.session_id)
        if expiry is None:
            never_expired += 1
            continue
        if not record.sent - 0.001 <= expiry.deadline - opts.window <= record.answered + 0.001:
            wrong_deadline += 1  # the deadline is not one window after this session's SetPower
        pin_events = events_by_pin.get(pwm_pin[record.motor], [])
        on = next((e for e in pin_events if e[3] == "command" and e[4] == record.session_id and e[2] > 0), None)
        if on is not None:  # any duty 0 on this motor between its SetPower and the deadline is an early stop
            first_off = next((e for e in pin_events if e[0] >= on[0] and e[2] == 0), None)
            if first_off is not None and first_off[0] < expiry.deadline:
                early += 1
        off = next((e for e in pin_events if e[3] == "stop" and e[4] == record.session_id and e[2] == 0), None)
        if off is None:
            no_stop += 1
            continue
        began, returned = probe.stops.get((record.session_id, record.motor), (math.nan, math.nan))
        waited, relocked = expiry.wait_returned
        if not expiry.deadline <= waited <= expiry.woke:  # the loop did not wait for this one: it was busy
            waited = relocked = math.nan
        measured.append(Measured(
            latency=off[0] - expiry.deadline,
            returned=waited - expiry.deadline,
            relocked=relocked - waited,
            woke=expiry.woke - expiry.deadline,
            dispatch=expiry.dispatched - expiry.woke,
            thread=math.nan if expiry.inline else began - expiry.dispatched,
            pin=off[0] - (expiry.dispatched if expiry.inline else began),
            rest=returned - off[0],
            inline=expiry.inline,
            switch_interval=expiry.switch_interval,
            batch=expiry.batch,
            deadline=expiry.deadline,
        ))
    latency = [m.latency for m in measured]
    phase_gc = [(b, e, g) for b, e, g in probe.gc if phase_a[0] <= b <= phase_a[1]]
    for m in measured:
        m.gc = sum(min(e, m.deadline + m.latency) - max(b, m.deadline) for b, e, _ in phase_gc
                   if b < m.deadline + m.latency and e > m.deadline) * 1000
    false_server = sum(1 for sid in hb_ids if sid in probe.expiries)
    false_client = sum(s["expired"] for s in client_stats)
    max_gap = max((s["max_gap"] for s in client_stats), default=0.0)
    batches = Counter(e.batch for e in probe.expiries.values())

    def load_text(phase: str) -> str:
        share = loads[phase]
        if share.others > 0.10 or share.steal > 0.05:
            notes.append(f"other processes used {share.others:.0%} of the machine (hypervisor steal "
                         f"{share.steal:.0%}) during '{phase}': its figures are disturbed")
        return (f"machine {share.busy:.0%} busy (this benchmark {share.ours:.0%}, other processes {share.others:.0%}"
                + (f", steal {share.steal:.0%}" if share.steal >= 0.005 else "") + ")")

    experiment = []
    if opts.switch_interval is not None:
        experiment.append(f"switch interval {opts.switch_interval * 1000:g} ms for the whole run")
    if opts.inline_cut:
        experiment.append("inline cut on every expiry")
    if opts.nice is not None:
        experiment.append(f"nice {opts.nice} for the daemon's threads")
    if opts.rt is not None:
        experiment.append(f"SCHED_FIFO {opts.rt} for the deadline thread and the stop threads")
    if opts.ab:
        experiment.append(f"A/B in 1.: switch interval {default_switch * 1000:g} / {opts.ab * 1000:g} ms alternating "
                          "every 0.5 s x thread pool / inline cut on every other expiry")
    out = ["", "=" * 110, *lines,
           f"setup:   {MOTORS} motors (dir+pwm) on mock PWM pins; heartbeat window {opts.window * 1000:g} ms; "
           f"{opts.sessions} sessions in {opts.heartbeat_procs} client processes, each heartbeated every "
           f"{opts.window / 5 * 1000:g} ms; {MOTORS} expiry lanes in {opts.lane_procs} processes",
           f"         daemon in this process (probes on its session manager and pins), gRPC ThreadPoolExecutor"
           f"({SERVER_WORKERS}); GIL switch interval {default_switch * 1000:g} ms",
           "         " + ("EXPERIMENT: " + "; ".join(experiment) if experiment else "daemon as shipped"),
           "-" * 110]

    n = len(measured)
    out.append(f"1. stop latency, deadline -> PWM duty 0 at the mock pin: {n} expiries; "
               + load_text("stop latency"))
    if n:
        out.append(f"   p50 {ms(pct(latency, 0.5))} ms   p99 {ms(pct(latency, 0.99))} ms   max {ms(max(latency))} ms"
                   f"   (min {ms(min(latency))}, mean {ms(sum(latency) / n)})   target p99 <= {TARGET_P99_MS:g} ms, "
                   f"max <= {TARGET_MAX_MS:g} ms")
    out.append(f"   stops before the deadline: {early} (target 0)   expiries without a duty-0 write: {no_stop}   "
               f"lane sessions that never expired: {never_expired}   lane RPC errors: {lane_errors}   "
               f"deadline != SetPower + window: {wrong_deadline}")
    out.append(f"   sessions expired per deadline-loop pass: {dict(sorted(batches.items()))}")
    pauses = [e - b for b, e, _ in phase_gc]
    hit = [m for m in measured if m.gc > 0]
    out.append(f"   garbage collections in the daemon's process meanwhile: {len(pauses)} ("
               f"{Counter(g for _, _, g in phase_gc).get(2, 0)} full), pause p50 {ms(pct(pauses, 0.5))} / max "
               f"{ms(max(pauses, default=0.0))} ms; expiries with a collection inside deadline -> duty 0: {len(hit)}"
               + (f" (their latency max {ms(max(m.latency for m in hit))} ms)" if hit else ""))
    out.append(f"   a full collection in this process ({tracked} tracked objects) holds the GIL for "
               f"{ms(pct(full_gc, 0.5))} ms (median of 5, max {ms(max(full_gc))}); after gc.freeze(): "
               f"{ms(pct(frozen_gc, 0.5))} ms")
    out.append(f"   {'stage (ms)':<46}{'p50':>9}{'p99':>9}{'max':>9}")
    out.append(f"   {'(witness: same wait in its own process)':<46}{_spread(witness)}   n={len(witness)}, same moments")
    for key, label, inline in STAGES:
        values = [v for m in measured if inline is None or m.inline == inline if not math.isnan(v := getattr(m, key))]
        if values:
            out.append(f"   {label:<46}{_spread(values)}")
    worst = sorted(measured, key=lambda m: -m.latency)[:3]
    out.append("   worst: " + " | ".join(
        f"{ms(m.latency)} = woke {ms(m.woke)} (wait returned {ms(m.returned)}) + dispatch {ms(m.dispatch)} + "
        + (f"pin {ms(m.pin)} (inline)" if m.inline else f"thread {ms(m.thread)} + pin {ms(m.pin)}")
        + (f" [gc {m.gc:.3f} inside]" if m.gc else "") for m in worst))
    if opts.ab:
        out.append(f"   A/B arms (ms){'':<33}{'n':>5}{'p50':>9}{'p99':>9}{'max':>9}{'p90':>9}{'>1ms':>6}{'>2ms':>6}"
                   f"   {'woke p99/max':>15}")
        for switch in (default_switch, opts.ab):
            for inline in (False, True):
                arm = [m for m in measured if m.inline == inline and m.switch_interval == switch]
                if arm:
                    woke = [m.woke for m in arm]
                    lat = [m.latency for m in arm]
                    label = f"switch {switch * 1000:g} ms, {'inline cut' if inline else 'thread pool'}"
                    out.append(f"   {label:<46}{len(arm):>5}{_spread(lat)}{ms(pct(lat, 0.9)):>9}"
                               f"{sum(v > 0.001 for v in lat):>6}{sum(v > 0.002 for v in lat):>6}   "
                               f"{ms(pct(woke, 0.99)):>7}/{ms(max(woke))}")
    if not n:
        missed.append("stop latency: no expiry measured")
    else:
        if pct(latency, 0.99) > TARGET_P99_MS / 1000:
            missed.append(f"stop latency p99 {ms(pct(latency, 0.99))} ms > {TARGET_P99_MS:g} ms")
        if max(latency) > TARGET_MAX_MS / 1000:
            missed.append(f"stop latency max {ms(max(latency))} ms > {TARGET_MAX_MS:g} ms")
        if n < 200:
            missed.append(f"only {n} expiries measured (< 200)")
    if early:
        missed.append(f"{early} stops before the deadline (must be 0)")
    if no_stop or never_expired or lane_errors or wrong_deadline:
        missed.append("stop latency: some lane sessions were not measured cleanly (see the counts above)")

    rate = sustained[0] / sustained[2]
    floor = floor_before[0] / floor_before[2]
    mixed_rates: list[tuple[float, float, float]] = []  # (switch interval, echo/s, heartbeats/s)
    for which, interval in enumerate(arms):
        pairs = [p for p in range(slots // 2) if p % len(arms) == which]
        span = len(pairs) * slot
        mixed_rates.append((interval, sum(per_slot[2 * p + 1] for p in pairs) / span,
                            sum(per_slot[2 * p] for p in pairs) / span))
    _, echo_mixed, hb_mixed = mixed_rates[0]
    share = hb_mixed / echo_mixed if echo_mixed else 0.0
    out += ["-" * 110,
            f"2. heartbeats sustained: {rate:,.0f}/s ({sustained[0]} in {sustained[2]:g} s, {sustained[1]} failed) "
            f"to {opts.sessions} sessions from {opts.heartbeat_procs} processes x {opts.threads} threads; "
            + load_text("heartbeats/s"),
            f"   false expiries: {false_server} in the daemon's session manager (whole run), {false_client} "
            f"SESSION_EXPIRED answers to heartbeats; longest gap between one session's heartbeats {ms(max_gap)} ms "
            f"(window {opts.window * 1000:g} ms); other client errors {sum(s['errors'] for s in client_stats)}",
            f"3. floor, trivial grpcio echo (same server model, clients and request bytes): {floor:,.0f} calls/s "
            f"over {floor_before[2]:g} s before the stop-latency phase; " + load_text("floor, before"),
            f"   interleaved, {slot * 1000:g} ms slots, {slots // 2 * slot:g} s each: echo {echo_mixed:,.0f}/s, "
            f"heartbeats {hb_mixed:,.0f}/s ({interleaved_failed} failed)"
            + (f" at switch interval {default_switch * 1000:g} ms" if opts.ab else "") + "; "
            + load_text("interleaved"),
            *[f"   A/B at switch interval {interval * 1000:g} ms: echo {echo:,.0f}/s, heartbeats {hb:,.0f}/s = "
              f"{hb / echo if echo else 0:.0%} of the echo" for interval, echo, hb in mixed_rates[1:]],
            f"   heartbeats/s = {share:.0%} of the floor, interleaved (target >= {TARGET_FLOOR_SHARE:.0%}); "
            f"sustained run / floor run: {rate / floor:.0%}"]
    if false_server or false_client:
        missed.append(f"false expiries: {false_server} in the daemon, {false_client} seen by clients (must be 0)")
    if share < TARGET_FLOOR_SHARE:
        missed.append(f"heartbeats/s at {share:.0%} of the floor (interleaved) < {TARGET_FLOOR_SHARE:.0%}")

    out.append("-" * 110)
    if idle.error:
        out.append(f"4. idle cost: not measured: {idle.error}")
    else:
        out.append(f"4. idle `rover-safety serve --simulate`, no clients, {idle.seconds:.2f} s: "
                   f"CPU {idle.cpu * 1000:.2f} ms ({idle.cpu / idle.seconds * 1000:.2f} ms/s; /proc stat ticks say "
                   f"{idle.cpu_ticks * 1000:.0f} ms), context switches {idle.voluntary} voluntary "
                   f"({idle.voluntary / idle.seconds:.1f}/s) + {idle.involuntary} involuntary, {idle.threads} "
                   f"threads; machine {idle_load.busy:.0%} busy")
        out.append("   wake-ups by thread name: " + "; ".join(
            f"{name} x{count}: {wakes} ({wakes / idle.seconds:.1f}/s, {cpu * 1000:.2f} ms CPU)"
            for name, count, wakes, cpu in idle.by_thread if wakes))
    out.append("-" * 110)
    out += [f"NOTE: {text}" for text in notes]
    out += [f"MISSED TARGET: {text}" for text in missed]
    if not missed:
        out.append("all targets met")
    out.append(f"run took {time.monotonic() - started:.1f} s")
    print("\n".join(out), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stop latency, heartbeat throughput and idle cost of rover-safety.")
    p.add_argument("--window", type=float, default=1.0, help="heartbeat window, seconds (default 1.0)")
    p.add_argument("--expiries", type=int, default=210, help="expiries to measure, at least (default 210)")
    p.add_argument("--sessions", type=int, default=100, help="heartbeating sessions (default 100)")
    p.add_argument("--heartbeat-procs", type=int, default=4, help="heartbeat client processes (default 4)")
    p.add_argument("--lane-procs", type=int, default=2, help="expiry client processes (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads per heartbeat process when hammering (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each throughput measurement (default 5)")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle measurement (default 5)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="EXPERIMENT: sys.setswitchinterval() in the daemon's process for the whole run, seconds")
    p.add_argument("--inline-cut", action="store_true",
                   help="EXPERIMENT: cut() an expired session's motors in the deadline thread, before the hand-off")
    p.add_argument("--ab", type=float, default=None, metavar="SWITCH_INTERVAL",
                   help="EXPERIMENT: in the stop-latency phase, alternate the switch interval between the default "
                   "and this every 0.5 s, and inline-cut every other expiry; report each of the 4 arms")
    p.add_argument("--rt", type=int, default=None, metavar="PRIORITY",
                   help="EXPERIMENT: SCHED_FIFO at this priority for the deadline thread and the stop threads "
                   "(needs CAP_SYS_NICE)")
    p.add_argument("--nice", type=int, default=None,
                   help="EXPERIMENT: this nice value for the daemon's threads (the systemd unit has Nice=-10)")
    a = p.parse_args(argv)
    return run(Options(a.window, a.expiries, a.sessions, a.heartbeat_procs, a.lane_procs, a.threads, a.seconds,
                       a.idle_seconds, a.switch_interval, a.inline_cut, a.ab, a.rt, a.nice))


if __name__ == "__main__":
    sys.exit(main())
