"""rover-safety on a Pi-class CPU budget: stop latency, false expiries, heartbeats, idle cost, memory and start-up.

    python benchmarks/bench_budget.py [--quick] [--budgets 100,50,25,12,8] [--sessions 1,10,100]
                                      [--daemon after=.venv --daemon before=/tmp/rs-before/.venv]

The daemon runs as a real child process, `rover-safety serve --config X`, on pigpio: the pigpiod emulator
(tests/support/pigpiod_emulator.py) in a process of its own, on the other CPUs, SCHED_FIFO so that its command log
stamps each command as it arrives. The daemon is pinned to one CPU (`--cpu`, default the last) and put in a cgroup
that holds it to a share of that one core (CFS bandwidth: budget_cgroup.py says how, and why the period is as short
as the kernel allows). Its clients run in other processes, on the other CPUs, outside the cgroup. For each daemon and
budget, in this order:

1. start-up: exec -> READY=1 on a notify socket of ours (NOTIFY_SOCKET), and -> the "listening" log line;
2. idle: CPU time and wake-ups (context switches) of every thread over --idle-seconds with no client;
   RSS after start;
3. a heartbeat's round trip after an idle gap: one client, one call every --probe-gap (default 40 ms);
4. for each of --sessions (1, 10, 100): that many sessions heartbeat every window/5 (window 500 ms) from up to
   4 processes, while 14 expiry lanes in 2 more processes each start a session, SetPower a motor and go silent, over
   and over. Per expiry, the stop latency: the first duty 0 on that motor's PWM pin in the emulator's log, after the
   deadline. The daemon's exact deadline is not on the wire, so three figures are kept:
     - upper bound, from the wire: deadline >= (SetPower sent) + window;
     - upper bound, from the journal (the default figure, and the tighter one): the daemon's own line "outputs off X ms
       after the deadline" is the time to the end of its full stop, stamped once the last off command was answered,
       so deadline >= (the last off command in the emulator's log) - X;
     - lower bound, from the wire: deadline <= (SetPower answered) + window.
   Also: false expiries (heartbeating sessions that expired: SESSION_EXPIRED answers, and the daemon's expiry lines),
   heartbeat round trips, the daemon's CPU use and its cgroup's throttling, and two timer witnesses in the daemon's
   cgroup and on its CPU (SCHED_FIFO like the deadline thread, and normal): what the budget costs any timer there,
   without the daemon's GIL. RSS after the largest number of sessions.
5. heartbeats/s, closed loop: --heartbeat-procs client processes (default 4) x --hammer-threads threads (default 2),
   each on its own session, back to back.

Before any of it, this CPU's single-thread speed (nbody as pyperformance runs it, call-heavy Python, heartbeat
serialization, sysbench if installed), against published Raspberry Pi figures (budget_machine.py); and the floors: the
emulator's raw round trip for one set_PWM_dutycycle. Under each budget the same Python figure is measured again, which
shows the budget's real speed. Every phase records the machine's load: other processes' share and hypervisor steal,
machine-wide and on the daemon's CPU. Results go to build/bench/budget.json; benchmarks/plot_cdf.py draws the
stop-latency CDF from it. Always exits 0: a measurement, not a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import budget_cgroup as cg  # noqa: E402
from benchmarks import budget_clients as clients  # noqa: E402
from benchmarks import budget_daemon as dm  # noqa: E402
from benchmarks import budget_machine as machine  # noqa: E402
from benchmarks.stats import pct  # noqa: E402
from tests.support.pigpiod_emulator import Cmd, Command, EmulatorClient  # noqa: E402

MOTORS = 14  # dir+pwm: BCM 2k (PWM) and 2k+1 (direction), 0..27
FLOOR_PIN = 29  # a PWM pin no motor uses: the raw round-trip floor
REALTIME_PRIORITY = 10  # the daemon's deadline and stop threads (daemon/realtime.py)
EMULATOR_PRIORITY = 20
# The options --quick shortens (their argparse default is None: an option given explicitly always wins).
DEFAULTS: dict[str, Any] = {"budgets": "100,50,25,12,8", "expiries": 168, "idle_seconds": 10.0, "probes": 150,
                            "hammer_seconds": 5.0, "calibrate_scale": 1.0, "sysbench_seconds": 5.0}
QUICK: dict[str, Any] = {"budgets": "100,25,8", "expiries": 42, "idle_seconds": 3.0, "probes": 40,
                         "hammer_seconds": 2.0, "calibrate_scale": 0.3, "sysbench_seconds": 2.0}
# Quoted, not measured by this script: reference floors from /work/shared/reference/performance.md ("Measured floors
# on these machines", measured once on a development machine), in us. Kept in the results' meta; plot_cdf.py draws
# the SCHED_FIFO one, labelled as a quoted reference.
PERFORMANCE_MD = {
    "raw set_PWM_dutycycle to the emulator, p50 / p99": (35, 52),
    "SCHED_FIFO thread in a separate process, lateness p50 / p99 / max": (12, 38, 92),
    "thread: heap + Condition.wait, idle, lateness p50 / p99": (63, 161),
}
Json = dict[str, Any]


# --- small helpers ----------------------------------------------------------------------------------------------------


def spread(values: Sequence[float], scale: float = 1000.0) -> Json:
    """n, p50, p99, max (x scale: ms by default)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(values), "p50": pct(values, 0.5) * scale, "p99": pct(values, 0.99) * scale,
            "max": max(values) * scale}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def trio(s: Json, digits: int = 3) -> str:
    return " / ".join(fmt(s.get(k), digits) for k in ("p50", "p99", "max")) if s.get("n") else "–"


def duo(s: Json, digits: int = 3) -> str:
    return " / ".join(fmt(s.get(k), digits) for k in ("p50", "p99")) if s.get("n") else "–"


def share_json(share: machine.Share) -> Json:
    return asdict(share)


