"""The machine under bench_budget.py: how busy it is (other processes, hypervisor steal), and how fast one of its cores
runs single-threaded Python, against published figures for Raspberry Pi cores."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# --- machine load ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticks:
    at: float
    busy: dict[str, int]  # "cpu" (all) and "cpuN": user + nice + system + irq + softirq, in clock ticks
    steal: dict[str, int]
    ours: int  # utime + stime of the benchmark's own processes, clock ticks


@dataclass(frozen=True)
class Share:
    """How busy the machine was over a phase, as shares of all its CPUs, and the same for the daemon's one CPU."""

    seconds: float
    busy: float
    ours: float  # the benchmark's processes: itself, clients, emulator, daemon, witnesses
    others: float
    steal: float
    cpu_busy: float  # the daemon's CPU
    cpu_ours: float  # the daemon and the witnesses (the only processes of ours pinned there)
    cpu_others: float
    cpu_steal: float

    def text(self) -> str:
        return (f"machine {self.busy:.0%} busy (ours {self.ours:.0%}, other processes {self.others:.0%}, steal "
                f"{self.steal:.0%}); the daemon's CPU: other processes {self.cpu_others:.0%}, steal "
                f"{self.cpu_steal:.0%}")

    def disturbed(self, others: float = 0.10, steal: float = 0.05) -> bool:
        return self.others > others or self.steal > steal or self.cpu_others > others or self.cpu_steal > steal


class Load:
    """/proc/stat against the benchmark's own processes: other load on the machine and steal show."""

    def __init__(self, daemon_cpu: int | None) -> None:
        self.pids: set[int] = {os.getpid()}
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cpus = os.cpu_count() or 1
        self.cpu_key = f"cpu{daemon_cpu}" if daemon_cpu is not None else "cpu"

    def sample(self) -> Ticks:
        busy: dict[str, int] = {}
        steal: dict[str, int] = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(v) for v in fields[:8])
            busy[name], steal[name] = user + nice + system + irq + softirq, stolen
        ours = 0
        for pid in list(self.pids):
            with contextlib.suppress(OSError, IndexError, ValueError):  # a process that has ended
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])
        return Ticks(time.monotonic(), busy, steal, ours)

    def between(self, a: Ticks, b: Ticks, on_cpu_s: float) -> Share:
        """`on_cpu_s`: CPU seconds our processes pinned to the daemon's CPU used meanwhile (measured exactly)."""
        seconds = max(1e-9, b.at - a.at)
        scale = self.hz * seconds * self.cpus
        busy = (b.busy["cpu"] - a.busy["cpu"]) / scale
        ours = (b.ours - a.ours) / scale
        one = self.hz * seconds * (1 if self.cpu_key != "cpu" else self.cpus)
        cpu_busy = (b.busy[self.cpu_key] - a.busy[self.cpu_key]) / one
        cpu_ours = on_cpu_s / seconds / (1 if self.cpu_key != "cpu" else self.cpus)
        return Share(seconds, busy, ours, max(0.0, busy - ours), (b.steal["cpu"] - a.steal["cpu"]) / scale,
                     cpu_busy, cpu_ours, max(0.0, cpu_busy - cpu_ours),
                     (b.steal[self.cpu_key] - a.steal[self.cpu_key]) / one)


def machine_lines() -> list[str]:
    import grpc

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    virt = ""
    with contextlib.suppress(OSError):
        virt = Path("/sys/class/dmi/id/product_name").read_text().strip()
    return [
        f"machine: {os.cpu_count()} CPUs, {model}{f' ({virt})' if virt else ''}, load average "
        f"{Path('/proc/loadavg').read_text().split(' ', 1)[0]} at the start",
        f"system:  {platform.platform()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}, grpcio {grpc.__version__}",
    ]


# --- single-thread speed ------------------------------------------------------------------------------------------

# N-body (the Computer Language Benchmarks Game's 5-body planetary system, dt = 0.01), in the form pyperformance's
# bm_nbody runs it (each body a (position list, velocity list, mass) tuple, pairs unpacked in the loop): pure-Python
# float arithmetic, for which Raspberry Pi figures are published (PI_* below).
SOLAR_MASS = 4 * math.pi * math.pi
DAYS_PER_YEAR = 365.24
PLANETS = (
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    (4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01, 1.66007664274403694e-03,
     7.69901118419740425e-03, -6.90460016972063023e-05, 9.54791938424326609e-04),
    (8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01, -2.76742510726862411e-03,
     4.99852801234917238e-03, 2.30417297573763929e-05, 2.85885980666130812e-04),
    (1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01, 2.96460137564761618e-03,
     2.37847173959480950e-03, -2.96589568540237556e-05, 4.36624404335156298e-05),
    (1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01, 2.68067772490389322e-03,
     1.62824170038242295e-03, -9.51592254519715870e-05, 5.15138902046611451e-05),
)

