"""proto.rpc.v1.AuthService: an API key in, a bearer token out (Viam's Authenticate)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from rover_safety.api import auth_pb2, auth_pb2_grpc

from .. import journal
from ..errors import AuthFailed
from .base_servicer import Context, Servicer, caller_of, handler
from .quoting import brief
from .status import Abort

log = logging.getLogger("rover-safety")


class AuthService(Servicer, auth_pb2_grpc.AuthServiceServicer):
    @handler
    async def Authenticate(self, request: Any, context: Context) -> auth_pb2.AuthenticateResponse:
        auth = self.app.auth
        if not auth.enabled:
            raise Abort(grpc.StatusCode.UNIMPLEMENTED,
                        "this daemon has no API keys (auth.api_keys), so it takes no credentials: connect without")
        caller = caller_of(context)
        try:
            token = auth.authenticate(request.entity, request.credentials.type, request.credentials.payload,
                                      caller.host)
        except AuthFailed as exc:
            journal.auth_failed(caller.peer, brief(request.entity), str(exc), limited=exc.limited)
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        log.info("%s authenticated as %s", caller.peer, request.entity)
        return auth_pb2.AuthenticateResponse(access_token=token)
