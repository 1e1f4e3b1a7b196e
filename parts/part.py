"""One sub-part: its link (connected, lost, connecting), the resources it has, and the calls forwarded to it.

A thread of its own connects with the client library (API key and TLS as configured), lists the part's resources,
and follows its event stream: a "shutting_down" event or a broken stream (keepalive pings notice a dead link within
about 1.5 s) marks the part lost at once, and the daemon ends the user sessions that drove its resources;
when the stream is back, so are the resources, without a restart of the primary.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

from google.protobuf.message import Message
from rover_safety.api import robot_pb2
from rover_safety.client import RECONNECTED, RECONNECTING, ClientError, Status, connect
from rover_safety.client.sync import Client
from rover_safety.config import RemoteConfig

from .errors import PartUnavailable
from .resources import STOP_ANSWER, RemoteResource

log = logging.getLogger("rover-safety")

# Seconds between pings on the link (each may take half that to answer): a dead link is noticed within about 1.5 s.
# Safety never waits for it (the part's own expiry of this daemon's session stops what it drove); a shorter one
# would take a part that is only slow under CPU load for a lost one.
KEEPALIVE = 1.0
RETRY = (0.2, 2.0)  # seconds between connection attempts: first, then at most
STOP_ALL = "/viam.robot.v1.RobotService/StopAll"
CONNECTED, LOST, CONNECTING = "connected", "lost", "connecting"


class Part:
    """A sub-part followed over its gRPC API; `on_change(part, state, why)` is called from its thread."""

    def __init__(self, config: RemoteConfig, on_change: Callable[[Part, str, str], None]) -> None:
        self.config = config
        self.name, self.address = config.name, config.address
        self.state, self.detail = CONNECTING, "not reached yet"
        self.resources: dict[str, RemoteResource] = {}
        self._on_change = on_change
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"part-{self.name}", daemon=True)

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def start(self) -> None:
        self._thread.start()

    # --- calls ---------------------------------------------------------------------------------------------

    def _live_client(self) -> Client:
        client = self._client
        if client is None or not self.connected:
            raise PartUnavailable(self.name, self.detail)
        return client

    def forward(self, path: str, request: Message, response: type[Message], *,
                timeout: float | None = None) -> Message:
        return self._live_client().forward(path, request, response, timeout=timeout)

    def forward_future(self, path: str, request: Message, response: type[Message], *,
                       timeout: float | None = None) -> concurrent.futures.Future[Message]:
        try:
            return self._live_client().forward_future(path, request, response, timeout=timeout)
        except PartUnavailable as exc:
            failed: concurrent.futures.Future[Message] = concurrent.futures.Future()
            failed.set_exception(exc)
            return failed

    def stop_all(self) -> concurrent.futures.Future[Message]:
        """Ask the part to stop everything (StopAll) without waiting; the call gives up after STOP_ANSWER. It never
        raises (a failure is the future's), so nothing about a part keeps the primary from stopping its own pins."""
        try:
            return self.forward_future(STOP_ALL, robot_pb2.StopAllRequest(), robot_pb2.StopAllResponse,
                                       timeout=STOP_ANSWER)
        except Exception as exc:
            failed: concurrent.futures.Future[Message] = concurrent.futures.Future()
            failed.set_exception(exc)
            return failed

    def close(self) -> None:
        """End the primary's session on the part (it stops what the primary drove there at once), and the link."""
        self._closed.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- the link --------------------------------------------------------------------------------------------

    def _connect(self) -> Client:
        tls, auth = self.config.tls, self.config.auth
        return connect(
            self.address,
            key_id=auth.key_id if auth else None, api_key=auth.key if auth else None,
            tls=not (tls is not None and tls.insecure),
            ca_file=tls.ca_file if tls else None, tls_fingerprint=tls.fingerprint if tls else None,
            retry_on_expiry=True,  # as Viam's primary: a session the part expired is replaced once, transparently
            handle_sigterm=False, connect_timeout=2.0, keepalive_time=KEEPALIVE, close_timeout=0.5,
        )

    def _follow(self) -> None:
        delay = RETRY[0]
        while not self._closed.is_set():
            try:
                client = self._connect()
                with self._lock:
                    if self._closed.is_set():
                        client.close()
                        return
                    self._client = client
                self._refresh(client)
                delay = RETRY[0]
                for event in client.watch():
                    if self._closed.is_set():
                        return
                    if event.kind in (RECONNECTING, "shutting_down"):
                        self._set(LOST, "it is shutting down" if event.kind == "shutting_down" else
                                  f"the link broke: {event.detail or 'no answer'}")
                    elif event.kind == RECONNECTED:
                        self._refresh(client)
                    if event.status is not None:
                        self._update(event.status)
            except ClientError as exc:
                if self._closed.is_set():
                    return
                self._set(LOST if self.state == CONNECTED else self.state, str(exc))
            with self._lock:
                client_now, self._client = self._client, None
            if client_now is not None:
                client_now.close()
            if self._closed.wait(delay):
                return
            delay = min(RETRY[1], delay * 2)

    def _refresh(self, client: Client) -> None:
        """(Re)read the part's resources; it is connected once it answered."""
        names = client.resource_names()
        with self._lock:
            known = dict(self.resources)
            self.resources = {}
            for name in names:
                if name.subtype in ("motor", "base"):
                    resource = known.get(f"{self.name}:{name.name}") or RemoteResource(self, name.subtype, name.name)
                    self.resources[resource.name] = resource
        self._set(CONNECTED, f"{len(self.resources)} resources")

    def _update(self, status: Status) -> None:
        for info in status.resources:
            resource = self.resources.get(f"{self.name}:{info.name}")
            if resource is not None:
                resource.moving, resource.power = info.moving, info.power

    def _set(self, state: str, why: str) -> None:
        changed = state != self.state
        self.state, self.detail = state, why
        if changed:
            self._on_change(self, state, why)


def wait_connected(parts: list[Part], timeout: float) -> None:
    """Give the parts up to `timeout` s to connect (start-up: the primary serves either way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.connected for p in parts):
        time.sleep(0.02)
