"""How fast rover-safety cuts a motor's power when a session lapses, and what heartbeats cost; run `make bench`.

    python benchmarks/bench_stop.py [--window 1.0] [--expiries 210] [--seconds 5] [--idle-seconds 5]

One run (about 45 s) measures, on this machine:

1. stop latency: a real Daemon in this process on gpiozero mock PWM pins (14 motors, dir+pwm, BCM 0..27). 100
   sessions heartbeat every window/5 over gRPC from 4 client processes, while 14 "lanes" in 2 more processes each
   start a session, SetPower a motor with viam-sid metadata and go silent, over and over. Each latency is the mock
   pin's own change time (`pin._last_change`, stamped as the pin records the PinState change) of the PWM duty going
   to 0, minus the deadline the SessionManager expired the session under. By stage: deadline -> the deadline thread's
   wait returned -> session expired -> duty 0 written by its cut_power(); and, for information, -> the full stop() on
   a stop thread finished (the manager's own StopReport.latency). Two witness processes make the same kind of timed
   wait at the same moments, one at normal priority and one SCHED_FIFO like the deadline thread: what the loaded
   machine costs any timer, as against what is lost inside the daemon's process (the GIL).
2. heartbeats/s against the floor: the same clients send SendSessionHeartbeat to their 100 sessions, and the same
   request bytes to a trivial echo service in this process, as fast as they can, in alternating 250 ms slots for
   2 x 5 s, so that whatever else runs on the machine weighs on both alike. The echo is served the way the daemon
   serves (a grpc.aio server on an event-loop thread of its own, set up like the daemon's, no serializers): the
   daemon answers heartbeats on its loop and runs motion commands on its command threads, so the floor is what that
   model costs with no work behind it. False expiries (sessions that expired although their
   client kept heartbeating) are counted over the whole run by the daemon's session manager and by the clients.
3. idle cost of `rover-safety serve --simulate` in its own process: CPU time and context switches over 5 s.

Every phase reports how busy the machine was, and how much of that was other processes. The script exits 0 whatever
it measures (a measurement, not a gate) and prints "MISSED TARGET: ..." for each figure off its target.
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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import grpc
from rover_safety.api import motor_pb2, robot_pb2, safety_pb2
from rover_safety.sessions import SessionManager, StopReport, from_context

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_stop.py` as well as `python -m benchmarks.bench_stop`
    sys.path.insert(0, str(ROOT))

from benchmarks.stats import pct  # noqa: E402

if TYPE_CHECKING:  # the client processes import this module: they need none of the daemon
    from rover_safety.daemon.app import Daemon
    from rover_safety.daemon.serving import EventLoopThread

START_SESSION = "/viam.robot.v1.RobotService/StartSession"
HEARTBEAT = "/viam.robot.v1.RobotService/SendSessionHeartbeat"
SET_POWER = "/viam.component.motor.v1.MotorService/SetPower"
CLOSE_SESSION = "/rover_safety.v1.SafetyService/CloseSession"
ECHO_SERVICE = "bench.Echo"
ECHO = f"/{ECHO_SERVICE}/Call"
MOTORS = 14  # dir+pwm: two pins each, BCM 0..27
POWER = 0.6

TARGET_P99_MS = 2.0
TARGET_MAX_MS = 5.0
TARGET_FLOOR_SHARE = 0.80

Call = Callable[..., Any]


def _raw(channel: grpc.Channel, method: str) -> Call:
    """A unary call that sends and receives bytes as they are (no serializers: the same cost for every service)."""
    return channel.unary_unary(method, None, None)


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
            self.last[i] = max(self.last[i], sent)

    def failed(self, exc: grpc.RpcError) -> None:
        details = exc.details() if isinstance(exc, grpc.Call) else ""
        with self._lock:
            if "SESSION_EXPIRED" in (details or ""):
                self.expired += 1
            else:
                self.errors += 1


class Pacer(threading.Thread):
    """Heartbeats every session like Viam's SDKs: send, wait for the answer, sleep window/5, again."""

    def __init__(self, call: Call, requests: list[bytes], interval: float, track: Track) -> None:
        super().__init__(name="pacer", daemon=True)
        self.call, self.requests, self.interval, self.track = call, requests, interval, track
        self.halt = threading.Event()
        self.paused = threading.Event()  # while the client hammers (and so heartbeats) the daemon itself
        self.sent = 0

    def run(self) -> None:
        now = time.monotonic()
        n = len(self.requests)
        due = [(now + self.interval * (i + 1) / n, i) for i in range(n)]  # staggered over one interval
        heapq.heapify(due)
        while not self.halt.is_set():
            at, i = due[0]
            if (delay := at - time.monotonic()) > 0 and self.halt.wait(delay):
                break
            if not self.paused.is_set():
                sent = time.monotonic()
                try:
                    self.call(self.requests[i], timeout=5.0)
                    self.track.ok(i, sent)
                    self.sent += 1
                except grpc.RpcError as exc:
                    self.track.failed(exc)
            heapq.heapreplace(due, (time.monotonic() + self.interval, i))