Body = tuple[list[float], list[float], float]


def nbody(steps: int, dt: float = 0.01) -> float:
    """Advance the system `steps` times; returns its kinetic energy (so the work cannot be skipped)."""
    system: list[Body] = [([x, y, z], [vx * DAYS_PER_YEAR, vy * DAYS_PER_YEAR, vz * DAYS_PER_YEAR], m * SOLAR_MASS)
                          for x, y, z, vx, vy, vz, m in PLANETS]
    pairs = [(system[i], system[j]) for i in range(len(system)) for j in range(i + 1, len(system))]
    for _ in range(steps):
        for ([ax, ay, az], va, ma), ([bx, by, bz], vb, mb) in pairs:
            dx, dy, dz = ax - bx, ay - by, az - bz
            mag = dt * ((dx * dx + dy * dy + dz * dz) ** (-1.5))
            ka, kb = ma * mag, mb * mag
            va[0] -= dx * kb
            va[1] -= dy * kb
            va[2] -= dz * kb
            vb[0] += dx * ka
            vb[1] += dy * ka
            vb[2] += dz * ka
        for r, [vx, vy, vz], _m in system:
            r[0] += dt * vx
            r[1] += dt * vy
            r[2] += dt * vz
    return sum(m * (v[0] ** 2 + v[1] ** 2 + v[2] ** 2) / 2 for _, v, m in system)


def _calls(n: int) -> int:
    """Function calls, small-int arithmetic, a dict and a list: the interpreter's everyday work (pystone-like)."""
    def step(a: int, b: int) -> int:
        return (a * 31 + b) & 0xFFFF

    table: dict[int, int] = {}
    acc = [0] * 16
    x = 1
    for i in range(n):
        x = step(x, i)
        table[x & 255] = i
        acc[i & 15] += x
    return x + len(table) + sum(acc)


def _timed(fn: Any, *args: Any) -> float:
    began = time.perf_counter()
    fn(*args)
    return time.perf_counter() - began


def python_speed(scale: float = 1.0) -> dict[str, float]:
    """Single-thread figures of this interpreter on this CPU (best of 3 each)."""
    from rover_safety.api import robot_pb2

    steps = max(1000, int(50_000 * scale))
    nbody_s = min(_timed(nbody, steps) for _ in range(3))
    n = max(10_000, int(1_000_000 * scale))
    calls_s = min(_timed(_calls, n) for _ in range(3))
    request = robot_pb2.SendSessionHeartbeatRequest(id="0b4f7c1e-8f0a-4d8e-9d59-1f7c6a2b3c4d")
    serialize = request.SerializeToString
    count = max(10_000, int(200_000 * scale))

    def serialize_many() -> None:
        for _ in range(count):
            serialize()

    serialize_s = min(_timed(serialize_many) for _ in range(3))
    return {
        "nbody_us_per_step": nbody_s / steps * 1e6,
        "nbody_5M_steps_s": nbody_s / steps * 5e6,
        "calls_ns_per_iteration": calls_s / n * 1e9,
        "heartbeat_serialize_1e6_s": serialize_s / count * 1e6,
    }


def python_speed_worker(procs: str | None, cpu: int | None, scale: float, conn: Connection) -> None:
    """python_speed() in a process of its own, inside a cgroup and on one CPU (to check a budget's real speed)."""
    if procs is not None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conn.send(python_speed(scale))


