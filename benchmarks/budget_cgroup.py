"""CPU budgets for bench_budget.py: a cgroup that holds a process to a fraction of one core, and a pinned CPU.

The fraction is CFS bandwidth control: a quota of CPU time per period. On cgroup v2 that is ``cpu.max``; where the
cpu controller is bound to a v1 hierarchy instead (this machine: /sys/fs/cgroup/cpu, with only hugetlb on the v2 mount),
it is ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. A v1 group on a kernel with CONFIG_RT_GROUP_SCHED also needs a
real-time budget (``cpu.rt_runtime_us``, 0 in a new group) before any thread in it may run SCHED_FIFO, as the daemon's
deadline and stop threads do: it gets the same fraction of the same period. CFS bandwidth does not apply to
real-time threads, so on v2 (no real-time budget) they are not held to the fraction at all.

The kernel refuses a quota or a period below 1 ms. With the default ("auto") the period is the shortest that allows
the fraction, e.g. 1 ms of every 4 ms for 25 %: the shorter the period, the shorter each stall once the quota is used
up ((1 - fraction) x period), and the closer a throttled fast core comes to a slow one that never stops.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

MIN_QUOTA_US = 1000  # the kernel's least quota and period
RT_PERIOD_UNLIMITED_US = 100_000  # the real-time period of a group without a CFS quota
ROOT_RT_SHARE = 0.95  # sched_rt_runtime_us / sched_rt_period_us by default: what children may share


@dataclass(frozen=True)
class Budget:
    """A share of one core: `fraction` (1.0 = all of it, no quota) and the CFS period (None: the shortest possible)."""

    fraction: float
    period_us: int | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """'25' (per cent of one core) or '25@100000' (with a period of 100000 us)."""
        share, _, period = text.partition("@")
        fraction = float(share.rstrip("%")) / 100
        if not 0 < fraction <= 1:
            raise ValueError(f"budget {text!r}: the share must be in (0, 100] per cent of one core")
        return cls(fraction, int(period) if period else None)

    @property
    def limited(self) -> bool:
        return self.fraction < 1.0

    def quota_period(self) -> tuple[int | None, int]:
        """(quota us or None for no quota, period us)."""
        if not self.limited:
            return None, self.period_us or 100_000
        period = self.period_us or math.ceil(MIN_QUOTA_US / self.fraction)
        quota = round(self.fraction * period)
        if quota < MIN_QUOTA_US or period < MIN_QUOTA_US:
            raise ValueError(f"{self.label}: quota {quota} us / period {period} us is below the kernel's 1 ms")
        return quota, period

    @property
    def label(self) -> str:
        """'25%', or '25% @100ms' when the period is given."""
        return f"{self.fraction * 100:g}%" + (f" @{self.period_us / 1000:g}ms" if self.period_us else "")


@dataclass(frozen=True)
class Throttle:
    """CFS bandwidth counters of a group (cumulative): periods, periods throttled, time throttled."""

    periods: int = 0
    throttled: int = 0
    throttled_s: float = 0.0

    def __sub__(self, other: Throttle) -> Throttle:
        return Throttle(self.periods - other.periods, self.throttled - other.throttled,
                        self.throttled_s - other.throttled_s)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            out.append((fields[1], fields[2], fields[3].split(",")))
    return out


class Cgroup:
    """One child cgroup with the cpu controller, made for one budget and removed afterwards."""

    def __init__(self, path: Path, version: int, budget: Budget) -> None:
        self.path = path
        self.version = version
        self.budget = budget
        self.quota_us, self.period_us = budget.quota_period()
        self.rt_runtime_us: int | None = None
        self.rt_period_us: int | None = None
        self._enabled_cpu_in: Path | None = None
        self.weight = 100  # cpu.weight (v2) or its equivalent in cpu.shares (v1)

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def describe(self) -> str:
        quota = "no quota" if self.quota_us is None else f"quota {self.quota_us} us per {self.period_us} us period"
        rt = (f"; real-time budget {self.rt_runtime_us} us per {self.rt_period_us} us"
              if self.rt_runtime_us is not None else "")
        return f"cgroup v{self.version} {self.path}: {quota}{rt}; weight {self.weight}"

    def throttle(self) -> Throttle:
        try:
            stat = dict(line.split(" ", 1) for line in (self.path / "cpu.stat").read_text().splitlines() if " " in line)
        except OSError:
            return Throttle()
        if self.version == 2:
            return Throttle(int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0)),
                            int(stat.get("throttled_usec", 0)) / 1e6)
        return Throttle(int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0)),
                        int(stat.get("throttled_time", 0)) / 1e9)

    def remove(self) -> None:
        """Move whatever is left to the parent, then remove the group (retried briefly: exiting tasks linger)."""
        parent = self.path.parent / "cgroup.procs"
        if self.rt_runtime_us is not None:  # give the real-time budget back now: a removed group's lingers a while
            with contextlib.suppress(OSError):
                for pid in self.procs.read_text().split():
                    with contextlib.suppress(OSError):
                        _write(parent, pid)
                _write(self.path / "cpu.rt_runtime_us", "0")
        for _ in range(50):
            with contextlib.suppress(OSError):
                for pid in self.procs.read_text().split():
                    with contextlib.suppress(OSError):
                        _write(parent, pid)
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if self._enabled_cpu_in is not None:  # we enabled the controller for this; give it back if nothing uses it
            with contextlib.suppress(OSError):
                _write(self._enabled_cpu_in / "cgroup.subtree_control", "-cpu")


def find_cpu_hierarchy() -> tuple[Path, int] | str:
    """Where a cpu-controlled child group can be made: (parent directory, cgroup version), or why not."""
    if os.geteuid() != 0:
        return "not running as root: cannot create a cgroup"
    mounts = _mounts()
    for point, kind, _ in mounts:
        if kind == "cgroup2":
            controllers = Path(point, "cgroup.controllers")
            with contextlib.suppress(OSError):
                if "cpu" in controllers.read_text().split():
                    return Path(point), 2
    for point, kind, options in mounts:
        if kind == "cgroup" and "cpu" in options:
            return Path(point), 1
    found = ", ".join(f"{p} ({k})" for p, k, _ in mounts) or "none"
    return f"no cgroup hierarchy offers the cpu controller (cgroup mounts: {found})"


UNIT_CPU_WEIGHT = 1000  # systemd/rover-safety.service: CPUWeight=1000 (v2 weight; v1 shares = weight x 1024 / 100)


def create(budget: Budget, name: str, weight: int = UNIT_CPU_WEIGHT) -> Cgroup:
    """A new child group `name` limited to `budget`; raises OSError (or ValueError) when that is impossible."""
    found = find_cpu_hierarchy()
    if isinstance(found, str):
        raise OSError(found)
    parent, version = found
    path = parent / name
    if path.exists():
        path.rmdir()  # a leftover of an interrupted run (empty, or this fails)
    group = Cgroup(path, version, budget)
    if version == 2:
        subtree = parent / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            _write(subtree, "+cpu")
            group._enabled_cpu_in = parent
        path.mkdir()
        try:
            _write(path / "cpu.max", f"{group.quota_us if group.quota_us is not None else 'max'} {group.period_us}")
            _write(path / "cpu.weight", str(weight))
            group.weight = weight
        except OSError:
            group.remove()
            raise
        return group
    path.mkdir()
    try:
        _write(path / "cpu.cfs_period_us", str(group.period_us))
        _write(path / "cpu.cfs_quota_us", str(group.quota_us if group.quota_us is not None else -1))
        _write(path / "cpu.shares", str(weight * 1024 // 100))
        group.weight = weight
        rt_file = path / "cpu.rt_runtime_us"
        if rt_file.exists():  # CONFIG_RT_GROUP_SCHED: without a real-time budget SCHED_FIFO is refused in the group
            rt_period = group.period_us if group.quota_us is not None else RT_PERIOD_UNLIMITED_US
            rt_runtime = int(min(budget.fraction, ROOT_RT_SHARE) * rt_period)
            _write(path / "cpu.rt_period_us", str(rt_period))
            for attempt in range(50):  # EINVAL while a just-removed group still holds its share of the root's
                try:
                    _write(rt_file, str(rt_runtime))
                    break
                except OSError:
                    if attempt == 49:
                        raise
                    time.sleep(0.2)
            group.rt_period_us, group.rt_runtime_us = rt_period, rt_runtime
    except OSError:
        group.remove()
        raise
    return group


def launcher(group: Cgroup | None, cpu: int | None, nice: int = 0) -> list[str]:
    """argv prefix that runs a command inside `group`, pinned to `cpu`, at `nice`: the shell joins the group, then
    execs taskset and nice, which exec the command; all are the same process, so it starts inside the budget."""
    prefix: list[str] = []
    if group is not None:
        prefix = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group.procs)]
    if cpu is not None:
        prefix += ["taskset", "-c", str(cpu)]
    if nice:
        prefix += ["nice", "-n", str(nice)]
    return prefix


def pin_all_threads(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a running process (threads it starts later inherit it from their creator)."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def realtime_all_threads(pid: int, priority: int) -> bool:
    """SCHED_FIFO for every thread of a running process; False if refused."""
    ok = True
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(priority))
            except OSError:
                ok = False
    return ok