def load_note(share: machine.Share) -> str:
    return (f"other {share.cpu_others:.0%} / steal {share.cpu_steal:.0%} on its CPU; machine: other "
            f"{share.others:.0%}, steal {share.steal:.0%}")


def _daemon_command(spec: str) -> tuple[str, list[str]]:
    """'after=.venv' or 'before=/tmp/rs-before/.venv/bin/rover-safety' -> (label, argv)."""
    label, _, where = spec.partition("=")
    if not where:
        label, where = label or "after", spec
    path = Path(where)
    if path.is_dir():
        path = path / "bin" / "rover-safety"
    if not path.exists():
        raise SystemExit(f"--daemon {spec}: {path} does not exist")
    return label, [str(path)]


def _source_of(command: list[str]) -> Json:
    """Where the daemon's package is, and which commit (read-only git, or the marker budget_before.py leaves)."""
    python = Path(command[0]).with_name("python")
    info: Json = {"command": command}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(python), "-c", "import rover_safety.daemon as d; print(d.__file__)"],
                             capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        if out:
            tree = Path(out).resolve().parents[1]
            info["tree"] = str(tree)
            marker = tree / ".bench-budget-commit"
            if marker.exists():
                info["commit"] = marker.read_text().strip()
            elif (tree / ".git").exists():
                git = ["git", "--no-optional-locks", "-C", str(tree)]
                info["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                                text=True, timeout=10, check=False).stdout.strip()
                dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                       text=True, timeout=10, check=False).stdout.split("\n")
                info["modified"] = sorted(line[3:] for line in dirty if line.strip())
    return info


# The closed-loop phase measures how many heartbeats the daemon can answer, so its client (one host) may send more
# than a client's call rate allows; a daemon older than that limit does not know the key, and has no such limit.
UNLIMITED_CALLS = "  limits: {calls_per_second_per_owner: 1000000}"


@functools.cache
def _knows_call_rate(command: tuple[str, ...]) -> bool:
    """Whether this daemon takes UNLIMITED_CALLS (asked once per daemon, of its own check-config)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "probe.yaml"
        config.write_text(UNLIMITED_CALLS.join(["network:\n", "\n"]))
        return subprocess.run([*command, "check-config", "--config", str(config)], capture_output=True,
                              timeout=60, check=False).returncode == 0


def _config_text(window: float, port: int, unlimited: bool = True) -> str:
    lines = ["network:", '  bind_address: "127.0.0.1:0"', *([UNLIMITED_CALLS] if unlimited else []), "  sessions:",
             f"    heartbeat_window: {round(window * 1000)}ms", "gpio:", "  pin_factory: pigpio",
             f"  pigpio: {{host: 127.0.0.1, port: {port}}}", "components:"]
    for k in range(MOTORS):
        lines += [f"  - name: m{k:02d}", "    type: motor", "    model: gpio",
                  f"    attributes: {{pins: {{pwm: {2 * k}, dir: {2 * k + 1}}}, pwm_freq: 800}}"]
    return "\n".join(lines) + "\n"


# --- options ----------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    daemons: list[tuple[str, list[str]]]
    budgets: list[cg.Budget]
    sessions: list[int]
    window: float
    expiries: int
    lane_procs: int
    heartbeat_procs: int
    idle_seconds: float
    probe_gap: float
    probes: int
    hammer_seconds: float
    hammer_threads: int
    cpu: int | None
    others: set[int]
    calibrate_scale: float
    sysbench_seconds: float
    watchdog_usec: int
    nice: int
    weight: int
    emulator_priority: int
    out: Path
    quick: bool
    argv: list[str] = field(default_factory=list)


# --- one budget -------------------------------------------------------------------------------------------------------


class Procs:
    """The benchmark's helper processes for one daemon run (spawned, each with a Pipe); all ended in close()."""

    def __init__(self, load: machine.Load) -> None:
        self.ctx = mp.get_context("spawn")
        self.load = load
        self.procs: list[Any] = []

    def spawn(self, target: Callable[..., None], name: str, *args: Any) -> Connection:
        here, there = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(*args, there), name=name, daemon=True)
        proc.start()
        there.close()
        self.procs.append(proc)
        if proc.pid is not None:
            self.load.pids.add(proc.pid)
        return here

    @staticmethod
    def expect(conn: Connection, timeout: float = 60.0) -> Any:
        if not conn.poll(timeout):
            raise RuntimeError("a helper process did not answer in time")
        return conn.recv()

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.procs.clear()


