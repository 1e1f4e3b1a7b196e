"""The client processes of bench_budget.py: heartbeating sessions, expiry lanes and timer witnesses.

Each runs in a process of its own (multiprocessing, spawn), pinned to the CPUs the daemon does not use and outside its
cgroup (the witnesses excepted: they share the daemon's CPU and cgroup on purpose), and talks to the benchmark over a
Pipe. Calls send request bytes as they are (no serializers), on the method paths of Viam's API, so the same clients
drive any version of the daemon.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from rover_safety.api import robot_pb2, safety_pb2

from benchmarks.bench_stop import LaneRecord as LaneRecord  # re-exported: bench_budget reads lane records
from benchmarks.bench_stop import expiry_client, timer_lateness

START_SESSION = "/viam.robot.v1.RobotService/StartSession"
HEARTBEAT = "/viam.robot.v1.RobotService/SendSessionHeartbeat"
CLOSE_SESSION = "/rover_safety.v1.SafetyService/CloseSession"
CALL_TIMEOUT = 2.0  # seconds; a heartbeat answered later than this is a failure anyway (the window is shorter)

Call = Callable[..., Any]


def _raw(channel: grpc.Channel, method: str) -> Call:
    return channel.unary_unary(method, None, None)


CLIENT_NICE = -5  # clients outrank ordinary load on a shared machine (their own delays would read as the daemon's)


def _pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(OSError):
        os.nice(CLIENT_NICE - os.nice(0))


def _describe(exc: grpc.RpcError) -> str:
    """'UNAVAILABLE: <the first words of the details>'."""
    if not isinstance(exc, grpc.Call):
        return type(exc).__name__
    code = exc.code()
    return f"{code.name if code is not None else '?'}: {(exc.details() or '')[:70]}"


def _expired(exc: grpc.RpcError) -> bool:
    return isinstance(exc, grpc.Call) and "SESSION_EXPIRED" in (exc.details() or "")


@dataclass
class PaceStats:
    """What one heartbeat process saw while pacing its sessions."""

    sent: int = 0
    rtt: list[float] = field(default_factory=list)  # seconds, answered heartbeats only
    expired: list[str] = field(default_factory=list)  # sessions refused with SESSION_EXPIRED (false expiries)
    errors: dict[str, int] = field(default_factory=dict)  # other failures by status code
    max_gap: float = 0.0  # longest time between two heartbeats sent for one session (the refused one included)
    gap_at_expiry: list[float] = field(default_factory=list)  # for each refused session: the gap before the refusal
    lateness: list[float] = field(default_factory=list)  # how late each heartbeat left this client (its own delay)


def _pace(call: Call, request: bytes, session_id: str, first: float, interval: float, halt: threading.Event,
          stats: PaceStats, lock: threading.Lock) -> None:
    """One session's heartbeats, like Viam's SDKs: one every `interval`, each after the previous one was answered.
    `lateness` separates the client's own delays (a starved client process) from the daemon's: a heartbeat is due
    `interval` after the previous one was sent, or when it was answered if that is later."""
    due, last = first, 0.0
    while not halt.is_set():
        if (delay := due - time.monotonic()) > 0 and halt.wait(delay):
            return
        sent = time.monotonic()
        gap = sent - last if last else 0.0
        began = time.perf_counter()
        try:
            call(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            with lock:
                stats.sent += 1
                stats.lateness.append(sent - due)
                stats.max_gap = max(stats.max_gap, gap)
                if _expired(exc):
                    stats.expired.append(session_id)
                    stats.gap_at_expiry.append(gap)
                    return  # an SDK would start a new session; this one is over
                code = _describe(exc)
                stats.errors[code] = stats.errors.get(code, 0) + 1
        else:
            rtt = time.perf_counter() - began
            with lock:
                stats.sent += 1
                stats.rtt.append(rtt)
                stats.lateness.append(sent - due)
                stats.max_gap = max(stats.max_gap, gap)
        last = sent
        due = max(sent + interval, time.monotonic())


Hammered = tuple[int, list[float], dict[str, int]]


def _hammer(call: Call, request: bytes, begin: float, end: float, results: list[Hammered], k: int) -> None:
    """Heartbeats back to back from `begin` to `end`: (answered in time, their round trips, failures by status code)
    in results[k]. Calls start at once (so that the session, started just before, never lapses while it waits for
    `begin`), but only those sent from `begin` on count. A failed call is retried 10 ms later (no spinning)."""
    done = 0
    lat: list[float] = []
    failed: dict[str, int] = {}
    while time.monotonic() < end:
        counted = time.monotonic() >= begin
        began = time.perf_counter()
        try:
            call(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            if counted:
                code = _describe(exc)
                failed[code] = failed.get(code, 0) + 1
            time.sleep(0.01)
            continue
        if counted and time.monotonic() <= end:
            done += 1
            lat.append(time.perf_counter() - began)
    results[k] = (done, lat, failed)


# Sessions per channel (HTTP/2 connection). An SDK client has one session on its own connection; 100 of those from one
# host exceed the daemon's 64 connections per peer, so two share one here. More per connection meet the daemon's 16
# concurrent streams per connection (daemon/wire) as soon as the daemon is slow: REFUSED_STREAM (seen with 8 at 25 %).
SESSIONS_PER_CHANNEL = 2
START_ATTEMPTS = 5


def heartbeat_client(address: str, cpus: set[int] | None, conn: Connection) -> None:
    """Owns some sessions; paces their heartbeats, probes one of them after idle gaps, or hammers them. Sessions are
    spread over channels (connections), at most SESSIONS_PER_CHANNEL on each."""
    _pin(cpus)
    channels: list[grpc.Channel] = []
    ids: list[str] = []
    calls: list[Call] = []
    requests: list[bytes] = []
    halt = threading.Event()
    pacers: list[threading.Thread] = []
    stats = PaceStats()
    lock = threading.Lock()
    empty = robot_pb2.StartSessionRequest().SerializeToString()

    def start(count: int, interval: float | None) -> None:
        """Start `count` sessions; with `interval`, each one's heartbeats begin as soon as it exists (as in an SDK)."""
        for _ in range(count):
            k = len(ids)
            if k // SESSIONS_PER_CHANNEL >= len(channels):
                channels.append(grpc.insecure_channel(address))
            channel = channels[k // SESSIONS_PER_CHANNEL]
            session_id = ""
            for attempt in range(START_ATTEMPTS):
                try:
                    session_id = robot_pb2.StartSessionResponse.FromString(
                        _raw(channel, START_SESSION)(empty, timeout=10.0)).id
                    break
                except grpc.RpcError as exc:
                    stats.errors[f"StartSession {_describe(exc)}"] = stats.errors.get(
                        f"StartSession {_describe(exc)}", 0) + 1
                    time.sleep(0.05 * (attempt + 1))
            if not session_id:
                continue
            ids.append(session_id)
            calls.append(_raw(channel, HEARTBEAT))
            requests.append(robot_pb2.SendSessionHeartbeatRequest(id=session_id).SerializeToString())
            if interval is not None:
                thread = threading.Thread(target=_pace, args=(calls[k], requests[k], session_id,
                                                              time.monotonic() + interval, interval, halt, stats,
                                                              lock), daemon=True)
                pacers.append(thread)
                thread.start()

    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "start":  # sessions without heartbeats (the probe and the closed loop send their own)
            start(args[0], None)
            conn.send(list(ids))
        elif command == "start_paced":
            count, interval = args
            halt.clear()
            stats = PaceStats()
            start(count, interval)
            conn.send(list(ids))
        elif command == "unpace":
            halt.set()
            for thread in pacers:
                thread.join(CALL_TIMEOUT + 1)
            with lock:
                conn.send(stats)
        elif command == "probe":  # one call every `gap` seconds: the round trip of a call after an idle gap
            gap, count = args
            rtts: list[float] = []
            failures = 0
            for _ in range(count):
                time.sleep(gap)
                began = time.perf_counter()
                try:
                    calls[0](requests[0], timeout=CALL_TIMEOUT)
                    rtts.append(time.perf_counter() - began)
                except grpc.RpcError:
                    failures += 1
            conn.send((rtts, failures))
        elif command == "hammer":  # closed loop: each thread calls its own session's heartbeat back to back
            threads, begin, seconds = args
            results: list[Hammered] = [(0, [], {})] * threads
            workers = [threading.Thread(target=_hammer, args=(calls[k % len(calls)], requests[k % len(requests)],
                                                              begin, begin + seconds, results, k))
                       for k in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            errors: dict[str, int] = {}
            for r in results:
                for key, n in r[2].items():
                    errors[key] = errors.get(key, 0) + n
            conn.send((sum(r[0] for r in results), [x for r in results for x in r[1]], errors))
        elif command == "close":
            failed = 0
            for k, session_id in enumerate(ids):
                close = _raw(channels[k // SESSIONS_PER_CHANNEL], CLOSE_SESSION)
                try:
                    close(safety_pb2.CloseSessionRequest(id=session_id).SerializeToString(), timeout=5.0)
                except grpc.RpcError:
                    failed += 1
            ids.clear()
            calls.clear()
            requests.clear()
            pacers.clear()
            for channel in channels:
                channel.close()
            channels.clear()
            conn.send(failed)
        elif command == "exit":
            halt.set()
            for channel in channels:
                channel.close()
            return


def lane_client(address: str, cpus: set[int] | None, lanes: list[tuple[str, float]], cycles: int, window: float,
                seed: int, conn: Connection) -> None:
    """bench_stop's lanes (one thread per motor: start a session, SetPower its motor with the session's id, go silent
    until well after the session lapsed, and again), on `cpus`."""
    _pin(cpus)
    expiry_client(address, lanes, cycles, window, seed, conn)


def timer_witness(realtime: bool, priority: int, procs: str | None, cpu: int | None, conn: Connection) -> None:
    """The deadline thread's kind of wait (a timed Condition.wait to a monotonic deadline), in a process of its own in
    the daemon's cgroup and on its CPU, SCHED_FIFO like the deadline thread or not: what the budget and the machine
    cost any timer there, without the daemon's GIL."""
    if procs is not None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    policy = "SCHED_OTHER"
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            policy = f"SCHED_FIFO {priority}"
        except OSError as exc:
            policy = f"SCHED_OTHER (SCHED_FIFO refused: {exc.strerror})"
    conn.send("ready")
    _, end = conn.recv()
    conn.send((policy, timer_lateness(end, seed=7 + realtime)))
    with contextlib.suppress(EOFError):
        conn.recv()