def sysbench(prefix: list[str], seconds: float) -> float | None:
    """sysbench 1.0's `cpu` test (primes up to 10000), one thread: events per second; None without sysbench."""
    exe = shutil.which("sysbench")
    if exe is None:
        return None
    try:
        out = subprocess.run([*prefix, exe, "cpu", "--threads=1", f"--time={max(1, round(seconds))}", "run"],
                             capture_output=True, text=True, timeout=seconds + 30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"events per second:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


# --- Raspberry Pi cores ----------------------------------------------------------------------------------------------

# Published single-core figures (docs/BENCHMARKS.md lists the sources):
# - pyperformance 1.x bm_nbody (20,000 steps per value) on a Raspberry Pi 5 (BCM2712, Cortex-A76 2.4 GHz),
#   CPython 3.13.7 built with PGO and LTO: 0.136 s per value (github.com/savannahostrowski/pyperf_bench,
#   results/bm-20250814-3.13.7-bcee1c3, runner "blueberry").
# - "two to three times the CPU performance of Raspberry Pi 4" for the Pi 5 (the Raspberry Pi announcement, as
#   reported by circuitdigest.com and zdnet.com).
# - sysbench 1.0.20 `cpu --threads=1` (primes to 10000), events/s: Pi 3B+ 687.45, Pi 4 1477.83, Pi 5 2737.49
#   (leoncode.co.uk/articles/raspberry-pi-benchmarks).
# - N-body, 5 million steps, Python: 158.3 s on a Pi 4 Model B at 1.5 GHz, performance governor
#   (chaitanyamehta.github.io/projects/performance-analysis-of-programming-languages; 2020, Python version and build
#   not stated: likely Raspbian's 32-bit 3.7, so a pessimistic bound).
# - Pi Zero 2 W: the Pi 3's Cortex-A53 at 1.0 GHz instead of 1.4 GHz (3B+) (forum.digikey.com, "Raspberry Pi 5 vs.
#   Other Models - CPU Test"); Gamess & Hernandez 2022 found an overclocked Zero 2 W about as fast as a 3B / 3B+.
PI5_NBODY_US_PER_STEP = 0.136 / 20_000 * 1e6
PI5_PER_PI4 = (2.0, 3.0)
SYSBENCH_EVENTS = {"Pi 3B+": 687.45, "Pi 4": 1477.83, "Pi 5": 2737.49}
PI4_NBODY_5M_S = 158.3
ZERO2W_PER_3BPLUS = 1.0 / 1.4  # same core, clock ratio


def pi_mapping(here: dict[str, float], sysbench_here: float | None) -> list[dict[str, Any]]:
    """For each Pi, its single core as a share of one core here, by each route: (low, high) or a single value."""
    step = here.get("nbody_us_per_step")
    pi5 = step / PI5_NBODY_US_PER_STEP if step else None
    pi4_py = (pi5 / PI5_PER_PI4[1], pi5 / PI5_PER_PI4[0]) if pi5 else None
    pi4_old = step * 5e6 / 1e6 / PI4_NBODY_5M_S if step else None
    sb = {name: events / sysbench_here for name, events in SYSBENCH_EVENTS.items()} if sysbench_here else {}
    ratio_3b = SYSBENCH_EVENTS["Pi 3B+"] / SYSBENCH_EVENTS["Pi 4"]

    def scaled(pair: tuple[float, float] | None, k: float) -> tuple[float, float] | None:
        return (pair[0] * k, pair[1] * k) if pair else None

    return [
        {"pi": "Pi 5 (Cortex-A76, 2.4 GHz)", "python": (pi5, pi5) if pi5 else None, "old_python": None,
         "sysbench": sb.get("Pi 5"), "how": "pyperformance nbody, CPython 3.13.7 there, 3.11 here"},
        {"pi": "Pi 4 (Cortex-A72, 1.5 GHz)", "python": pi4_py, "old_python": pi4_old, "sysbench": sb.get("Pi 4"),
         "how": "the Pi 5's nbody share / 2..3; the old-Python nbody figure is a lower bound; 1.8 GHz boards up to "
                "1.2x more"},
        {"pi": "Pi 3B+ (Cortex-A53, 1.4 GHz)", "python": scaled(pi4_py, ratio_3b),
         "old_python": pi4_old * ratio_3b if pi4_old else None, "sysbench": sb.get("Pi 3B+"),
         "how": "the Pi 4's shares x the sysbench 3B+/4 ratio 0.47 (an in-order A53 may lose more on an interpreter)"},
        {"pi": "Pi Zero 2 W (Cortex-A53, 1.0 GHz)", "python": scaled(pi4_py, ratio_3b * ZERO2W_PER_3BPLUS),
         "old_python": pi4_old * ratio_3b * ZERO2W_PER_3BPLUS if pi4_old else None,
         "sysbench": sb["Pi 3B+"] * ZERO2W_PER_3BPLUS if "Pi 3B+" in sb else None,
         "how": "the 3B+'s core at 1.0/1.4 of its clock"},
    ]


def mapping_text(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        parts = []
        if row["python"]:
            low, high = row["python"]
            parts.append(f"Python nbody {low:.0%}" + (f"-{high:.0%}" if high != low else ""))
        if row["old_python"]:
            parts.append(f"old-Python nbody {row['old_python']:.0%}")
        if row["sysbench"]:
            parts.append(f"sysbench {row['sysbench']:.0%}")
        out.append(f"   {row['pi']}: {' / '.join(parts) or 'not known'} of one core here ({row['how']})")
    return out
