"""Render docs/RELIABILITY.md from the figures the reliability tests recorded (build/reliability.json) and the
last soak (build/soak.json, written by scripts/soak.py).

    .venv/bin/python scripts/reliability_report.py [--results build/reliability.json] [--soak build/soak.json]

The soak takes an hour and is not part of `make reliability`: when build/soak.json is missing, the soak result
already in the document (kept in an HTML comment) is carried over, so the table always shows the last one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
DOC = CHECKOUT / "docs" / "RELIABILITY.md"
SOAK_MARK = re.compile(r"<!-- soak-result: (\{.*\}) -->")

# The table's order (rows not named here follow, by key).
ORDER = [
    "client-sigkill", "network-partition", "client-sigstop", "daemon-sigterm-restart", "daemon-sigkill",
    "daemon-hang-watchdog", "stalled-streams-idle-connections", "idle-connections-lockout", "connection-churn",
    "heartbeat-flood-200ms",
    "heartbeat-flood-2s", "cpu-starvation-root", "cpu-starvation-no-caps", "cpu-starvation-unit",
    "pigpiod-restart", "pigpiod-lost-idle", "pigpiod-lost-motion", "pigpiod-hung", "log-blocked",
    "journald-frozen", "wall-clock-jumps",
]

INTRO = """# Reliability: every fault, measured

Issue 9: *one client cannot stall the rest*, and a figure for every fault. Each row below is one test that injects
the fault into `rover-safety serve` running as a real process (or under the shipped unit in a real systemd), on
the pigpiod emulator, and measures from outside: when a PWM output went to duty 0 comes from pigpiod's own command
log (CLOCK_MONOTONIC, the clock of every process here), and the deadline from the client's own calls: never before
the last answered heartbeat's *send* + window (a stop before that is **early**), and at most 5 ms after its
*answer* + window (**in bounds**). A **false expiry** is a session ended although its client kept sending
heartbeats on time (each within a quarter window of when it was due), because the daemon did not answer them.

This file is generated: `make reliability` runs the tests (tests/test_reliability*.py and the linked ones), which
record their figures in `build/reliability.json`, then `scripts/reliability_report.py` writes this page. The soak
(`scripts/soak.py --minutes 60`) is run by hand; its last result is kept below. Tests assert generous bounds (a
shared, noisy 2-core machine); the figures say how close it really
is. Defects the tests found were strict xfails until fixed (below, with what fixed each); a row marked **known
limitation** would be one still open.

Needs root (network namespaces, a throwaway systemd, `setpriv`, real-time priorities), the PyPI package `h2` (the
raw HTTP/2 client) and Debian's `faketime` (libfaketime); `make reliability` installs both if missing.
"""

DEFECTS = """## Defects these tests found, and what fixed them

Each was first a strict xfail; each fix turned its row green (the rows above are measured with the fixes).

1. **A heartbeat flood from one host expired everyone else at a 200 ms window** (`heartbeat-flood-200ms`). The
   per-owner limit (`calls_in_flight_per_owner`, 64) counts calls inside the handler, but gRPC accepted
   16 streams x 64 connections = 1,024 calls from one host, and grpc.aio queues every one of them on the serving
   loop before the front door sees it. A live heartbeat waited behind ~1,000 flood calls: ~300 ms, past its
   200 ms deadline. *First fix*: `STREAMS_PER_CONNECTION` 4 (`daemon/wire/__init__.py`) and at most
   `connections_per_peer` (16) connections of one host with calls in flight (`daemon/wire/gate.py`). That held
   here (live round trips p99 ~100 ms) but not on CI's slower machine (65 false expiries; p99 195 ms): a flood call
   is answered in microseconds, so its connection is never "busy" and all 64 counted, 256 calls queued at once;
   and a refusal costs the loop as much as an answer, so refusing at once would not have helped. *Fixed* by a
   call rate per client (`calls_per_second_per_owner`, 500/s; never counted: stops, and heartbeats of one's own
   live sessions up to 10 per window or 50/s each) whose refusals are held 0.5-1.5 s before `RESOURCE_EXHAUSTED`, as
   are those of a host over its connections: a flooder's stream then costs the loop one refusal a second. Live
   round trips under the same flood: p99 3-7 ms here, 45 ms with the whole test on one core. The client library
   heartbeats on a connection of its own, so its own long calls never hold its heartbeats behind the 4 streams.
