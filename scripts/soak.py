"""Soak: random clients, faults and reloads against one `rover-safety serve` for a while, checking every stop.

    .venv/bin/python scripts/soak.py --minutes 60 [--out build/soak.json]

The daemon runs as a process on a standalone pigpiod emulator (tests/support/faults.py). In turn, clients (each a
process) start a session, drive a motor and heartbeat, and then meet a fault picked at random: SIGKILL, SIGSTOP
(then SIGCONT: the old id must be refused), or a CPU burst (4 spinning processes) or a small flood (64 calls in
flight from one host) while they are killed; between trials the config is reloaded now and then with another
heartbeat window (SIGHUP). Each stop is measured in pigpiod's command log against the deadline the client's own
heartbeats set. Meanwhile five other sessions heartbeat every 40 ms and count false expiries. The result (JSON)
goes to --out, which scripts/reliability_report.py puts in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from tests.support.faults import (  # noqa: E402
    PYTHON,
    ClientProc,
    busy_cpus,
    daemon,
    deadline_of,
    emulator,
    first_off,
    ms_stats,
    pwm_pin,
    rover_yaml,
    run_sessions,
    sessions_summary,
)
from tests.support.waiting import poll  # noqa: E402

WINDOWS = ("200ms", "300ms", "500ms", "1s")
# The daemon's own limits: every trial is a new client process, so a new connection, which the gate must take
# (an idle connection makes room; the defect `connection-churn` in docs/RELIABILITY.md, fixed).
LIMITS: dict[str, int] = {}
IN_BOUNDS = 0.005


def seconds_of(window: str) -> float:
    return float(window[:-2]) / 1000 if window.endswith("ms") else float(window[:-1])


def reloaded(lines: list[tuple[float, str]]) -> int:
    """How many reloads the daemon has logged (its stderr lines, as `Served.lines` has them)."""
    return sum(1 for _, line in lines if "reloaded" in line)


def reloaded_past(lines: list[tuple[float, str]], count: int) -> bool:
    """Whether the daemon has logged more than `count` reloads."""
    return reloaded(lines) > count


def soak(minutes: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    end = time.monotonic() + 60 * minutes
    late: list[float] = []
    margin: list[float] = []
    faults: dict[str, int] = {}
    problems: list[str] = []
    live_totals = {"heartbeats": 0, "false_expiries": 0, "expired": 0, "late_sends": 0}
    false_times: list[float] = []
    periods: list[tuple[str, float, float]] = []  # (what, from, to): each trial's fault, each reload
    reloads = 0
    trials = 0
    window = "200ms"
    with tempfile.TemporaryDirectory(prefix="rover-soak-") as tmp, emulator(realtime=True) as emu:
        path = Path(tmp)
        with daemon(path, rover_yaml(emu.port, window=window, motors=4, limits=LIMITS)) as rover:
            address = f"127.0.0.1:{rover.port}"
            live = run_sessions(address, 5, min(60.0, 60 * minutes), 0.04)
            live_until = time.monotonic() + min(60.0, 60 * minutes) + 3
            while time.monotonic() < end and rover.alive():
                if time.monotonic() > live_until:  # the live sessions run in 60 s chunks
                    summary = sessions_summary(live, 60)
                    for k in live_totals:
                        live_totals[k] += int(summary[k])
                    false_times += summary.get("false_times", [])
                    chunk = max(5.0, min(60.0, end - time.monotonic()))
                    live = run_sessions(address, 5, chunk, 0.04)
                    live_until = time.monotonic() + chunk + 3
                if rng.random() < 0.15:  # reload with another window (applies to new sessions at once)
                    reload_at = time.monotonic()
                    window = rng.choice(WINDOWS)
                    (path / "rover.yaml").write_text(rover_yaml(emu.port, window=window, motors=4, limits=LIMITS))
                    count = reloaded(rover.lines)
                    rover.signal(signal.SIGHUP)
                    if not poll(functools.partial(reloaded_past, rover.lines, count), 10, 0.05):
                        problems.append("a reload was not applied within 10 s")
                    reloads += 1
                    periods.append(("reload", reload_at, time.monotonic()))
                w = seconds_of(window)
                motor = f"m{rng.randrange(4)}"
                fault = rng.choice(("sigkill", "sigkill", "sigstop", "cpu-burst", "flood"))
                faults[fault] = faults.get(fault, 0) + 1
                client = ClientProc(address, motor, interval=w / 5, timeout=w, recover=fault == "sigstop")
                flood: subprocess.Popen[bytes] | None = None
                began = time.monotonic()
                try:
                    client.ready().go()
                    client.wait_count(lambda e: e["ev"] == "ok" and e["what"] == "hb", rng.randint(2, 8), 10,
                                      "heartbeats")
                    drive = client.wait_for(lambda e: e["ev"] == "ok" and e["what"] == "drive", 1, "drive")
                    if fault == "flood":
                        flood = subprocess.Popen(
                            [PYTHON, "-m", "tests.support.fault_flood", "--target", address, "--channels", "4",
                             "--per-channel", "16", "--seconds", "3"], stdout=subprocess.DEVNULL, cwd=CHECKOUT)
                        time.sleep(1.0)
                    time.sleep(rng.uniform(0, w / 5))
                    sig = signal.SIGSTOP if fault == "sigstop" else signal.SIGKILL
                    if fault == "cpu-burst":
                        with busy_cpus(4, w + 5):
                            time.sleep(0.3)
                            cut = client.signal(sig)
                            off = first_off(emu, pwm_pin(motor), drive["a"], w + 3)
                    else:
                        cut = client.signal(sig)
                        off = first_off(emu, pwm_pin(motor), drive["a"], w + 3)
                    trials += 1
                    if off is None:
                        problems.append(f"{fault}: {motor} never stopped")
                        continue
                    bounds = deadline_of(client.calls(), cut, w)
                    late.append(off - bounds.hi)
                    margin.append(off - bounds.lo)
                    if fault == "sigstop":
                        time.sleep(rng.uniform(0, 0.5))
                        resumed = client.signal(signal.SIGCONT)
                        client.wait_for(lambda e, r=resumed: e["ev"] == "err" and e["what"] == "hb"
                                        and e["a"] >= r and e["code"] == "INVALID_ARGUMENT", 10, "old id refused")
                except AssertionError as exc:
                    problems.append(f"{fault}: {exc}")
                finally:
                    periods.append((fault, began, time.monotonic()))
                    client.close()
                    if flood is not None:
                        flood.kill()
                        flood.wait(10)
            summary = sessions_summary(live, 120)
            for k in live_totals:
                live_totals[k] += int(summary[k])
            false_times += summary.get("false_times", [])
            alive = rover.alive()
            exit_text = "" if alive else rover.text[-2000:]
    # Which fault (or reload) was under way when each false expiry happened (within 1 s).
    during: dict[str, int] = {}
    for t in false_times:
        kinds = sorted({k for k, a, b in periods if a - 1 <= t <= b + 1}) or ["none"]
        for k in kinds:
            during[k] = during.get(k, 0) + 1
    early = sum(1 for m in margin if m < 0)
    in_bounds = sum(1 for la, m in zip(late, margin, strict=True) if la <= IN_BOUNDS and m >= 0)
    if early:
        problems.append(f"{early} stops before the deadline")
    if not alive:
        problems.append(f"the daemon died: {exit_text}")
    if live_totals["false_expiries"]:
        problems.append(f"{live_totals['false_expiries']} false expiries of the live sessions")
    return {
        "minutes": minutes, "seed": seed, "trials": trials, "faults": faults, "reloads": reloads,
        "in_bounds": in_bounds, "early": early, "late_ms": ms_stats(late), "after_earliest_deadline_ms":
        ms_stats(margin), "live": live_totals, "false_expiries_during": during, "daemon_alive": alive,
        "problems": problems[:20],
        "limits": LIMITS, "passed": not problems, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--out", type=Path, default=CHECKOUT / "build" / "soak.json")
    args = ap.parse_args(argv)
    # SIGTERM ends the soak through its `finally`s, so that its daemon, emulator and clients end with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    result = soak(args.minutes, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