def closed_loop(calls: Sequence[tuple[Call, bool]], requests: list[bytes], start: float, slot: float, slots: int,
                threads: int, track: Track) -> tuple[list[int], int]:
    """Closed-loop calls from `threads` threads in `slots` time slots from `start`, shared by every client process:
    slot s goes to calls[s % len(calls)], a call and whether it is a heartbeat. Only calls that end in their own slot
    count. Returns the calls counted in each slot, and the failures."""
    counts = [[0] * slots for _ in range(threads)]
    failures = [0] * threads

    def run(k: int) -> None:
        i = k
        time.sleep(max(0.0, start - time.monotonic()))
        while (current := int((time.monotonic() - start) // slot)) < slots:
            call, is_heartbeat = calls[current % len(calls)]
            j = i % len(requests)
            sent = time.monotonic()
            try:
                call(requests[j], timeout=5.0)
            except grpc.RpcError as exc:
                failures[k] += 1
                if is_heartbeat:
                    track.failed(exc)
            else:
                if int((time.monotonic() - start) // slot) == current:
                    counts[k][current] += 1
                if is_heartbeat:
                    track.ok(j, sent)
            i += threads

    workers = [threading.Thread(target=run, args=(k,), name=f"caller-{k}") for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [sum(c[s] for c in counts) for s in range(slots)], sum(failures)


def heartbeat_client(daemon_addr: str, echo_addr: str, sessions: int, window: float, conn: Connection) -> None:
    """One heartbeat process: owns `sessions` sessions; paces them, or calls the daemon and the echo in slots."""
    daemon = grpc.insecure_channel(daemon_addr)
    echo = grpc.insecure_channel(echo_addr)
    heartbeat, echo_call = _raw(daemon, HEARTBEAT), _raw(echo, ECHO)
    track = Track(sessions)
    ids: list[str] = []
    requests = [robot_pb2.SendSessionHeartbeatRequest(id=f"{k:036d}").SerializeToString() for k in range(sessions)]
    pacer: Pacer | None = None
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "start":
            start_session = _raw(daemon, START_SESSION)
            for _ in range(sessions):
                ids.append(robot_pb2.StartSessionResponse.FromString(
                    start_session(robot_pb2.StartSessionRequest().SerializeToString(), timeout=5.0)).id)
            requests = [robot_pb2.SendSessionHeartbeatRequest(id=s).SerializeToString() for s in ids]
            pacer = Pacer(heartbeat, requests, window / 5, track)
            pacer.start()
            conn.send(ids)
        elif command == "run":  # targets: "daemon" (heartbeats) or "echo", one per slot in turn
            targets, begin, slot, slots, threads = args
            calls = [(heartbeat, True) if t == "daemon" else (echo_call, False) for t in targets]
            if pacer is not None:
                pacer.paused.set()
            conn.send(closed_loop(calls, requests, begin, slot, slots, threads, track))
            if pacer is not None:
                pacer.paused.clear()
        elif command == "close":
            if pacer is not None:
                pacer.halt.set()
                pacer.join()
            close_session = _raw(daemon, CLOSE_SESSION)
            for session_id in ids:
                try:
                    close_session(safety_pb2.CloseSessionRequest(id=session_id).SerializeToString(), timeout=5.0)
                except grpc.RpcError:
                    track.errors += 1
            conn.send({"max_gap": track.max_gap, "expired": track.expired, "errors": track.errors})
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


def timer_witness(realtime: bool, conn: Connection) -> None:
    """The deadline thread's kind of wait (a timed Condition.wait to a monotonic deadline) in a process of its own,
    at normal priority or SCHED_FIFO like the deadline thread. It runs during the stop-latency phase, so its lateness
    is what the OS and the loaded machine cost a timer at the same moments."""
    from rover_safety.daemon.realtime import REALTIME_PRIORITY

    if realtime:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    _, end = conn.recv()
    lateness = timer_lateness(end, seed=7 + realtime)
    conn.send((_policy(0), lateness))


def timer_lateness(end: float, seed: int) -> list[float]:
    """How late each timed Condition.wait to a random deadline 20-80 ms ahead returned, until monotonic `end`."""
    lateness: list[float] = []
    rng = random.Random(seed)
    condition = threading.Condition()
    with condition:
        while time.monotonic() < end:
            deadline = time.monotonic() + rng.uniform(0.02, 0.08)
            while (now := time.monotonic()) < deadline:
                condition.wait(deadline - now)
            lateness.append(now - deadline)
    return lateness


# --- the daemon side: probes on the session manager and on the pins ------------------------------------------------


class TimedCondition(threading.Condition):
    """The session manager's condition variable, noting when a wait returned (before the table lock is re-taken)."""

    returned = math.nan

    def _acquire_restore(self, state: Any) -> None:
        self.returned = time.monotonic()  # the timed wait is over and this thread runs Python again: it holds the GIL
        base: Any = super()  # Condition._acquire_restore is CPython's, unknown to typeshed
        base._acquire_restore(state)


@dataclass
class Expiry:
    report: StopReport  # the deadline, and off_at once its stop thread's stop() has returned
    woke: float  # the deadline loop's clock reading in the pass that expired it
    wait_returned: float  # when the last wait of the deadline loop before that pass returned
    batch: int  # how many sessions that pass expired


@dataclass(frozen=True)
class PinEvent:
    at: float  # the mock pin's own change time
    bcm: int
    value: float
    writer: str  # "deadline thread", "stop thread", "command" (a gRPC call in a session), else the thread's name
    session_id: str = ""  # the session of a command


class Probe:
    """Timestamps the stop path of the in-process daemon, without changing what it does."""

    def __init__(self) -> None:
        self.pins: dict[int, Any] = {}
        self.events: list[PinEvent] = []
        self.expiries: dict[str, Expiry] = {}
        self.gc: list[tuple[float, float, int]] = []  # the cyclic garbage collector's pauses: start, end, generation
        self._gc_began = 0.0
        self._deadline_thread: threading.Thread | None = None

    def on_pin_change(self, bcm: int, value: float) -> None:
        pin = self.pins.get(bcm)
        at = float(pin._last_change) if pin is not None else time.monotonic()
        thread = threading.current_thread()
        session = from_context()
        if thread is self._deadline_thread:
            writer = "deadline thread"
        elif thread.name.startswith("stop_"):  # the manager's pool of stop threads
            writer = "stop thread"
        else:
            writer = "command" if session is not None else thread.name
        self.events.append(PinEvent(at, bcm, value, writer, session.id if session is not None else ""))

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.monotonic()
        else:
            self.gc.append((self._gc_began, time.monotonic(), info["generation"]))

    def install(self, manager: SessionManager) -> None:
        gc.callbacks.append(self.on_gc)
        self._deadline_thread = manager._thread
        collect_due = manager._collect_due
        condition = TimedCondition(manager._lock)
        with manager._lock:  # swap the condition under the loop's feet, then wake it from the old one
            old, manager._wake = manager._wake, condition
            old.notify_all()

        def collect_due_probe(now: float) -> list[StopReport]:
            reports = collect_due(now)
            for report in reports:
                self.expiries[report.session.id] = Expiry(report, now, condition.returned, len(reports))
            return reports

        mock.patch.object(manager, "_collect_due", collect_due_probe).start()  # on this instance, for good


def _policy(tid: int | None) -> str:
    """A thread's scheduling policy and priority, e.g. "SCHED_FIFO 10"; 0 is the calling thread."""
    try:
        if tid is None:
            raise ProcessLookupError
        policy, priority = os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority
    except OSError:
        return "not running"
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    return f"{names.get(policy, policy)} {priority}"


def _config_text(window: float) -> str:
    # Phase 2 measures how many heartbeats the daemon can answer, so its clients (one host) may send more than a
    # client's call rate (network.limits.calls_per_second_per_owner) allows.
    lines = ["network:", '  bind_address: "127.0.0.1:0"', "  limits: {calls_per_second_per_owner: 1000000}",
             "  sessions:",
             f"    heartbeat_window: {round(window * 1000)}ms", "gpio:", "  pin_factory: mock", "components:"]
    for k in range(MOTORS):
        lines += [f"  - name: m{k:02d}", "    type: motor", "    model: gpio",
                  f"    attributes: {{pins: {{pwm: {2 * k}, dir: {2 * k + 1}}}, pwm_freq: 800}}"]
    return "\n".join(lines) + "\n"


class EchoFloor:
    """A trivial echo service (bytes in, nothing out) served as the daemon serves: a grpc.aio server on an event-loop
    thread of its own, set up by the daemon's own EventLoopThread and serving_thread."""

    def __init__(self) -> None:
        from rover_safety.daemon.realtime import serving_thread
        from rover_safety.daemon.serving import EventLoopThread

        self._loop: EventLoopThread = EventLoopThread("echo", setup=serving_thread)
        self._server, self.port = self._loop.call(self._start(), timeout=10)

    @staticmethod
    async def _start() -> tuple[grpc.aio.Server, int]:
        async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return b""

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(call, None, None)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Call": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.call(self._server.stop(None), timeout=5)
        self._loop.stop()


# --- idle cost ---------------------------------------------------------------------------------------------------


@dataclass
class Idle:
    seconds: float
    cpu: float = 0.0  # CPU seconds over `seconds`, all threads
    switches: tuple[int, int] = (0, 0)  # voluntary, involuntary
    threads: int = 0
    by_thread: list[tuple[str, int, int, float]] = field(default_factory=list)  # name, count, wake-ups, CPU s
    error: str = ""


def _tasks(pid: int) -> dict[int, tuple[str, int, int, int]]:
    """tid -> (name, CPU ns, voluntary, involuntary context switches)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
            out[int(task.name)] = ((task / "comm").read_text().strip(),
                                   int((task / "schedstat").read_text().split()[0]),
                                   int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError, ValueError):
            continue
    return out


def measure_idle(config: Path, seconds: float) -> Idle:
    exe = Path(sys.executable).with_name("rover-safety")
    command = str(exe) if exe.exists() else shutil.which("rover-safety")
    if command is None:
        return Idle(seconds, error="rover-safety console script not found")
    proc = subprocess.Popen([command, "serve", "--config", str(config), "--simulate"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "listening" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20):
            return Idle(seconds, error=f"the daemon did not start (exit code {proc.poll()})")
        time.sleep(1.0)  # let start-up settle
        before, t0 = _tasks(proc.pid), time.monotonic()
        time.sleep(seconds)
        after, t1 = _tasks(proc.pid), time.monotonic()
        groups: dict[str, list[float]] = {}
        cpu, vol, invol = 0, 0, 0
        for tid, (name, runtime, v, nv) in after.items():
            _, runtime0, v0, nv0 = before.get(tid, (name, 0, 0, 0))
            cpu += runtime - runtime0
            vol += v - v0
            invol += nv - nv0
            group = groups.setdefault(name, [0, 0, 0.0])
            group[0] += 1
            group[1] += v - v0 + nv - nv0
            group[2] += (runtime - runtime0) / 1e9
        by_thread = sorted(((n, int(g[0]), int(g[1]), g[2]) for n, g in groups.items()), key=lambda r: -r[2])
        return Idle(t1 - t0, cpu / 1e9, (vol, invol), len(after), by_thread)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the machine's load ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """Shares of all CPUs over a phase."""

    busy: float
    ours: float  # this benchmark's processes
    others: float  # everything else on the machine
    steal: float  # taken by the hypervisor from this VM

    def text(self) -> str:
        return (f"machine {self.busy:.0%} busy (this benchmark {self.ours:.0%}, other processes {self.others:.0%}"
                + (f", steal {self.steal:.0%}" if self.steal >= 0.005 else "") + ")")


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
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])  # utime, stime
        return time.monotonic(), user + nice + system + irq + softirq, steal, ours

    def between(self, a: tuple[float, int, int, int], b: tuple[float, int, int, int]) -> Share:
        scale = self.hz * (b[0] - a[0]) * self.cpus
        total, ours = (b[1] - a[1]) / scale, (b[3] - a[3]) / scale
        return Share(total, ours, max(0.0, total - ours), (b[2] - a[2]) / scale)


def _machine() -> list[str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return [
        f"machine: nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {model}, "
        f"load average {Path('/proc/loadavg').read_text().split(' ', 1)[0]} at the start",
        f"system:  {platform.platform()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}, grpcio {grpc.__version__}",
    ]


# --- the run: set-up, three phases, their analysis, the report ---------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _spread(values: Sequence[float]) -> str:
    return f"{len(values):>5}{ms(pct(values, 0.5)):>9}{ms(pct(values, 0.99)):>9}{ms(max(values)):>9}"


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


@dataclass(frozen=True)
class SlotCounts:
    """One closed-loop run of the heartbeat clients in time slots: calls counted per slot, failures, the load."""

    per_slot: list[int]
    failed: int
    load: Share


class Bench:
    """The set-up: the daemon as shipped in this process (its operator log to a file, probes on its session manager
    and pins), the echo floor, and the client processes (heartbeat clients, expiry lanes, timer witnesses), started
    and ready. Used as a context manager: everything is stopped at the end, whatever happened."""

    def __init__(self, opts: Options, config_path: Path, machine: Load) -> None:
        self.opts, self.config_path, self.machine = opts, config_path, machine
        self.cycles = math.ceil(opts.expiries / MOTORS)  # expiries per lane
        self.probe = Probe()
        self.pwm_pin: dict[str, int] = {}  # motor -> its PWM pin
        self.procs: list[BaseProcess] = []
        self.heartbeats: list[Connection] = []
        self.lanes: list[Connection] = []
        self.witnesses: list[Connection] = []
        self._daemon: Daemon | None = None
        self._echo: EchoFloor | None = None

    @property
    def daemon(self) -> Daemon:
        assert self._daemon is not None, "the bench has not started"
        return self._daemon

    def __enter__(self) -> Bench:
        try:
            self._start_daemon()
            self._echo = EchoFloor()
            self._start_clients(f"127.0.0.1:{self.daemon.port}", f"127.0.0.1:{self._echo.port}")
            self.slots(["echo"], 0.5, 1)  # warm up the echo channels (the daemon's are warmed by the sessions' start)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_daemon(self) -> None:
        from rover_safety.config import load
        from rover_safety.daemon.app import Daemon

        log = logging.getLogger("rover-safety")  # its operator log to a file: as costly as a terminal, and quiet
        handler = logging.FileHandler(self.config_path.parent / "daemon.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False
        self._daemon = Daemon(load(self.config_path), config_path=str(self.config_path),
                              on_pin_change=self.probe.on_pin_change)
        self._daemon.start()
        assert self._daemon.rig is not None
        for motor in self._daemon.rig.motors.values():
            for output in motor._outputs:
                self.probe.pins[output.bcm] = output.device.pin
                if output.pwm:
                    self.pwm_pin[motor.name] = output.bcm
        self.probe.install(self._daemon.sessions)

    def _start_clients(self, daemon_addr: str, echo_addr: str) -> None:
        opts = self.opts
        ctx = mp.get_context("spawn")

        def spawn(target: Callable[..., None], name: str, *args: Any) -> Connection:
            here, there = ctx.Pipe()
            self.procs.append(ctx.Process(target=target, args=(*args, there), name=name, daemon=True))
            return here

        per_proc = [opts.sessions // opts.heartbeat_procs + (k < opts.sessions % opts.heartbeat_procs)
                    for k in range(opts.heartbeat_procs)]
        for k in range(opts.heartbeat_procs):
            self.heartbeats.append(spawn(heartbeat_client, f"heartbeat-{k}", daemon_addr, echo_addr, per_proc[k],
                                         opts.window))
        motors = [f"m{k:02d}" for k in range(MOTORS)]
        for k in range(opts.lane_procs):
            lanes = [(m, i / MOTORS * opts.window) for i, m in enumerate(motors) if i % opts.lane_procs == k]
            self.lanes.append(spawn(expiry_client, f"lanes-{k}", daemon_addr, lanes, self.cycles, opts.window, k))
        for realtime in (False, True):
            self.witnesses.append(spawn(timer_witness, f"witness-{realtime}", realtime))
        for proc in self.procs:
            proc.start()
            assert proc.pid is not None
            self.machine.pids.append(proc.pid)
        for conn in self.heartbeats + self.lanes:
            if not conn.poll(60):
                raise RuntimeError("a client process did not start")
            conn.recv()

    def slots(self, targets: list[str], slot: float, slots: int) -> SlotCounts:
        """Every heartbeat client calls `targets` in turn ("daemon": heartbeats, "echo": the floor), one per slot of
        `slot` s, for `slots` slots."""
        begin = time.monotonic() + 0.2
        for conn in self.heartbeats:
            conn.send(("run", targets, begin, slot, slots, self.opts.threads))
        time.sleep(max(0.0, begin - time.monotonic()))
        a = self.machine.sample()
        results = [conn.recv() for conn in self.heartbeats]
        load = self.machine.between(a, self.machine.sample())
        return SlotCounts([sum(r[0][s] for r in results) for s in range(slots)], sum(r[1] for r in results), load)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        if self._echo is not None:
            self._echo.stop()
        if self._daemon is not None:
            self._daemon.shutdown()


# --- phase 1: stop latency ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopLatencyRun:
    """What phase 1 collected: each lane session's SetPower, the witnesses' timer lateness, the heartbeated
    sessions (none may expire), the machine's load, when the phase ran, and how the stop path's threads ran."""

    records: list[LaneRecord]
    witnesses: list[tuple[str, list[float]]]  # (scheduling policy, lateness of each wait)
    heartbeat_ids: set[str]
    load: Share
    span: tuple[float, float]  # monotonic
    deadline_policy: str
    stop_threads: Counter[str]  # scheduling policy -> stop threads running it


def stop_latency_phase(bench: Bench) -> StopLatencyRun:
    """The heartbeat clients start their sessions and pace them at window/5; then each lane drives its motor in a new
    session and goes silent, cycle after cycle, while the witnesses time waits of their own."""
    opts, machine = bench.opts, bench.machine
    print(f"stop latency: {opts.sessions} heartbeating sessions, {bench.cycles * MOTORS} expiries ...", flush=True)
    heartbeat_ids: set[str] = set()
    for conn in bench.heartbeats:
        conn.send(("start",))
    for conn in bench.heartbeats:
        heartbeat_ids.update(conn.recv())
    time.sleep(2 * opts.window)  # every pacer in its rhythm
    begin = time.monotonic() + 0.2
    for conn in bench.lanes:
        conn.send(("run", begin))
    for conn in bench.witnesses:
        conn.send(("run", begin + bench.cycles * (opts.window + 0.3)))  # about as long as the lanes run
    a = machine.sample()
    records: list[LaneRecord] = []
    for conn in bench.lanes:
        records += conn.recv()
        conn.send(("exit",))
    time.sleep(opts.window + 0.5)  # the last sessions lapse and stop
    witnesses: list[tuple[str, list[float]]] = [conn.recv() for conn in bench.witnesses]
    load = machine.between(a, machine.sample())
    span = (a[0], time.monotonic())
    stop_threads = Counter(_policy(t.native_id) for t in threading.enumerate() if t.name.startswith("stop_"))
    deadline_policy = _policy(getattr(bench.daemon.sessions._thread, "native_id", None))
    return StopLatencyRun(records, witnesses, heartbeat_ids, load, span, deadline_policy, stop_threads)


@dataclass
class Measured:
    """One expiry, deadline to duty 0 at the pin, by stage (NaN where the loop did not wait for this deadline)."""

    latency: float  # deadline -> duty 0 at the pin
    returned: float  # deadline -> the deadline thread's wait returned
    expired: float  # wait returned -> the session expired (table lock re-taken, clock read)
    woke: float  # deadline -> the session expired
    cut: float  # the session expired -> duty 0 at the pin
    finished: float  # deadline -> the full stop() returned on a stop thread (StopReport.latency)
    deadline: float
    gc: float = 0.0  # milliseconds of garbage collection that overlapped deadline -> duty 0


STAGES = (
    ("returned", "deadline -> deadline thread's wait returned"),
    ("expired", "wait returned -> session expired (lock, clock)"),
    ("woke", "deadline -> session expired (every expiry)"),
    ("cut", "session expired -> duty 0 at the pin (cut)"),
    ("latency", "= deadline -> duty 0 at the pin"),
    ("finished", "deadline -> full stop() done on a stop thread"),
)


@dataclass
class Expiries:
    """Phase 1's lane sessions matched with what the probes saw: the measured expiries, and why others were not."""

    measured: list[Measured] = field(default_factory=list)
    writers: Counter[str] = field(default_factory=Counter)  # who wrote the duty 0
    early: int = 0  # stopped before the deadline
    never_expired: int = 0
    unmeasured: int = 0  # no SetPower then duty 0 on the pin
    lane_errors: int = 0
    wrong_deadline: int = 0  # measured, but the deadline is not one window after the SetPower
    gc: list[tuple[float, float, int]] = field(default_factory=list)  # the phase's collections: start, end, gen.
    batches: Counter[int] = field(default_factory=Counter)  # sessions expired per deadline-loop pass

    @property
    def latency(self) -> list[float]:
        return [m.latency for m in self.measured]

    def clean(self) -> bool:
        return not (self.unmeasured or self.never_expired or self.lane_errors or self.wrong_deadline)


def analyse_expiries(run: StopLatencyRun, probe: Probe, pwm_pin: dict[str, int], window: float) -> Expiries:
    """For each lane session: its expiry as the session manager reported it, and the first duty 0 on its motor's
    PWM pin after its own SetPower; latency is that pin's change time minus the deadline, split into stages."""
    by_pin: dict[int, list[PinEvent]] = {}
    for event in sorted(probe.events, key=lambda e: e.at):
        by_pin.setdefault(event.bcm, []).append(event)
    found = Expiries(gc=[(b, e, g) for b, e, g in probe.gc if run.span[0] <= b <= run.span[1]],
                     batches=Counter(e.batch for e in probe.expiries.values()))
    for record in run.records:
        if record.error or not record.session_id:
            found.lane_errors += 1
            continue
        expiry = probe.expiries.get(record.session_id)
        if expiry is None:
            found.never_expired += 1
            continue
        deadline = expiry.report.deadline
        if not record.sent - 0.001 <= deadline - window <= record.answered + 0.001:
            found.wrong_deadline += 1  # the deadline is not one window after this session's SetPower
        events = by_pin.get(pwm_pin[record.motor], [])
        on = next((e for e in events if e.writer == "command" and e.session_id == record.session_id and e.value), None)
        off = next((e for e in events if on is not None and e.at >= on.at and e.value == 0), None)
        if off is None:
            found.unmeasured += 1
            continue
        if off.at < deadline:  # any duty 0 on this motor between its SetPower and the deadline is an early stop
            found.early += 1
            continue
        found.writers[off.writer] += 1
        found.measured.append(_stages(expiry, off.at, deadline))
    for m in found.measured:
        m.gc = sum(min(e, m.deadline + m.latency) - max(b, m.deadline) for b, e, _ in found.gc
                   if b < m.deadline + m.latency and e > m.deadline) * 1000
    return found


def _stages(expiry: Expiry, off: float, deadline: float) -> Measured:
    waited = expiry.wait_returned
    if not deadline <= waited <= expiry.woke:  # the loop did not wait for this deadline: it was busy
        waited = math.nan
    finished = expiry.report.latency
    return Measured(
        latency=off - deadline,
        returned=waited - deadline,
        expired=expiry.woke - waited,
        woke=expiry.woke - deadline,
        cut=off - expiry.woke,
        finished=math.nan if finished is None else finished,
        deadline=deadline,
    )


# --- phase 2: heartbeats against the floor -----------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatRun:
    """Phase 2: heartbeats and echo calls in alternating slots, and the clients' own heartbeat bookkeeping."""

    slot: float
    slots: int
    counts: SlotCounts
    client_stats: list[dict[str, Any]]  # per client process: max_gap, expired, errors

    @property
    def span(self) -> float:
        """Seconds of slots each target had."""
        return self.slots // 2 * self.slot

    @property
    def heartbeat_rate(self) -> float:
        return sum(self.counts.per_slot[0::2]) / self.span

    @property
    def echo_rate(self) -> float:
        return sum(self.counts.per_slot[1::2]) / self.span


def heartbeat_phase(bench: Bench) -> HeartbeatRun:
    """The same clients call SendSessionHeartbeat on their sessions and the echo floor with the same bytes, as fast as
    they can, in alternating short slots so that other load on the machine weighs on both alike; then they close
    their sessions and report their heartbeat gaps and refusals."""
    print("heartbeats/s against the floor, interleaved ...", flush=True)
    slot = min(0.25, bench.opts.window / 4)
    slots = 2 * max(1, round(bench.opts.seconds / slot))
    counts = bench.slots(["daemon", "echo"], slot, slots)
    time.sleep(0.3)
    for conn in bench.heartbeats:
        conn.send(("close",))
    client_stats = [conn.recv() for conn in bench.heartbeats]
    for conn in bench.heartbeats:
        conn.send(("exit",))
    return HeartbeatRun(slot, slots, counts, client_stats)


@dataclass(frozen=True)
class FullGc:
    """What a full garbage collection costs in this process now (the daemon froze what its start-up left)."""

    tracked: int
    frozen: int
    seconds: list[float]

    @classmethod
    def measure(cls, times: int = 5) -> FullGc:
        tracked, frozen = len(gc.get_objects()), gc.get_freeze_count()
        seconds = []
        for _ in range(times):
            began = time.perf_counter()
            gc.collect()
            seconds.append(time.perf_counter() - began)
        return cls(tracked, frozen, seconds)


# --- the report --------------------------------------------------------------------------------------------------


class Report:
    """The printed report: its lines, notes on what disturbed the figures, and each target missed."""

    def __init__(self, header: list[str]) -> None:
        self.lines = ["", "=" * 110, *header]
        self.notes: list[str] = []
        self.missed: list[str] = []

    def load(self, phase: str, share: Share) -> str:
        """The machine's load during a phase, noting when other processes disturbed it."""
        if share.others > 0.10 or share.steal > 0.05:
            self.notes.append(f"other processes used {share.others:.0%} of the machine (hypervisor steal "
                              f"{share.steal:.0%}) during '{phase}': its figures are disturbed")
        return share.text()

    def setup(self, opts: Options, bench: Bench, run: StopLatencyRun) -> None:
        from rover_safety.daemon.app import COMMAND_THREADS

        serving = bench.daemon.serving
        serve_nice = _nice(serving.thread.native_id) if serving is not None else "not running"
        self.lines += [
            f"setup:   {MOTORS} motors (dir+pwm) on mock PWM pins; heartbeat window {opts.window * 1000:g} ms; "
            f"{opts.sessions} sessions in {opts.heartbeat_procs} client processes, each heartbeated every "
            f"{opts.window / 5 * 1000:g} ms; {MOTORS} expiry lanes in {opts.lane_procs} processes",
            f"         the daemon as shipped, in this process (probes on its session manager and pins), gRPC on "
            f"grpc.aio on its own event-loop thread ({serve_nice}), motion commands on {COMMAND_THREADS} command "
            f"threads; deadline thread {run.deadline_policy}, stop threads "
            + (", ".join(f"{n} x {p}" for p, n in run.stop_threads.items()) or "none started"),
            "-" * 110]
        if not run.deadline_policy.startswith("SCHED_FIFO"):
            self.notes.append(f"the deadline thread ran {run.deadline_policy}, not SCHED_FIFO: this process may not "
                              "raise its priority (run as root, or with an RLIMIT_RTPRIO like the unit's "
                              "LimitRTPRIO=20)")

    def stop_latency(self, run: StopLatencyRun, found: Expiries, full_gc: FullGc) -> None:
        latency, n = found.latency, len(found.measured)
        out = self.lines
        out.append(f"1. stop latency, deadline -> PWM duty 0 at the mock pin: {n} expiries; "
                   + self.load("stop latency", run.load))
        if n:
            out.append(f"   p50 {ms(pct(latency, 0.5))} ms   p99 {ms(pct(latency, 0.99))} ms   max "
                       f"{ms(max(latency))} ms   (min {ms(min(latency))}, mean {ms(sum(latency) / n)})   target p99 "
                       f"<= {TARGET_P99_MS:g} ms, max <= {TARGET_MAX_MS:g} ms")
        out.append(f"   stops before the deadline: {found.early} (target 0)   duty 0 written by: "
                   + (", ".join(f"{w} {c}" for w, c in found.writers.items()) or "nobody")
                   + f"   not measured: {found.unmeasured} without SetPower then duty 0, {found.never_expired} never "
                   f"expired, {found.lane_errors} lane RPC errors, {found.wrong_deadline} deadlines != SetPower + "
                   "window")
        out.append(f"   sessions expired per deadline-loop pass: {dict(sorted(found.batches.items()))}")
        pauses = [e - b for b, e, _ in found.gc]
        hit = [m for m in found.measured if m.gc > 0]
        out.append(f"   garbage collections in the daemon's process meanwhile: {len(pauses)} ("
                   f"{sum(g == 2 for _, _, g in found.gc)} full), pause p50 {ms(pct(pauses, 0.5))} / max "
                   f"{ms(max(pauses, default=0.0))} ms; expiries with a collection inside deadline -> duty 0: "
                   f"{len(hit)}" + (f" (their latency max {ms(max(m.latency for m in hit))} ms)" if hit else ""))
        out.append(f"   a full collection of this process now: {ms(pct(full_gc.seconds, 0.5))} ms (median of 5, max "
                   f"{ms(max(full_gc.seconds))}); {full_gc.tracked} objects tracked, {full_gc.frozen} frozen by the "
                   "daemon's start")
        out.append(f"   {'stage (ms)':<50}{'n':>5}{'p50':>9}{'p99':>9}{'max':>9}")
        for policy, lateness in run.witnesses:
            out.append(f"   {f'witness in its own process, {policy}':<50}{_spread(lateness)}")
        for key, label in STAGES:
            values = [v for m in found.measured if not math.isnan(v := getattr(m, key))]
            if values:
                out.append(f"   {label:<50}{_spread(values)}")
        worst = sorted(found.measured, key=lambda m: -m.latency)[:3]
        out.append("   worst: " + " | ".join(
            f"{ms(m.latency)} = expired {ms(m.woke)} (wait returned {ms(m.returned)}) + cut {ms(m.cut)}"
            + (f" [gc {m.gc:.3f} inside]" if m.gc else "") for m in worst))
        self._stop_latency_targets(found)

    def _stop_latency_targets(self, found: Expiries) -> None:
        latency, n = found.latency, len(found.measured)
        if not n:
            self.missed.append("stop latency: no expiry measured")
        else:
            if pct(latency, 0.99) > TARGET_P99_MS / 1000:
                self.missed.append(f"stop latency p99 {ms(pct(latency, 0.99))} ms > {TARGET_P99_MS:g} ms")
            if max(latency) > TARGET_MAX_MS / 1000:
                self.missed.append(f"stop latency max {ms(max(latency))} ms > {TARGET_MAX_MS:g} ms")
            if n < 200:
                self.missed.append(f"only {n} expiries measured (< 200)")
        if found.early:
            self.missed.append(f"{found.early} stops before the deadline (must be 0)")
        if not found.clean():
            self.missed.append("stop latency: some lane sessions were not measured cleanly (see the counts above)")

    def heartbeats(self, opts: Options, run: HeartbeatRun, false_server: int) -> None:
        """`false_server`: heartbeated sessions the daemon's session manager expired over the whole run."""
        stats = run.client_stats
        false_client = sum(s["expired"] for s in stats)
        max_gap = max((s["max_gap"] for s in stats), default=0.0)
        share = run.heartbeat_rate / run.echo_rate if run.echo_rate else 0.0
        self.lines += [
            "-" * 110,
            f"2. heartbeats against the floor (a trivial echo served like the daemon: grpc.aio on an event-loop "
            f"thread of its own; same clients and request bytes), {run.slot * 1000:g} ms slots in turn, "
            f"{run.span:g} s each, from {opts.heartbeat_procs} processes x {opts.threads} threads: echo "
            f"{run.echo_rate:,.0f}/s, heartbeats {run.heartbeat_rate:,.0f}/s ({run.counts.failed} failed); "
            + self.load("interleaved", run.counts.load),
            f"   heartbeats/s = {share:.0%} of the floor (target >= {TARGET_FLOOR_SHARE:.0%})",
            f"   false expiries: {false_server} in the daemon's session manager (whole run), {false_client} "
            f"SESSION_EXPIRED answers to heartbeats; longest gap between one session's heartbeats {ms(max_gap)} ms "
            f"(window {opts.window * 1000:g} ms); other client errors {sum(s['errors'] for s in stats)}"]
        if false_server or false_client:
            self.missed.append(f"false expiries: {false_server} in the daemon, {false_client} seen by clients (must "
                               "be 0)")
        if share < TARGET_FLOOR_SHARE:
            self.missed.append(f"heartbeats/s at {share:.0%} of the floor (interleaved) < {TARGET_FLOOR_SHARE:.0%}")

    def idle(self, idle: Idle, load: Share) -> None:
        self.lines.append("-" * 110)
        if idle.error:
            self.lines.append(f"3. idle cost: not measured: {idle.error}")
            return
        vol, invol = idle.switches
        self.lines.append(
            f"3. idle `rover-safety serve --simulate`, no clients, {idle.seconds:.2f} s: CPU {idle.cpu * 1000:.2f} ms "
            f"({idle.cpu / idle.seconds * 1000:.2f} ms/s), context switches {vol} voluntary ({vol / idle.seconds:.1f}"
            f"/s) + {invol} involuntary, {idle.threads} threads; " + load.text())
        self.lines.append("   wake-ups by thread name: " + "; ".join(
            f"{name} x{count}: {wakes} ({wakes / idle.seconds:.1f}/s, {cpu * 1000:.2f} ms CPU)"
            for name, count, wakes, cpu in idle.by_thread if wakes))

    def text(self, took: float) -> str:
        lines = [*self.lines, "-" * 110, *(f"NOTE: {text}" for text in self.notes),
                 *(f"MISSED TARGET: {text}" for text in self.missed)]
        if not self.missed:
            lines.append("all targets met")
        lines.append(f"run took {took:.1f} s")
        return "\n".join(lines)


def _nice(tid: int | None) -> str:
    """A thread's nice value, e.g. "nice -10"."""
    try:
        if tid is None:
            raise ProcessLookupError
        return f"nice {os.getpriority(os.PRIO_PROCESS, tid)}"
    except OSError:
        return "not running"


def run(opts: Options) -> int:
    """Idle cost first, while nothing else of ours runs; then the daemon in this process with its clients: stop
    latency (1), heartbeats against the floor (2); then the analysis and the report."""
    started = time.monotonic()
    header = ["command: python benchmarks/bench_stop.py " + " ".join(sys.argv[1:]), *_machine()]
    print("\n".join(header), flush=True)
    machine = Load()
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        config_path = Path(tmp) / "bench.yaml"
        config_path.write_text(_config_text(opts.window))

        print("idle cost ...", flush=True)
        a = machine.sample()
        idle = measure_idle(config_path, opts.idle_seconds)
        idle_load = machine.between(a, machine.sample())

        report = Report(header)
        with Bench(opts, config_path, machine) as bench:
            stops = stop_latency_phase(bench)
            heartbeats = heartbeat_phase(bench)
            full_gc = FullGc.measure()
            report.setup(opts, bench, stops)

    found = analyse_expiries(stops, bench.probe, bench.pwm_pin, opts.window)
    report.stop_latency(stops, found, full_gc)
    report.heartbeats(opts, heartbeats, sum(1 for sid in stops.heartbeat_ids if sid in bench.probe.expiries))
    report.idle(idle, idle_load)
    print(report.text(time.monotonic() - started), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stop latency, heartbeat throughput and idle cost of rover-safety.")
    p.add_argument("--window", type=float, default=1.0, help="heartbeat window, seconds (default 1.0)")
    p.add_argument("--expiries", type=int, default=210, help="expiries to measure, at least (default 210)")
    p.add_argument("--sessions", type=int, default=100, help="heartbeating sessions (default 100)")
    p.add_argument("--heartbeat-procs", type=int, default=4, help="heartbeat client processes (default 4)")
    p.add_argument("--lane-procs", type=int, default=2, help="expiry client processes (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads per heartbeat process in phase 2 (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="heartbeats and echo, each, interleaved (default 5)")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle measurement (default 5)")
    return run(Options(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
