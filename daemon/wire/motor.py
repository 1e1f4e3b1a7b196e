"""viam.component.motor.v1.MotorService on the configured motors."""

from __future__ import annotations

from typing import Any

import grpc
from rover_safety.api import common_pb2, motor_pb2, motor_pb2_grpc
from rover_safety.drivers import Motor

from .base_servicer import Context, Servicer, handler
from .status import Abort


class MotorService(Servicer, motor_pb2_grpc.MotorServiceServicer):
    SERVICE = "viam.component.motor.v1.MotorService"

    @handler
    async def SetPower(self, request: Any, context: Context) -> motor_pb2.SetPowerResponse:
        await self.monitored(request.name, Motor, context, lambda m: m.set_power(request.power_pct))
        return motor_pb2.SetPowerResponse()

    @handler
    async def GoFor(self, request: Any, context: Context) -> motor_pb2.GoForResponse:
        await self.monitored(request.name, Motor, context, lambda m: m.go_for(request.rpm, request.revolutions))
        return motor_pb2.GoForResponse()

    @handler
    async def GoTo(self, request: Any, context: Context) -> motor_pb2.GoToResponse:
        await self.monitored(request.name, Motor, context, lambda m: m.go_to())
        return motor_pb2.GoToResponse()

    @handler
    async def SetRPM(self, request: Any, context: Context) -> motor_pb2.SetRPMResponse:
        await self.monitored(request.name, Motor, context, lambda m: m.set_rpm(request.rpm))
        return motor_pb2.SetRPMResponse()

    @handler
    async def ResetZeroPosition(
        self, request: Any, context: Context
    ) -> motor_pb2.ResetZeroPositionResponse:
        self.find(request.name, Motor).reset_zero_position()
        return motor_pb2.ResetZeroPositionResponse()

    @handler
    async def GetPosition(self, request: Any, context: Context) -> motor_pb2.GetPositionResponse:
        self.find(request.name, Motor)
        return motor_pb2.GetPositionResponse(position=0.0)  # no encoder: as Viam's gpio motor, always 0

    @handler
    async def GetProperties(self, request: Any, context: Context) -> motor_pb2.GetPropertiesResponse:
        self.find(request.name, Motor)
        return motor_pb2.GetPropertiesResponse(position_reporting=False)

    @handler
    async def Stop(self, request: Any, context: Context) -> motor_pb2.StopResponse:
        motor = self.find(request.name, Motor)
        await self.stop(motor.stop)
        return motor_pb2.StopResponse()

    @handler
    async def IsPowered(self, request: Any, context: Context) -> motor_pb2.IsPoweredResponse:
        motor = self.find(request.name, Motor)
        return motor_pb2.IsPoweredResponse(is_on=motor.is_moving(), power_pct=motor.power)

    @handler
    async def IsMoving(self, request: Any, context: Context) -> motor_pb2.IsMovingResponse:
        return motor_pb2.IsMovingResponse(is_moving=self.find(request.name, Motor).is_moving())

    @handler
    async def DoCommand(self, request: Any, context: Context) -> common_pb2.DoCommandResponse:
        raise Abort(grpc.StatusCode.UNIMPLEMENTED, "DoCommand is not supported by rover-safety")
