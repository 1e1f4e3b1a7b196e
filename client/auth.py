"""API-key authentication: the bearer token of one channel, fetched with AuthService/Authenticate and renewed once
when the daemon answers UNAUTHENTICATED (a restarted daemon forgets its tokens)."""

from __future__ import annotations

import asyncio
import threading

import grpc

from . import calls
from .errors import Unauthenticated, Unavailable, from_status

Metadata = tuple[tuple[str, str], ...]


class Token:
    """The bearer token of one channel (each channel authenticates on its own: tokens are per key, sessions per
    key id, so two tokens for one key are fine)."""

    def __init__(self, key_id: str | None, api_key: str | None) -> None:
        self.key_id = key_id
        self._api_key = api_key
        self.value: str | None = None
        self._sync_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    @property
    def enabled(self) -> bool:
        """Whether calls need a token at all."""
        return self._api_key is not None

    def metadata(self) -> Metadata:
        """The `authorization` entry for a call ((), without a key)."""
        return (("authorization", f"Bearer {self.value}"),) if self.value else ()

    def _request(self) -> calls.Call[str]:
        assert self.key_id is not None and self._api_key is not None
        return calls.authenticate(self.key_id, self._api_key)

    def _failed(self, error: grpc.RpcError, code: grpc.StatusCode, details: str) -> Exception:
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return Unauthenticated(
                f"the daemon refused API key id {self.key_id!r}: {details or 'invalid credentials'}; check key_id "
                "and api_key (or ROVER_SAFETY_KEY_ID / ROVER_SAFETY_API_KEY)", code=code, details=details)
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"could not authenticate: the daemon is unreachable ({details}); check that it runs "
                               "and the address", code=code, details=details)
        return from_status(code, details, "AuthService/Authenticate")

    async def renew_async(self, channel: grpc.aio.Channel, stale: str | None, timeout: float | None) -> None:
        """Authenticate on `channel` unless another call already replaced the `stale` token."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self.value is not None and self.value != stale:
                return
            call = self._request()
            method = channel.unary_unary(call.path, request_serializer=type(call.request).SerializeToString,
                                         response_deserializer=call.response.FromString)
            try:
                reply = await method(call.request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise self._failed(exc, exc.code(), exc.details() or "") from None
            self.value = call.decode(reply)

    def renew_sync(self, channel: grpc.Channel, stale: str | None, timeout: float | None) -> None:
        """Blocking twin of `renew_async`, for the heartbeat thread's own channel."""
        with self._sync_lock:
            if self.value is not None and self.value != stale:
                return
            call = self._request()
            method = channel.unary_unary(call.path, request_serializer=type(call.request).SerializeToString,
                                         response_deserializer=call.response.FromString)
            try:
                reply = method(call.request, timeout=timeout)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
                raise self._failed(exc, code, details) from None
            self.value = call.decode(reply)