2. **A log that blocked stalled every RPC** (`log-blocked`): session events were logged on the serving loop, so a
   full stderr pipe blocked it. *Fixed*: every log record goes through a bounded queue
   (`logging.handlers.QueueHandler`) to a thread of its own (`QueueListener`, started with every signal blocked);
   when the queue is full the record is dropped and counted, and one line says how many once it drains.
3. **A frozen journald froze the whole daemon** (`journald-frozen`): systemd-python's `journal.send` blocks in
   `sendmsg` holding the GIL once journald's socket queue is full, and every thread stopped, the deadline thread
   included (the watchdog then aborted it: safe, but down). *Fixed*: `daemon/journal_socket.py` speaks journald's
   native protocol on a non-blocking `AF_UNIX` datagram socket; a full queue drops the line and counts it.
4. **A host that reconnected often was refused for a minute** (`connection-churn`; the soak hit it too): a peer
   address counted as open until a minute after its last call. *Fixed*: only connections with calls in flight count
   against `connections_per_peer`; an idle one is forgotten, least recently used first, when its host needs room.

## Known limitation

5. **Idle connections from one host can fill the daemon's 512** (`idle-connections-lockout`: its row records it,
   and the test asserts what the daemon does guarantee around it):
   `max_connections` is gRPC's `grpc.max_allowed_incoming_connections`, a global count, and gRPC Python has no
   hook where a connection could be refused per source before it is accepted, so 600 idle connections (preface +
   SETTINGS) from one host leave a new client of another host without a slot. Clients already connected keep
   their sessions and drive, and a new client gets in as soon as the idle connections close. What the daemon
   does: connections without calls are closed after a minute (`grpc.max_connection_idle_ms`), which ends the
   lock-out once the attacker stops reconnecting. What the rover should do: the nftables rule in
   [SECURITY.md](SECURITY.md), which caps new connections per source before the daemon sees them (the test runs
   without it, to show the daemon's own behaviour).

## Other observations

- **Queued heartbeats stretch only by their wait at the front door.** A heartbeat counts from when the serving loop
  first runs its call (the front door), not from when it reached the socket; before the fix of defect 1, under the
  1,024-call flood at a 2 s window, the killed flooder's motor stopped up to ~70 ms after kill + 2 s (the old sync
  daemon: up to 446 ms). The `heartbeat-flood-2s` row has today's figure.
- **A heartbeat can be answered OK and extend nothing.** When a heartbeat waits longer than the window between
  the front door and its handler (only under load well past the table's: e.g. 8 spinning processes plus the soak's
  floods), `find_by_id` keeps the old deadline (`max(deadline, heard + window)`) and answers OK; the client's next
  heartbeat is then refused as expired. Safe (never a later stop), but the client was told it was alive.
- **SCHED_FIFO is refused under the unit on this test machine** (`cpu-starvation-unit` records the daemon's
  warning): its kernel has `CONFIG_RT_GROUP_SCHED=y`, so a real-time thread needs an RT budget in its cgroup,
  which systemd does not give (LimitRTPRIO= is not enough). The deadline and stop threads then run at the unit's
  Nice=-10, which held here (0 false expiries, stops in time). Check the warning on the rover's kernel.
