"""A heartbeat flood from one client host, for the reliability tests: many channels (each its own connection),
each keeping as many calls in flight as the daemon lets a connection have, re-sending each the moment it is
answered, for a while or until killed.

    python -m tests.support.fault_flood --target 127.0.0.1:PORT --channels 64 --per-channel 16 --seconds 5 \
        [--motor m0]

With ``--motor`` it first starts a session of its own and drives that motor, then floods that session's
heartbeats (so the flood keeps its own session alive); without, it floods heartbeats of a made-up id. stdout: a
``ready`` line, then every 100 ms a ``tick`` line with counts by status and the answer time of the latest
answered heartbeat (``last_ok``), and a ``summary`` line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import grpc
from rover_safety.api import motor_pb2, motor_pb2_grpc, robot_pb2, robot_pb2_grpc


def emit(**fields: Any) -> None:
    os.write(1, (json.dumps(fields) + "\n").encode())


class Flood:
    def __init__(self, target: str, channels: int, per_channel: int, sid: str, until: float) -> None:
        self.channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                                ("rover-safety.flood-channel", i)])
                         for i in range(channels)]
        self.stubs = [robot_pb2_grpc.RobotServiceStub(c) for c in self.channels]
        self.request = robot_pb2.SendSessionHeartbeatRequest(id=sid)
        self.per_channel, self.until = per_channel, until
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.last_ok = 0.0
        self.in_flight = 0
        self.done = threading.Event()

    def start(self) -> None:
        for channel in self.channels:
            grpc.channel_ready_future(channel).result(timeout=20)
        for stub in self.stubs:
            for _ in range(self.per_channel):
                self._send(stub)

    def _send(self, stub: robot_pb2_grpc.RobotServiceStub) -> None:
        if time.monotonic() >= self.until:
            with self.lock:
                if self.in_flight == 0:
                    self.done.set()
            return
        with self.lock:
            self.in_flight += 1
        future = stub.SendSessionHeartbeat.future(self.request, timeout=5)
        future.add_done_callback(lambda f: self._answered(stub, f))

    def _answered(self, stub: robot_pb2_grpc.RobotServiceStub, future: Any) -> None:
        answered = time.monotonic()
        code = future.code()
        name = code.name if code is not None else "?"
        with self.lock:
            self.in_flight -= 1
            self.counts[name] = self.counts.get(name, 0) + 1
            if code == grpc.StatusCode.OK:
                self.last_ok = max(self.last_ok, answered)
        self._send(stub)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--per-channel", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--motor", default="")
    args = ap.parse_args(argv)
    sid = "00000000-0000-0000-0000-000000000000"
    if args.motor:
        channel = grpc.insecure_channel(args.target)
        reply = robot_pb2_grpc.RobotServiceStub(channel).StartSession(robot_pb2.StartSessionRequest(), timeout=10)
        sid = reply.id
        motor_pb2_grpc.MotorServiceStub(channel).SetPower(
            motor_pb2.SetPowerRequest(name=args.motor, power_pct=0.5), metadata=(("viam-sid", sid),), timeout=10)
    started = time.monotonic()
    flood = Flood(args.target, args.channels, args.per_channel, sid, started + args.seconds + 20)
    flood.start()
    flood.until = time.monotonic() + args.seconds
    emit(ev="ready", sid=sid, t=time.monotonic())
    while not flood.done.wait(0.1):
        with flood.lock:
            emit(ev="tick", t=time.monotonic(), counts=dict(flood.counts), last_ok=flood.last_ok,
                 in_flight=flood.in_flight)
        if time.monotonic() > flood.until + 10:
            break
    with flood.lock:
        emit(ev="summary", t=time.monotonic(), counts=dict(flood.counts), last_ok=flood.last_ok,
             seconds=time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
