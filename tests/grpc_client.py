"""A plain gRPC client of the daemon for tests: stubs for every service and the session id for monitored calls."""

from __future__ import annotations

import grpc
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

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.robot = robot_pb2_grpc.RobotServiceStub(self.channel)
        self.motor = motor_pb2_grpc.MotorServiceStub(self.channel)
        self.base = base_pb2_grpc.BaseServiceStub(self.channel)
        self.safety = safety_pb2_grpc.SafetyServiceStub(self.channel)
        self.sid = ""

    def start(self) -> str:
        self.sid = self.robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5).id
        return self.sid

    def heartbeat(self) -> None:
        self.robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=self.sid), timeout=5)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("viam-sid", self.sid),) if self.sid else ()

    def set_power(self, name: str, power: float) -> None:
        self.motor.SetPower(motor_pb2.SetPowerRequest(name=name, power_pct=power), metadata=self.md, timeout=5)

    def close(self) -> None:
        self.channel.close()
