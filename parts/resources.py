"""A sub-part's motor or base as the primary sees it: a name (`arm:shoulder`), a stop() for the session table, and
any call forwarded to the part."""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from rover_safety.api import base_pb2, motor_pb2

if TYPE_CHECKING:
    from .part import Part

# Seconds a part may take to answer a stop from this primary. Past it the call is given up: the part's own expiry of
# this primary's session stops what the primary drove there anyway, and a stop thread or StopAll is not held longer.
STOP_ANSWER = 0.5

SERVICES = {"motor": "viam.component.motor.v1.MotorService", "base": "viam.component.base.v1.BaseService"}
STOPS = {"motor": (motor_pb2.StopRequest, motor_pb2.StopResponse), "base": (base_pb2.StopRequest,
                                                                             base_pb2.StopResponse)}


class RemoteResource:
    """`arm:shoulder`: the motor (or base) `shoulder` of part `arm`."""

    def __init__(self, part: Part, kind: str, remote_name: str) -> None:
        self.part, self.kind, self.remote_name = part, kind, remote_name
        self.name = f"{part.name}:{remote_name}"
        self.moving = False  # as the part's own event stream last said
        self.power = 0.0

    @property
    def available(self) -> bool:
        return self.part.connected

    def is_moving(self) -> bool:
        return self.moving

    def stop(self) -> bool | None:
        """Stop it on the part, now; a part that is not connected stops its own outputs (its own expiry of the
        primary's session, or its shutdown), so there is nothing to send then."""
        if not self.part.connected:
            return None
        request, response = STOPS[self.kind]
        self.part.forward(f"/{SERVICES[self.kind]}/Stop", request(name=self.remote_name), response,
                          timeout=STOP_ANSWER)
        was, self.moving = self.moving, False
        return was

    def forward_future(self, method: str, request: Message, response: type[Message]
                       ) -> concurrent.futures.Future[Message]:
        """Forward one call of this resource's service (its name rewritten) to the part, with the primary's session
        there; the future fails with PartUnavailable if the part is not connected."""
        rewritten = type(request)()
        rewritten.CopyFrom(request)
        rewritten.name = self.remote_name  # type: ignore[attr-defined]
        return self.part.forward_future(f"/{SERVICES[self.kind]}/{method}", rewritten, response)