- **A CPU-starved pigpiod makes the daemon exit.** The health check's command timeout is half the window (100 ms
  at 200 ms); in a soak where the emulator itself was starved (CPU bursts on a machine at load 8-16), a 150 ms
  silence was taken for a lost backend: exit 1 (under the unit: safe-stop and restart, every session lost).
  Measured with the emulator as SCHED_FIFO since (like pigpiod's DMA, it is the measuring equipment here); on a
  busy Pi consider `Nice=`/`CPUSchedulingPolicy=` for pigpiod.service, or a longer timeout for the health check
  than for commands on the stop path.
- **libfaketime slows the daemon** when it re-reads its timestamp file on every clock call (`FAKETIME_NO_CACHE=1`):
  stops up to ~57 ms late with or without jumps. The test uses `FAKETIME_CACHE_DURATION=1`; with it the jumps
  (+3 h, -7 h, +26 h, -30 d, +400 d, ...) change nothing measurable.
"""


def load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def soak_row(soak: dict[str, Any]) -> list[str]:
    if not soak:
        return ["soak: random clients, faults (SIGKILL, SIGSTOP, CPU bursts, floods) and reloads", "`scripts/soak.py`",
                "0", "not run yet", "", "not run"]
    late = soak.get("late_ms", {})
    live = soak.get("live", {})
    faults = ", ".join(f"{k} {v}" for k, v in sorted(soak.get("faults", {}).items()))
    return [
        f"soak, {soak['minutes']:g} min: random clients, faults ({faults}) and {soak.get('reloads', 0)} reloads",
        f"`scripts/soak.py --minutes {soak['minutes']:g} --seed {soak.get('seed')}` ({soak.get('finished', '')}"
        + (f"; limits {', '.join(f'{k} {v}' for k, v in sorted(soak['limits'].items()))}" if soak.get("limits")
           else "; the daemon's default limits") + ")",
        str(soak.get("trials", 0)),
        f"{soak.get('in_bounds', 0)}/{soak.get('trials', 0)} off within window + 5 ms, {soak.get('early', 0)} early; "
        f"{live.get('false_expiries', 0)} false expiries in {live.get('heartbeats', 0)} live heartbeats"
        + (f" (during: {', '.join(f'{k} {v}' for k, v in sorted(soak['false_expiries_during'].items()))})"
           if soak.get("false_expiries_during") else "") + "; daemon "
        f"{'alive' if soak.get('daemon_alive') else 'DIED'}",
        f"off - (answer + W): p50 {late.get('p50', 0):.1f} / p99 {late.get('p99', 0):.1f} / max "
        f"{late.get('max', 0):.1f} ms",
        "pass" if soak.get("passed") else "**FAIL**: " + cell("; ".join(soak.get("problems", []))[:300]),
    ]


def render(results: dict[str, Any], soak: dict[str, Any]) -> str:
    rows: dict[str, Any] = results.get("rows", {})
    keys = [k for k in ORDER if k in rows] + sorted(k for k in rows if k not in ORDER)
    out = [INTRO, "## The table", "",
           "| fault or bad-input class | test | trials | outcome | figure (ms) | result |",
           "|---|---|---|---|---|---|"]
    for key in keys:
        row = rows[key]
        test = row["test"].replace("tests/", "")
        linked = " (linked)" if row.get("kind") == "linked" else ""
        result = "pass" if row.get("passed") else "**FAIL**"
        if not row.get("passed") and row.get("problems"):
            result += ": " + cell("; ".join(row["problems"]))[:300]
        out.append(f"| {cell(row['fault'])} | `{cell(test)}`{linked} | {row.get('trials', 0)} | "
                   f"{cell(row.get('outcome', ''))} | {cell(row.get('figure', ''))} | {result} |")
    out.append("| " + " | ".join(cell(c) for c in soak_row(soak)) + " |")
    machine = results.get("machine", {})
    total = sum(float(r.get("seconds", 0)) for r in rows.values())
    out += ["", f"Measured on {machine.get('cpus', '?')} CPUs (load average at the last record: "
            f"{', '.join(f'{x:.2f}' for x in machine.get('load', []))}); the tests' own time: {total:.0f} s.", ""]
    out.append(DEFECTS)
    out += ["## Every figure", "", "What each test recorded (milliseconds unless named otherwise).", ""]
    for key in keys:
        row = rows[key]
        out += [f"### {key}", "", f"`{row['test']}` ({row.get('seconds', 0)} s, {row.get('recorded', '')})", "",
                "```json", json.dumps(row.get("figures", {}), indent=1, sort_keys=True, default=str), "```", ""]
    out.append(f"<!-- soak-result: {json.dumps(soak, sort_keys=True)} -->" if soak else "")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render docs/RELIABILITY.md from the recorded figures")
    ap.add_argument("--results", type=Path, default=CHECKOUT / "build" / "reliability.json")
    ap.add_argument("--soak", type=Path, default=CHECKOUT / "build" / "soak.json")
    ap.add_argument("--out", type=Path, default=DOC)
    args = ap.parse_args(argv)
    results = load(args.results)
    if not results.get("rows"):
        print(f"no figures in {args.results}: run `make reliability`", file=sys.stderr)
        return 1
    soak = load(args.soak)
    if not soak and args.out.exists():
        found = SOAK_MARK.search(args.out.read_text())
        soak = json.loads(found.group(1)) if found else {}
    args.out.write_text(render(results, soak))
    print(f"wrote {args.out} ({len(results['rows'])} rows{', soak' if soak else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