def analyse_expiries(records: list[clients.LaneRecord], log: list[Command], expiries: list[dm.ExpiryLine],
                     window: float) -> Json:
    """Per lane cycle: deadline -> first duty 0 on its motor's PWM pin, with the bounds (see the module docstring)."""
    by_pin: dict[int, list[Command]] = {}
    for c in log:
        if c.result >= 0 and c.cmd in (Cmd.PWM, Cmd.WRITE):
            by_pin.setdefault(c.p1, []).append(c)
    journal = {e.session_id: e for e in expiries}
    rows: list[Json] = []
    counts = {"lane_errors": 0, "no_drive": 0, "no_cut": 0, "no_journal_line": 0}
    for r in records:
        if r.error or not r.session_id:
            counts["lane_errors"] += 1
            continue
        k = int(r.motor[1:])
        pwm, direction = 2 * k, 2 * k + 1
        pwm_cmds = by_pin.get(pwm, [])
        drive = next((c for c in pwm_cmds if c.cmd == Cmd.PWM and c.p2 > 0
                      and r.sent - 0.001 <= c.t <= r.answered + 0.001), None)
        if drive is None:
            counts["no_drive"] += 1
            continue
        cut = next((c for c in pwm_cmds if c.t > drive.t and c.cmd == Cmd.PWM and c.p2 == 0), None)
        if cut is None:
            counts["no_cut"] += 1
            continue
        # the stop's other off commands: on both pins, after the cut, before anything drives the motor again
        later = sorted([c for c in pwm_cmds + by_pin.get(direction, []) if cut.t <= c.t <= cut.t + 1.0],
                       key=lambda c: c.t)
        last_off = cut.t
        for c in later:
            if (c.cmd == Cmd.PWM and c.p2 > 0) or (c.cmd == Cmd.WRITE and c.p2 == 1):
                break
            last_off = c.t
        upper_wire = cut.t - (r.sent + window)
        lower_wire = cut.t - (r.answered + window)
        line = journal.get(r.session_id)
        upper_journal = None
        full_stop = None
        if line is not None and line.full_stop_ms is not None:
            full_stop = line.full_stop_ms
            upper_journal = cut.t - last_off + full_stop / 1000
        else:
            counts["no_journal_line"] += 1
        best = min(upper_wire, upper_journal) if upper_journal is not None else upper_wire
        rows.append({"latency": best, "upper_wire": upper_wire, "upper_journal": upper_journal,
                     "lower_wire": lower_wire, "full_stop_journal_ms": full_stop,
                     "cut_to_last_off": last_off - cut.t, "motor": r.motor})
    lat = [row["latency"] for row in rows]
    out: Json = {
        "measured": len(rows),
        "latency_ms": [x * 1000 for x in lat],  # the tighter upper bound per expiry (for the CDF)
        "latency": spread(lat),
        "upper_wire": spread([row["upper_wire"] for row in rows]),
        "upper_journal": spread([row["upper_journal"] for row in rows if row["upper_journal"] is not None]),
        "lower_wire": spread([row["lower_wire"] for row in rows]),
        "full_stop_journal": spread([row["full_stop_journal_ms"] / 1000 for row in rows
                                     if row["full_stop_journal_ms"] is not None]),
        "setpower_rtt": spread([r.answered - r.sent for r in records if not r.error and r.session_id]),
        "before_deadline": sum(1 for x in lat if x < 0),
        "journal_tighter": sum(1 for row in rows if row["upper_journal"] is not None
                               and row["upper_journal"] < row["upper_wire"]),
        **counts,
    }
    return out


