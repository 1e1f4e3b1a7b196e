"""A client of the daemon as a process of its own, for the reliability tests: it starts a session, drives one motor
and heartbeats it, telling the test each step on stdout, so that the test can kill, stop or cut it off at any
moment and still know when each call was sent and answered.

    python -m tests.support.fault_client --target 127.0.0.1:PORT --motor m0 [--interval 0.04] [--recover]

Every line on stdout is one JSON object with ``ev`` and CLOCK_MONOTONIC times (comparable with the pigpiod
emulator's command log and the test's own clock):

- ``{"ev": "ready"}`` once the channel is connected; then the client waits for a line on stdin before it starts,
  and exits (status 0) as soon as stdin ends, before or after that line: the test that started it is gone;
- ``{"ev": "send", "what": "start"|"drive"|"hb", "s": t}`` written *before* each call goes out (a write to a pipe
  completes before the send, so even a client killed mid-call has told the test about every call it sent);
- ``{"ev": "ok", "what": ..., "s": sent, "a": answered, "sid": id}`` after each answer;
- ``{"ev": "err", "what": ..., "s": sent, "a": t, "code": "INVALID_ARGUMENT", "details": ...}`` after each failure.

With ``--recover`` a heartbeat refused with SESSION_EXPIRED makes the client start a new session and drive again
(what the Viam SDKs do); without it the client exits 3 after such a refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from rover_safety.api import motor_pb2, motor_pb2_grpc, robot_pb2, robot_pb2_grpc


def emit(**fields: Any) -> None:
    os.write(1, (json.dumps(fields) + "\n").encode())


class Driver:
    def __init__(self, target: str, motor: str, power: float, timeout: float) -> None:
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.robot = robot_pb2_grpc.RobotServiceStub(self.channel)
        self.motor = motor_pb2_grpc.MotorServiceStub(self.channel)
        self.name, self.power, self.timeout = motor, power, timeout
        self.sid = ""

    def call(self, what: str, fn: Callable[[], Any]) -> tuple[bool, str]:
        """Run one call, telling the test before and after; (ok, status code name)."""
        sent = time.monotonic()
        emit(ev="send", what=what, s=sent)
        try:
            fn()
        except grpc.RpcError as exc:
            code = exc.code()
            emit(ev="err", what=what, s=sent, a=time.monotonic(), code=code.name if code else "?",
                 details=exc.details() or "")
            return False, code.name if code else "?"
        emit(ev="ok", what=what, s=sent, a=time.monotonic(), sid=self.sid)
        return True, "OK"

    def start(self) -> bool:
        def start() -> None:
            self.sid = self.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=self.timeout).id

        return self.call("start", start)[0]

    def drive(self) -> bool:
        return self.call("drive", lambda: self.motor.SetPower(
            motor_pb2.SetPowerRequest(name=self.name, power_pct=self.power), metadata=(("viam-sid", self.sid),),
            timeout=self.timeout))[0]

    def heartbeat(self) -> str:
        return self.call("hb", lambda: self.robot.SendSessionHeartbeat(
            robot_pb2.SendSessionHeartbeatRequest(id=self.sid), timeout=self.timeout))[1]


def exit_on_eof() -> None:
    """Read stdin to its end, then end the process: the test holding the other end of the pipe is gone."""
    for _ in sys.stdin:
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--motor", required=True)
    ap.add_argument("--power", type=float, default=0.5)
    ap.add_argument("--interval", type=float, default=0.04, help="seconds between heartbeats")
    ap.add_argument("--timeout", type=float, default=1.0, help="each call's deadline, seconds")
    ap.add_argument("--recover", action="store_true")
    ap.add_argument("--no-wait", action="store_true", help="start at once, without waiting for stdin")
    args = ap.parse_args(argv)
    driver = Driver(args.target, args.motor, args.power, args.timeout)
    grpc.channel_ready_future(driver.channel).result(timeout=20)
    emit(ev="ready")
    if not args.no_wait:
        if not sys.stdin.readline():
            return 0
        threading.Thread(target=exit_on_eof, name="exit-on-eof", daemon=True).start()
    while not (driver.start() and driver.drive()):
        time.sleep(args.interval)
    next_at = time.monotonic() + args.interval
    while True:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += args.interval
        if next_at < time.monotonic():  # fell behind (a failed call took its whole timeout): no burst to catch up
            next_at = time.monotonic() + args.interval
        code = driver.heartbeat()
        if code == "INVALID_ARGUMENT":  # SESSION_EXPIRED: the old id is useless
            if not args.recover:
                return 3
            while not (driver.start() and driver.drive()):
                time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
