"""viam.component.base.v1.BaseService on the configured wheeled bases."""

from __future__ import annotations

from typing import Any

import grpc
from rover_safety.api import base_pb2, base_pb2_grpc, common_pb2
from rover_safety.drivers import WheeledBase

from .base_servicer import Context, Servicer, handler
from .status import Abort


class BaseService(Servicer, base_pb2_grpc.BaseServiceServicer):
    SERVICE = "viam.component.base.v1.BaseService"

    @handler
    async def MoveStraight(self, request: Any, context: Context) -> base_pb2.MoveStraightResponse:
        await self.monitored(request.name, WheeledBase, context,
                             lambda b: b.move_straight(request.distance_mm, request.mm_per_sec))
        return base_pb2.MoveStraightResponse()

    @handler
    async def Spin(self, request: Any, context: Context) -> base_pb2.SpinResponse:
        await self.monitored(request.name, WheeledBase, context,
                             lambda b: b.spin(request.angle_deg, request.degs_per_sec))
        return base_pb2.SpinResponse()

    @handler
    async def SetPower(self, request: Any, context: Context) -> base_pb2.SetPowerResponse:
        await self.monitored(request.name, WheeledBase, context,
                             lambda b: b.set_power(request.linear.y, request.angular.z))
        return base_pb2.SetPowerResponse()

    @handler
    async def SetVelocity(self, request: Any, context: Context) -> base_pb2.SetVelocityResponse:
        await self.monitored(request.name, WheeledBase, context,
                             lambda b: b.set_velocity(request.linear.y, request.angular.z))
        return base_pb2.SetVelocityResponse()

    @handler
    async def Stop(self, request: Any, context: Context) -> base_pb2.StopResponse:
        base = self.find(request.name, WheeledBase)
        await self.stop(base.stop)
        return base_pb2.StopResponse()

    @handler
    async def IsMoving(self, request: Any, context: Context) -> base_pb2.IsMovingResponse:
        return base_pb2.IsMovingResponse(is_moving=self.find(request.name, WheeledBase).is_moving())

    @handler
    async def GetProperties(self, request: Any, context: Context) -> base_pb2.GetPropertiesResponse:
        base = self.find(request.name, WheeledBase)
        return base_pb2.GetPropertiesResponse(
            width_meters=base.width_m, turning_radius_meters=0.0, wheel_circumference_meters=base.wheel_circumference_m
        )

    @handler
    async def DoCommand(self, request: Any, context: Context) -> common_pb2.DoCommandResponse:
        raise Abort(grpc.StatusCode.UNIMPLEMENTED, "DoCommand is not supported by rover-safety")
