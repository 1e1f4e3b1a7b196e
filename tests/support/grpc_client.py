"""A plain gRPC client of the daemon for tests (what the Viam SDKs send, minus the SDK): stubs for every service and
the session id for monitored calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest
from rover_safety.api import (
    base_pb2_grpc,
    motor_pb2,
    motor_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
    safety_pb2_grpc,
)


class Client:
    """A plain gRPC client of one daemon, with the session id to attach to monitored calls."""

    def __init__(self, port: int, host: str = "127.0.0.1", own_connection: bool = False) -> None:
        """`own_connection`: never share a connection with another Client of the same address (gRPC shares one
        between channels of equal options otherwise)."""
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        self.channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self.robot = robot_pb2_grpc.RobotServiceStub(self.channel)
        self.motor = motor_pb2_grpc.MotorServiceStub(self.channel)
        self.base = base_pb2_grpc.BaseServiceStub(self.channel)
        self.safety = safety_pb2_grpc.SafetyServiceStub(self.channel)
        self.sid = ""
        self.window = 0.0

    def start(self) -> str:
        """Start a session; returns its id (the window the daemon gave it is `window`, in seconds)."""
        reply = self.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5)
        self.sid = reply.id
        self.window = float(reply.heartbeat_window.ToTimedelta().total_seconds())
        return self.sid

    def start_session(self) -> float:
        """Start a session; returns the heartbeat window the daemon gave it, in seconds."""
        self.start()
        return self.window

    def heartbeat(self) -> None:
        self.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=self.sid), timeout=5)

    def beat(self, times: int, interval: float) -> tuple[float, float]:
        """`times` heartbeats, one every `interval` s (the SDKs beat every window/5); returns when the last one was
        sent and when its answer came (time.monotonic())."""
        sent = answered = 0.0
        for _ in range(times):
            time.sleep(interval)
            sent = time.monotonic()
            self.heartbeat()
            answered = time.monotonic()
        return sent, answered

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("viam-sid", self.sid),) if self.sid else ()

    def set_power(self, name: str, power: float) -> None:
        self.motor.SetPower(motor_pb2.SetPowerRequest(name=name, power_pct=power), metadata=self.md, timeout=5)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Heartbeats:
    """Heartbeats for a client from a thread, every `interval` s, until stopped; records failures."""

    def __init__(self, client: Client, interval: float) -> None:
        self.client, self.interval = client, interval
        self.errors: list[str] = []
        self.last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.heartbeat()
                self.last = time.monotonic()
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")

    def stop(self) -> float:
        """Stop; returns when the last successful heartbeat was answered."""
        self._stop.set()
        self._thread.join(10)
        return self.last


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Make a call that must fail: its status code and details ("" when it has none)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""
