"""Live clients for the reliability tests: N sessions in one process, each on its own channel and thread,
heartbeating every window/5 for a while, then one JSON summary on stdout.

    python -m tests.support.fault_sessions --target [::1]:PORT --sessions 20 --seconds 5 [--interval 0.04]

A *false expiry* is a heartbeat refused with SESSION_EXPIRED although this client kept sending on time since its
last answered heartbeat (none of its attempts went out more than a quarter window after it was due): the daemon
ended a session whose client was there, because its heartbeats were not answered (timed out) or came too late. (A
client that itself fell behind by a quarter window or more is counted in ``late_sends``; such an expiry shows the
load starved the client, not the daemon.) After any expiry the session is started again, as the Viam SDKs do.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc
from rover_safety.api import robot_pb2, robot_pb2_grpc


@dataclass
class Tally:
    heartbeats: int = 0
    rtts: list[float] = field(default_factory=list)
    expired: int = 0
    false_expiries: int = 0
    late_sends: int = 0
    max_send_gap: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    expiry_gaps: list[float] = field(default_factory=list)
    false_times: list[float] = field(default_factory=list)  # when each falsely refused heartbeat was sent


def run_one(target: str, interval: float, until: float, start_by: float, tally: Tally) -> None:
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    robot = robot_pb2_grpc.RobotServiceStub(channel)
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
        time.sleep(max(0.0, start_by - time.monotonic()))
        reply = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
        sid, window = reply.id, reply.heartbeat_window.ToTimedelta().total_seconds()
        last_ok = time.monotonic()
        # The client's own lateness: how long after it was due (its schedule, or the end of the previous call,
        # whichever is later) each heartbeat went out; the worst since the last answer decides a false expiry.
        done, worst_gap = last_ok, 0.0
        next_at = last_ok + interval
        while True:
            now = time.monotonic()
            if now >= until:
                return
            time.sleep(max(0.0, next_at - now))
            due = max(next_at, done)
            next_at = max(next_at + interval, time.monotonic())
            sent = time.monotonic()
            gap = sent - due
            worst_gap = max(worst_gap, gap)
            tally.max_send_gap = max(tally.max_send_gap, gap)
            if gap >= window / 4:
                tally.late_sends += 1
            try:
                robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=sid), timeout=window)
            except grpc.RpcError as exc:
                done = time.monotonic()
                code = exc.code()
                name = code.name if code else "?"
                tally.errors[name] = tally.errors.get(name, 0) + 1
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    tally.expired += 1
                    tally.expiry_gaps.append(sent - last_ok)
                    if worst_gap < window / 4:
                        tally.false_expiries += 1
                        tally.false_times.append(sent)
                    sid = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5).id
                    last_ok = done = time.monotonic()
                    worst_gap = 0.0
                continue
            answered = done = time.monotonic()
            tally.heartbeats += 1
            tally.rtts.append(answered - sent)
            last_ok, worst_gap = sent, 0.0
    finally:
        channel.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=0.04)
    ap.add_argument("--ready-wait", type=float, default=3.0, help="seconds allowed to connect before starting")
    args = ap.parse_args(argv)
    start_by = time.monotonic() + args.ready_wait
    until = start_by + args.seconds
    tallies = [Tally() for _ in range(args.sessions)]
    threads = [threading.Thread(target=run_one, args=(args.target, args.interval, until, start_by, t), daemon=True)
               for t in tallies]
    print(json.dumps({"ev": "ready", "start_by": start_by}), flush=True)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.seconds + args.ready_wait + 30)
    rtts = [r for t in tallies for r in t.rtts]
    errors: dict[str, int] = {}
    for t in tallies:
        for k, v in t.errors.items():
            errors[k] = errors.get(k, 0) + v
    print(json.dumps({
        "ev": "summary",
        "sessions": args.sessions,
        "heartbeats": sum(t.heartbeats for t in tallies),
        "expired": sum(t.expired for t in tallies),
        "false_expiries": sum(t.false_expiries for t in tallies),
        "late_sends": sum(t.late_sends for t in tallies),
        "max_send_gap_ms": 1000 * max((t.max_send_gap for t in tallies), default=0.0),
        "expiry_gaps_ms": [round(1000 * g, 1) for t in tallies for g in t.expiry_gaps],
        "false_times": sorted(x for t in tallies for x in t.false_times),
        "errors": errors,
        "rtt_ms": {"p50": 1000 * pct(rtts, 0.5), "p99": 1000 * pct(rtts, 0.99), "max": 1000 * max(rtts, default=0)},
        "started_at": start_by,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