def run_budget(opts: Options, label: str, command: list[str], budget: cg.Budget, index: int,
               emulator: EmulatorClient, load: machine.Load, cgroup_ok: bool, logs: Path) -> Json:
    """Everything for one daemon under one budget (see the module docstring)."""
    result: Json = {"daemon": label, "budget": {"label": budget.label, "fraction": budget.fraction}}
    group: cg.Cgroup | None = None
    if cgroup_ok:
        group = cg.create(budget, f"rover-bench-{os.getpid()}-{index}", opts.weight)
        result["budget"].update({"cgroup": group.describe(), "quota_us": group.quota_us, "period_us": group.period_us,
                                 "rt_runtime_us": group.rt_runtime_us, "rt_period_us": group.rt_period_us})
    procs = Procs(load)
    daemon: dm.DaemonProcess | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    try:
        # the budget's real speed: the same single-thread Python figure inside it
        conn = procs.spawn(machine.python_speed_worker, "speed", str(group.procs) if group else None, opts.cpu,
                           opts.calibrate_scale / 3)
        result["speed_under_budget"] = procs.expect(conn, 300)
        procs.close()

        config = tmp / "bench.yaml"
        config.write_text(_config_text(opts.window, emulator.port, unlimited=_knows_call_rate(tuple(command))))
        safe = "".join(ch if ch.isalnum() else "_" for ch in f"{label}-{budget.label}")
        daemon = dm.DaemonProcess(command, config, group, opts.cpu, logs / f"{safe}.log", opts.watchdog_usec,
                                  opts.nice)
        load.pids.add(daemon.pid)
        if not daemon.wait_ready(120):
            result["error"] = f"the daemon did not become ready (exit {daemon.proc.poll()}):\n{daemon.text()[-2000:]}"
            return result
        assert daemon.ready_at is not None and daemon.listening_at is not None
        result["startup"] = {"ready_s": daemon.ready_at - daemon.started_at,
                             "listening_s": daemon.listening_at - daemon.started_at}
        address = f"127.0.0.1:{daemon.port}"
        print(f"   {label} @ {budget.label}: READY after {result['startup']['ready_s'] * 1000:.0f} ms; idle ...",
              flush=True)

        # idle
        time.sleep(1.0)
        a, before = load.sample(), dm.tasks(daemon.pid)
        time.sleep(opts.idle_seconds)
        b, after = load.sample(), dm.tasks(daemon.pid)
        idle = dm.idle_between(before, after, b.at - a.at)
        result["idle"] = {"seconds": idle.seconds, "cpu_ms_per_s": idle.cpu_s / idle.seconds * 1000,
                          "wakeups_per_s": (idle.voluntary + idle.involuntary) / idle.seconds,
                          "voluntary_per_s": idle.voluntary / idle.seconds,
                          "involuntary_per_s": idle.involuntary / idle.seconds, "threads": idle.threads,
                          "by_thread": [{"name": n, "threads": c, "wakeups_per_s": w / idle.seconds,
                                         "cpu_ms_per_s": s / idle.seconds * 1000} for n, c, w, s in idle.by_name],
                          "load": share_json(load.between(a, b, idle.cpu_s))}
        rss, hwm = dm.memory_kb(daemon.pid)
        result["rss_kb"] = {"after_start": rss, "peak_after_start": hwm}
        result["policies_after_start"] = dict(dm.policies(daemon.pid))

        # the clients of this run, on the other CPUs
        hb = [procs.spawn(clients.heartbeat_client, f"heartbeat-{k}", address, opts.others)
              for k in range(opts.heartbeat_procs)]
        for conn in hb:
            procs.expect(conn)

        # a heartbeat after an idle gap
        print(f"   {label} @ {budget.label}: heartbeat after {opts.probe_gap * 1000:g} ms idle ...", flush=True)
        hb[0].send(("start", 1))
        procs.expect(hb[0])
        a, cpu0 = load.sample(), dm.cpu_seconds(daemon.pid)
        hb[0].send(("probe", opts.probe_gap, opts.probes))
        rtts, failed = procs.expect(hb[0], 60 + opts.probes * (opts.probe_gap + 2.5))
        share = load.between(a, load.sample(), dm.cpu_seconds(daemon.pid) - cpu0)
        result["rtt_after_idle"] = {**spread(rtts), "failed": failed, "gap_ms": opts.probe_gap * 1000,
                                    "load": share_json(share)}
        hb[0].send(("close",))
        procs.expect(hb[0])

        # stop latency under 1, 10, 100 heartbeating sessions
        result["cells"] = [run_cell(opts, n, address, hb, procs, daemon, group, emulator, load, label, budget)
                           for n in opts.sessions]
        rss_cell = next((c for c in result["cells"] if c["sessions"] == max(opts.sessions)), None)
        if rss_cell is not None:
            result["rss_kb"]["with_sessions"] = rss_cell.get("rss_kb")
            result["rss_kb"]["sessions"] = rss_cell["sessions"]

        # heartbeats/s, closed loop
        print(f"   {label} @ {budget.label}: closed-loop heartbeats ...", flush=True)
        for conn in hb:
            conn.send(("start", opts.hammer_threads))
        for conn in hb:
            procs.expect(conn)
        begin = time.monotonic() + 0.3
        for conn in hb:
            conn.send(("hammer", opts.hammer_threads, begin, opts.hammer_seconds))
        time.sleep(max(0.0, begin - time.monotonic()))
        a, cpu0 = load.sample(), dm.cpu_seconds(daemon.pid)
        answers = [procs.expect(conn, opts.hammer_seconds + 30) for conn in hb]
        b = load.sample()
        daemon_cpu = dm.cpu_seconds(daemon.pid) - cpu0
        share = load.between(a, b, daemon_cpu)
        calls = sum(x[0] for x in answers)
        failures: dict[str, int] = {}
        for x in answers:
            for key, n in x[2].items():
                failures[key] = failures.get(key, 0) + n
        result["closed_loop"] = {"per_s": calls / opts.hammer_seconds, "calls": calls,
                                 "failed": sum(failures.values()), "failures": failures,
                                 "rtt": spread([v for x in answers for v in x[1]]),
                                 "clients": f"{opts.heartbeat_procs} processes x {opts.hammer_threads} threads",
                                 "daemon_cpu_share": daemon_cpu / max(1e-9, b.at - a.at),
                                 "load": share_json(share)}
        for conn in hb:
            conn.send(("close",))
        for conn in hb:
            procs.expect(conn)
        result["policies_at_end"] = dict(dm.policies(daemon.pid))
        result["not_realtime_warning"] = dm.NOT_REALTIME in daemon.text()
        if group is not None:
            t = group.throttle()
            result["throttle_total"] = asdict(t)
        for conn in hb:
            conn.send(("exit",))
    finally:
        procs.close()  # the clients end first (their channels close), then the daemon
        if daemon is not None:
            result["exit_code"] = daemon.stop()
            load.pids.discard(daemon.pid)
        if group is not None:
            group.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run_cell(opts: Options, sessions: int, address: str, hb: list[Connection], procs: Procs,
             daemon: dm.DaemonProcess, group: cg.Cgroup | None, emulator: EmulatorClient, load: machine.Load,
             label: str, budget: cg.Budget) -> Json:
    cell: Json = {"sessions": sessions}
    cycles = max(1, math.ceil(opts.expiries / MOTORS))
    print(f"   {label} @ {budget.label}: {sessions} heartbeating sessions, {cycles * MOTORS} expiries ...", flush=True)
    started = time.monotonic()
    # the helpers of this cell first (a new Python process costs a few hundred ms of CPU, on the clients' CPU),
    # then the sessions, each heartbeating from the moment it exists
    motors = [f"m{k:02d}" for k in range(MOTORS)]
    lanes = [procs.spawn(clients.lane_client, f"lanes-{j}", address, opts.others,
                         [(m, i / MOTORS * opts.window) for i, m in enumerate(motors) if i % opts.lane_procs == j],
                         cycles, opts.window, j) for j in range(opts.lane_procs)]
    procs_file = str(group.procs) if group is not None else None
    witnesses = [procs.spawn(clients.timer_witness, f"witness-{rt}", rt, REALTIME_PRIORITY, procs_file, opts.cpu)
                 for rt in (True, False)]
    for conn in lanes + witnesses:
        procs.expect(conn)
    users = hb[:max(1, min(len(hb), sessions))]
    per = [sessions // len(users) + (k < sessions % len(users)) for k in range(len(users))]
    hb_ids: set[str] = set()
    for conn, n in zip(users, per, strict=True):
        conn.send(("start_paced", n, opts.window / 5))
    for conn in users:
        hb_ids.update(procs.expect(conn, 120))
    time.sleep(2 * opts.window)  # every session in its rhythm
    witness_pids = [p.pid for p in procs.procs[-2:]]
    begin = time.monotonic() + 0.3
    for conn in lanes:
        conn.send(("run", begin))
    for conn in witnesses:
        conn.send(("run", begin + cycles * (opts.window + 0.3)))
    time.sleep(max(0.0, begin - time.monotonic()))

    def ours_on_cpu() -> float:
        return dm.cpu_seconds(daemon.pid) + sum(dm.cpu_seconds(p) for p in witness_pids if p is not None)

    a, cpu_a, d_a = load.sample(), ours_on_cpu(), dm.cpu_seconds(daemon.pid)
    thr_a = group.throttle() if group else None
    records: list[clients.LaneRecord] = []
    for conn in lanes:
        records += procs.expect(conn, cycles * (opts.window + 2.0) + 60)
    time.sleep(opts.window + 0.5)  # the last sessions lapse and stop
    witness_results = [procs.expect(conn, 60) for conn in witnesses]
    b, cpu_b, d_b = load.sample(), ours_on_cpu(), dm.cpu_seconds(daemon.pid)
    thr_b = group.throttle() if group else None
    for conn in lanes + witnesses:
        conn.send(("exit",))
    if sessions == max(opts.sessions):
        rss, hwm = dm.memory_kb(daemon.pid)
        cell["rss_kb"] = {"rss": rss, "peak": hwm}
    stats: list[clients.PaceStats] = []
    for conn in users:
        conn.send(("unpace",))
    for conn in users:
        stats.append(procs.expect(conn, 30))
    for conn in users:
        conn.send(("close",))
    close_failures = sum(procs.expect(conn, 60) for conn in users)
    ended = time.monotonic()

    share = load.between(a, b, cpu_b - cpu_a)
    seconds = b.at - a.at
    lines = daemon.expiries(started, ended)
    log = emulator.log(since=started - 0.01)
    emulator.clear_log()  # keeps each log request small (the emulator answers it under the lock commands take)
    cell["load"] = share_json(share)
    cell["stop"] = analyse_expiries(records, log, lines, opts.window)
    expired_client = sorted({s for st in stats for s in st.expired})
    expired_daemon = sorted({e.session_id for e in lines if e.session_id in hb_ids})
    errors: dict[str, int] = {}
    for st in stats:
        for code, n in st.errors.items():
            errors[code] = errors.get(code, 0) + n
    cell["heartbeats"] = {
        "sent": sum(st.sent for st in stats),
        "rtt": spread([x for st in stats for x in st.rtt]),
        "false_expiries_client": len(expired_client),
        "false_expiries_daemon": len(expired_daemon),
        "false_expiries": len(set(expired_client) | set(expired_daemon)),
        "errors": errors,
        "max_gap_ms": max((st.max_gap for st in stats), default=0.0) * 1000,
        "gap_at_expiry_ms": spread([g for st in stats for g in st.gap_at_expiry]),
        "client_lateness": spread([x for st in stats for x in st.lateness]),
        "expired_after_late_client": sum(1 for st in stats for g in st.gap_at_expiry if g >= opts.window),
        "close_failures": close_failures,
        "journal_lines_summarised": daemon.suppressed(started, ended),
    }
    cell["witness"] = {("fifo" if policy.startswith("SCHED_FIFO") else "other"): {"policy": policy,
                                                                                 **spread(lateness)}
                       for policy, lateness in witness_results}
    cell["daemon_cpu_share"] = (d_b - d_a) / seconds
    if thr_a is not None and thr_b is not None:
        t = thr_b - thr_a
        cell["throttle"] = {"periods": t.periods, "throttled": t.throttled, "throttled_s": t.throttled_s,
                            "throttled_share": t.throttled / t.periods if t.periods else 0.0}
    cell["policies"] = dict(dm.policies(daemon.pid))
    cell["phase_seconds"] = seconds
    s = cell["stop"]
    print(f"      stop latency p50/p99/max {trio(s['latency'])} ms (n={s['measured']}), false expiries "
          f"{cell['heartbeats']['false_expiries']}, hb rtt p50/p99 {duo(cell['heartbeats']['rtt'])} ms, daemon CPU "
          f"{cell['daemon_cpu_share']:.0%} of a core; {load_note(share)}", flush=True)
    return cell


# --- floors and calibration -------------------------------------------------------------------------------------------


def emulator_floor(port: int, count: int) -> Json:
    """One raw set_PWM_dutycycle round trip to the emulator, from this process: back to back, and after 20 ms idle."""
    import pigpio

    pi = pigpio.pi("127.0.0.1", port, show_errors=False)
    try:
        back: list[float] = []
        idle: list[float] = []
        pi.set_PWM_dutycycle(FLOOR_PIN, 0)
        for i in range(count):
            began = time.perf_counter()
            pi.set_PWM_dutycycle(FLOOR_PIN, 0 if i % 2 else 10)
            back.append(time.perf_counter() - began)
        for i in range(max(10, count // 4)):
            time.sleep(0.02)
            began = time.perf_counter()
            pi.set_PWM_dutycycle(FLOOR_PIN, 0 if i % 2 else 10)
            idle.append(time.perf_counter() - began)
        pi.set_PWM_dutycycle(FLOOR_PIN, 0)
        return {"back_to_back": spread(back), "after_20ms_idle": spread(idle)}
    finally:
        pi.stop()


def calibrate(opts: Options, load: machine.Load) -> Json:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    a = load.sample()
    proc = ctx.Process(target=machine.python_speed_worker, args=(None, opts.cpu, opts.calibrate_scale, there))
    proc.start()
    speed = here.recv() if here.poll(600) else {}
    proc.join(10)
    prefix = ["taskset", "-c", str(opts.cpu)] if opts.cpu is not None else []
    events = machine.sysbench(prefix, opts.sysbench_seconds) if opts.sysbench_seconds > 0 else None
    share = load.between(a, load.sample(), 0.0)
    rows = machine.pi_mapping(speed, events)
    return {"python": speed, "sysbench_events_per_s": events, "pi": rows, "load": share_json(share)}


# --- report -----------------------------------------------------------------------------------------------------------


def report(data: Json) -> list[str]:
    """Markdown tables for docs/BENCHMARKS.md."""
    out: list[str] = []
    runs: list[Json] = data["runs"]
    cal = data["calibration"]
    out += ["", "### The CPU, against Raspberry Pi cores", ""]
    py = cal["python"]
    out.append(f"One core here: nbody {fmt(py.get('nbody_us_per_step'), 2)} us/step (pyperformance's form), "
               f"call-heavy loop {fmt(py.get('calls_ns_per_iteration'), 0)} ns/iteration, 1e6 heartbeat "
               f"serializations {fmt(py.get('heartbeat_serialize_1e6_s'), 3)} s, sysbench "
               f"{fmt(cal.get('sysbench_events_per_s'), 0)} events/s; {machine.Share(**cal['load']).text()}.")
    out += ["", "| Pi | Python nbody (via Pi 5) | old-Python nbody (Pi 4) | sysbench | how |", "|---|---|---|---|---|"]
    for row in cal["pi"]:
        p = row["python"]
        out.append(f"| {row['pi']} | " + (f"{p[0]:.0%}" + (f"–{p[1]:.0%}" if p[1] != p[0] else "") if p else "–")
                   + f" | {fmt_pct(row['old_python'])} | {fmt_pct(row['sysbench'])} | {row['how']} |")
    out += ["", "### Stop latency, false expiries and heartbeats, by budget and sessions", "",
            "Stop latency: deadline → first duty 0 in the emulator's log, ms p50 / p99 / max; the tighter of the two "
            "upper bounds (journal-anchored where the daemon logged the expiry). Lower bound: from SetPower's answer. "
            "Witness: a SCHED_FIFO timer in the daemon's cgroup and on its CPU, lateness ms p99 / max.", ""]
    out += ["| daemon | budget | sessions | n | **stop latency** p50 / p99 / max | lower bound p50 / p99 | early | "
            "false expiries | heartbeat RTT p50 / p99 | daemon CPU (of a core) | throttled periods | "
            "witness FIFO p99 / max | load on its CPU: other / steal |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for cell in run.get("cells", []):
            s, h = cell["stop"], cell["heartbeats"]
            w = cell["witness"].get("fifo", {})
            thr = cell.get("throttle")
            ld = cell["load"]
            out.append(f"| {run['daemon']} | {run['budget']['label']} | {cell['sessions']} | {s['measured']} | "
                       f"**{trio(s['latency'])}** | {duo(s['lower_wire'])} | {s['before_deadline']} | "
                       f"{h['false_expiries']}" + (f" ({h['expired_after_late_client']} after a late client)"
                                                    if h.get('expired_after_late_client') else "")
                       + f" | {duo(h['rtt'])} | {cell['daemon_cpu_share']:.0%} | "
                       + (f"{thr['throttled_share']:.0%}" if thr else "–")
                       + f" | {fmt(w.get('p99'))} / {fmt(w.get('max'))} | "
                       f"{ld['cpu_others']:.0%} / {ld['cpu_steal']:.0%} |")
    out += ["", "### Start-up, idle, memory, heartbeats", "",
            "| daemon | budget | exec → READY=1, ms | idle CPU, ms/s | idle wake-ups/s | RSS after start, MB | "
            f"RSS with sessions, MB | {_probe_label(runs)}, ms p50 / p99 | heartbeats/s, closed loop "
            f"({_clients_label(runs)}) | speed of the budget |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    base = cal["python"].get("nbody_us_per_step")
    for run in runs:
        if "startup" not in run:
            out.append(f"| {run['daemon']} | {run['budget']['label']} | {run.get('error', 'not run')[:80]} "
                       "| | | | | | | |")
            continue
        rss = run["rss_kb"]
        speed = run.get("speed_under_budget", {}).get("nbody_us_per_step")
        eff = f"{base / speed:.0%}" if base and speed else "–"
        with_s = rss.get("with_sessions") or {}
        out.append(f"| {run['daemon']} | {run['budget']['label']} | {run['startup']['ready_s'] * 1000:.0f} | "
                   f"{run['idle']['cpu_ms_per_s']:.2f} | {run['idle']['wakeups_per_s']:.1f} | "
                   f"{rss['after_start'] / 1024:.1f} | "
                   + (f"{with_s['rss'] / 1024:.1f} ({rss.get('sessions')})" if with_s else "–")
                   + f" | {duo(run['rtt_after_idle'])} | {run['closed_loop']['per_s']:,.0f} | {eff} |")
    out += comparison(runs)
    out += [""]
    for run in runs:
        if "idle" in run:
            busy = [t for t in run["idle"]["by_thread"] if t["wakeups_per_s"] >= 0.1]
            out.append(f"- idle wake-ups of {run['daemon']} @ {run['budget']['label']}: " + "; ".join(
                f"{t['name']} x{t['threads']} {t['wakeups_per_s']:.1f}/s" for t in busy))
    notes = []
    for run in runs:
        for cell in run.get("cells", []):
            share = machine.Share(**cell["load"])
            if share.disturbed():
                notes.append(f"{run['daemon']} @ {run['budget']['label']}, {cell['sessions']} sessions: "
                             f"{load_note(share)}")
        fifo = sum(n for p, n in run.get("policies_at_end", {}).items() if p.startswith("SCHED_FIFO"))
        if "policies_at_end" in run and not fifo:
            notes.append(f"{run['daemon']} @ {run['budget']['label']}: no thread ran SCHED_FIFO (refused in the "
                         "cgroup?)")
    out += ["", *[f"NOTE: {n}" for n in notes]]
    return out


def comparison(runs: list[Json]) -> list[str]:
    """Two daemons side by side per budget (the first label against the second): the figures issue 9 asks for."""
    labels = list(dict.fromkeys(r["daemon"] for r in runs))
    if len(labels) < 2:
        return []
    a_label, b_label = labels[0], labels[1]
    out = ["", f"### {b_label} → {a_label}, by budget", "",
           f"| budget | figure | {b_label} | {a_label} |", "|---|---|---|---|"]
    by = {(r["daemon"], r["budget"]["label"]): r for r in runs if "startup" in r}
    for budget in dict.fromkeys(r["budget"]["label"] for r in runs):
        a, b = by.get((a_label, budget)), by.get((b_label, budget))
        if a is None or b is None:
            continue

        def cells(run: Json) -> dict[int, Json]:
            return {c["sessions"]: c for c in run["cells"]}

        ca, cb = cells(a), cells(b)
        rows: list[tuple[str, str, str]] = []
        for n in sorted(set(ca) & set(cb)):
            rows.append((f"stop latency, {n} sessions, ms p50 / p99 / max", trio(cb[n]["stop"]["latency"]),
                         trio(ca[n]["stop"]["latency"])))
        for n in sorted(set(ca) & set(cb)):
            rows.append((f"false expiries, {n} sessions; heartbeat RTT ms p50 / p99",
                         f"{cb[n]['heartbeats']['false_expiries']}; {duo(cb[n]['heartbeats']['rtt'])}",
                         f"{ca[n]['heartbeats']['false_expiries']}; {duo(ca[n]['heartbeats']['rtt'])}"))
        rows += [
            (f"{_probe_label([b, a])}, ms p50 / p99", duo(b["rtt_after_idle"]), duo(a["rtt_after_idle"])),
            (f"heartbeats/s, closed loop ({_clients_label([b, a])})", f"{b['closed_loop']['per_s']:,.0f}",
             f"{a['closed_loop']['per_s']:,.0f}"),
            ("idle: CPU ms/s; wake-ups/s", f"{b['idle']['cpu_ms_per_s']:.2f}; {b['idle']['wakeups_per_s']:.1f}",
             f"{a['idle']['cpu_ms_per_s']:.2f}; {a['idle']['wakeups_per_s']:.1f}"),
            ("RSS after start; with the most sessions, MB", _rss(b), _rss(a)),
            ("exec → READY=1, ms", f"{b['startup']['ready_s'] * 1000:.0f}", f"{a['startup']['ready_s'] * 1000:.0f}"),
        ]
        out += [f"| {budget} | {name} | {vb} | {va} |" for name, vb, va in rows]
    return out


def _probe_label(runs: list[Json]) -> str:
    """'heartbeat after 40 ms idle', from the gap these runs recorded (--probe-gap)."""
    gaps = dict.fromkeys(r["rtt_after_idle"]["gap_ms"] for r in runs if "rtt_after_idle" in r)
    return f"heartbeat after {' / '.join(f'{g:g}' for g in gaps) or '?'} ms idle"


def _clients_label(runs: list[Json]) -> str:
    """'4 processes x 2 threads', as these runs recorded their closed-loop clients (--heartbeat-procs,
    --hammer-threads)."""
    return " / ".join(dict.fromkeys(r["closed_loop"]["clients"] for r in runs if "closed_loop" in r)) or "?"


def _rss(run: Json) -> str:
    rss = run["rss_kb"]
    with_s = rss.get("with_sessions") or {}
    return f"{rss['after_start'] / 1024:.1f}; " + (f"{with_s['rss'] / 1024:.1f}" if with_s else "–")


def fmt_pct(value: float | None) -> str:
    return f"{value:.0%}" if value else "–"


# --- main -------------------------------------------------------------------------------------------------------------


def run(opts: Options) -> int:
    started = time.monotonic()
    lines = machine.machine_lines()
    print("command: python benchmarks/bench_budget.py " + " ".join(opts.argv), *lines, sep="\n", flush=True)
    found = cg.find_cpu_hierarchy()
    budgets = opts.budgets
    skipped: list[str] = []
    cgroup_info: Json | None = None
    if isinstance(found, str):
        skipped = [b.label for b in budgets if b.limited]
        budgets = [b for b in budgets if not b.limited] or [cg.Budget(1.0)]
        print(f"SKIP: CPU budgets {', '.join(skipped)}: {found}; only pinning to one CPU is measured", flush=True)
    else:
        parent, version = found
        cgroup_info = {"version": version, "parent": str(parent)}
        print(f"cgroup: v{version} under {parent}; daemon on CPU {opts.cpu}, clients and emulator on CPUs "
              f"{sorted(opts.others)}", flush=True)
    cgroup_ok = cgroup_info is not None
    if opts.others:
        os.sched_setaffinity(0, opts.others)
    load = machine.Load(opts.cpu)
    out_dir = opts.out.parent
    logs = out_dir / f"{opts.out.stem}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    data: Json = {
        "meta": {"command": ["benchmarks/bench_budget.py", *opts.argv], "machine": lines,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "python": platform.python_version(),
                 "cgroup": cgroup_info,
                 "skipped_budgets": skipped, "daemon_cpu": opts.cpu, "other_cpus": sorted(opts.others),
                 "window_s": opts.window, "motors": MOTORS, "lane_procs": opts.lane_procs,
                 "heartbeat_procs": opts.heartbeat_procs, "quick": opts.quick, "probe_gap_s": opts.probe_gap,
                 "probes": opts.probes, "hammer_threads": opts.hammer_threads, "hammer_seconds": opts.hammer_seconds,
                 "daemons": {label: _source_of(cmd) for label, cmd in opts.daemons},
                 "watchdog_usec": opts.watchdog_usec, "nice": opts.nice, "cgroup_weight": opts.weight,
                 "emulator_priority": opts.emulator_priority, "performance_md_us": PERFORMANCE_MD},
        "runs": [],
    }
    with EmulatorClient.spawn(host="127.0.0.1") as emulator:
        assert emulator.process is not None
        load.pids.add(emulator.process.pid)
        if opts.others:
            cg.pin_all_threads(emulator.process.pid, opts.others)
        if opts.emulator_priority:
            data["meta"]["emulator_realtime"] = cg.realtime_all_threads(emulator.process.pid, opts.emulator_priority)
        print("floors and calibration ...", flush=True)
        data["floors"] = {"emulator_rtt": emulator_floor(emulator.port, 100 if opts.quick else 400)}
        data["calibration"] = calibrate(opts, load)
        print(*machine.mapping_text(data["calibration"]["pi"]), sep="\n", flush=True)
        index = 0
        for label, command in opts.daemons:
            for budget in budgets:
                index += 1
                print(f"{label} daemon, budget {budget.label} ...", flush=True)
                try:
                    data["runs"].append(run_budget(opts, label, command, budget, index, emulator, load, cgroup_ok,
                                                   logs))
                except OSError as exc:
                    data["runs"].append({"daemon": label, "budget": {"label": budget.label,
                                                                     "fraction": budget.fraction},
                                         "error": f"{type(exc).__name__}: {exc}"})
                    print(f"   could not run: {exc}", flush=True)
                _save(opts.out, data)
        data["floors"]["emulator_rtt_at_end"] = emulator_floor(emulator.port, 100 if opts.quick else 400)
    data["meta"]["seconds"] = time.monotonic() - started
    text = report(data)
    data["report"] = text
    _save(opts.out, data)
    print("\n".join(text))
    print(f"\nresults: {opts.out}; daemon logs: {logs}; draw: python benchmarks/plot_cdf.py")
    print(f"run took {data['meta']['seconds']:.0f} s")
    return 0


def _save(path: Path, data: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}: cleaning up (daemon, cgroup, helper processes)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop)  # `kill PID` ends the run through the clean-ups (finally blocks)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The old daemon (before the asyncio move) for --daemon before=...: "
               "python benchmarks/budget_before.py 2f354b4 /tmp/rs-before  (and --remove /tmp/rs-before after).\n"
               "Needs root for the cgroup and SCHED_FIFO; without a cpu cgroup only the 100% (pinned) budget runs.")
    p.add_argument("--daemon", action="append", default=[], metavar="LABEL=PATH",
                   help="a daemon to measure: a venv or its rover-safety script; repeat to compare "
                        "(default after=the venv running this script)")
    p.add_argument("--budgets", default=None,
                   help="shares of one core, %%; '25@100000' sets the CFS period in us (default 100,50,25,12,8; "
                        "--quick: 100,25,8; auto period: the shortest the kernel allows)")
    p.add_argument("--sessions", default="1,10,100", help="heartbeating sessions per cell (default 1,10,100)")
    p.add_argument("--window", type=float, default=0.5, help="heartbeat window, s (default 0.5; heartbeats every /5)")
    p.add_argument("--expiries", type=int, default=None, help="expiries per cell, at least (default 168; --quick 42)")
    p.add_argument("--lane-procs", type=int, default=2, help="expiry-lane processes (14 lanes in all; default 2)")
    p.add_argument("--heartbeat-procs", type=int, default=4, help="heartbeat client processes (default 4)")
    p.add_argument("--idle-seconds", type=float, default=None, help="idle measurement, s (default 10; --quick 3)")
    p.add_argument("--probe-gap", type=float, default=0.04, help="idle gap before each probe heartbeat, s (0.04)")
    p.add_argument("--probes", type=int, default=None, help="probe heartbeats (default 150; --quick 40)")
    p.add_argument("--hammer-seconds", type=float, default=None,
                   help="closed-loop heartbeats, s (default 5; --quick 2)")
    p.add_argument("--hammer-threads", type=int, default=2, help="threads per client process there (default 2)")
    p.add_argument("--cpu", type=int, default=None, help="the daemon's CPU (default the last one)")
    p.add_argument("--calibrate-scale", type=float, default=None,
                   help="length of the speed figures (default 1; --quick 0.3)")
    p.add_argument("--sysbench-seconds", type=float, default=None,
                   help="sysbench cpu run, s; 0 skips (default 5; --quick 2)")
    p.add_argument("--watchdog-usec", type=int, default=0,
                   help="WATCHDOG_USEC for the daemon, as the unit's WatchdogSec=1s gives 1000000 (default 0: off)")
    p.add_argument("--nice", type=int, default=-10, help="the daemon's nice value, as the unit's Nice= (default -10)")
    p.add_argument("--weight", type=int, default=cg.UNIT_CPU_WEIGHT,
                   help=f"the cgroup's CPU weight, as the unit's CPUWeight= (default {cg.UNIT_CPU_WEIGHT})")
    p.add_argument("--emulator-priority", type=int, default=EMULATOR_PRIORITY,
                   help=f"SCHED_FIFO priority of the emulator's threads; 0 leaves them normal (default "
                        f"{EMULATOR_PRIORITY})")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "budget.json", help="results file")
    p.add_argument("--quick", action="store_true",
                   help="a short run: budgets 100,25,8, 42 expiries per cell, 3 s idle, 40 probes, 2 s closed loop, "
                        "shorter speed figures (an option given explicitly wins)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:  # not given: the mode's value
            setattr(args, key, value)
    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else (cpus[-1] if len(cpus) > 1 else None)
    others = {c for c in cpus if c != cpu} if cpu is not None else set()
    daemons = [_daemon_command(spec) for spec in args.daemon] or [
        ("after", [str(Path(sys.executable).with_name("rover-safety"))])]
    try:
        budgets = [cg.Budget.parse(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError as exc:
        p.error(str(exc))
    return run(Options(
        daemons=daemons, budgets=budgets, sessions=[int(s) for s in args.sessions.split(",") if s.strip()],
        window=args.window, expiries=args.expiries, lane_procs=args.lane_procs,
        heartbeat_procs=args.heartbeat_procs, idle_seconds=args.idle_seconds, probe_gap=args.probe_gap,
        probes=args.probes, hammer_seconds=args.hammer_seconds, hammer_threads=args.hammer_threads, cpu=cpu,
        others=others, calibrate_scale=args.calibrate_scale, sysbench_seconds=args.sysbench_seconds,
        watchdog_usec=args.watchdog_usec, nice=args.nice, weight=args.weight,
        emulator_priority=args.emulator_priority, out=args.out,
        quick=args.quick, argv=argv))


if __name__ == "__main__":
    sys.exit(main())
