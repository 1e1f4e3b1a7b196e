"""What the GIL costs a real-time thread when another thread is busy in Python, at CPython's default switch interval
(5 ms) and at the daemon's (`daemon/realtime.py` GIL_SWITCH_INTERVAL).

    python -m benchmarks.bench_gil [--seconds 3] [--rounds 3]

One thread runs pure Python without pause (as the event loop does while calls keep arriving); a SCHED_FIFO thread
(as the deadline thread, when the kernel allows it) waits 3 ms at a time and records how late it got the GIL back.
The rounds alternate between the two intervals, so other load on the machine weighs on both alike. Always exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from rover_safety.daemon.realtime import GIL_SWITCH_INTERVAL

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_gil.py` as well as `python -m benchmarks.bench_gil`
    sys.path.insert(0, str(ROOT))

from benchmarks.stats import pct  # noqa: E402

DEFAULT_INTERVAL = 0.005  # CPython's
WAIT = 0.003


def busy(until: float) -> None:
    x = 0
    while time.monotonic() < until:
        for i in range(1000):
            x += i


def timer(until: float, lateness: list[float], policy: list[str]) -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        policy.append("SCHED_FIFO 10")
    except OSError as exc:
        policy.append(f"SCHED_OTHER ({exc.strerror})")
    wake = threading.Event()
    while time.monotonic() < until:
        due = time.monotonic() + WAIT
        wake.wait(WAIT)
        lateness.append(time.monotonic() - due)


def one_round(interval: float, seconds: float) -> tuple[list[float], str]:
    """Lateness of each wake-up (s) under a busy thread, with the switch interval at `interval`."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        until = time.monotonic() + seconds
        lateness: list[float] = []
        policy: list[str] = []
        threads = [threading.Thread(target=busy, args=(until + 0.05,)),
                   threading.Thread(target=timer, args=(until, lateness, policy))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return lateness, policy[0]
    finally:
        sys.setswitchinterval(saved)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each interval, alternating")
    args = p.parse_args(argv)
    results: dict[float, list[float]] = {DEFAULT_INTERVAL: [], GIL_SWITCH_INTERVAL: []}
    policy = ""
    for _ in range(args.rounds):
        for interval in results:
            lateness, policy = one_round(interval, args.seconds)
            results[interval] += lateness
    print(f"# a {policy} thread waking every {WAIT * 1000:.0f} ms while another thread runs Python without pause; "
          f"{args.rounds} x {args.seconds:g} s per interval, alternating; CPython {sys.version.split()[0]}\n")
    print("| switch interval | wake-ups | late by, ms p50 / p99 / max |")
    print("|---|---:|---|")
    for interval, lateness in results.items():
        name = "CPython's default" if interval == DEFAULT_INTERVAL else "the daemon's"
        print(f"| {interval * 1000:g} ms ({name}) | {len(lateness)} | {pct(lateness, 0.5) * 1000:.3f} / "
              f"{pct(lateness, 0.99) * 1000:.3f} / {max(lateness) * 1000:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
