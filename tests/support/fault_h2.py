"""Hostile HTTP/2 peers written with the `h2` library, for the reliability tests: connections that open gRPC
streams and never send their request body, and connections that only say the preface and then sit idle.

Each connection is a well-behaved HTTP/2 peer in every other way (it acknowledges the server's SETTINGS and
answers its PINGs, from one service thread), so the server has no protocol reason to drop it: it just never
finishes a request.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

HEARTBEAT_PATH = "/viam.robot.v1.RobotService/SendSessionHeartbeat"


@dataclass
class Peer:
    sock: socket.socket
    conn: h2.connection.H2Connection
    opened: list[int] = field(default_factory=list)
    reset: list[int] = field(default_factory=list)  # streams the server refused or reset (RST_STREAM)
    answered: list[int] = field(default_factory=list)  # streams the server sent headers on (e.g. an error status)
    closed: bool = False  # the server closed the connection (or sent GOAWAY)


class HostilePeers:
    """A set of raw HTTP/2 connections to one gRPC server, serviced by one thread until `close`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.peers: list[Peer] = []
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._service, name="h2-peers", daemon=True)
        self._thread.start()

    def connect(self, streams: int = 0) -> Peer:
        """Open a connection, send the preface and SETTINGS, then HEADERS (no END_STREAM, no DATA ever) for
        `streams` gRPC calls of SendSessionHeartbeat, all at once before the server's SETTINGS are read."""
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        peer = Peer(sock, conn)
        authority = f"{self.host}:{self.port}"
        for _ in range(streams):
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [
                (":method", "POST"), (":scheme", "http"), (":path", HEARTBEAT_PATH), (":authority", authority),
                ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "3600S"),
            ], end_stream=False)
            peer.opened.append(stream_id)
        sock.sendall(conn.data_to_send())
        sock.setblocking(False)
        with self._lock:
            self.peers.append(peer)
            self._selector.register(sock, selectors.EVENT_READ, peer)
        return peer

    def _service(self) -> None:
        while not self._stop.is_set():
            # epoll: registering from another thread while this one waits is fine
            ready = self._selector.select(0.01) if self._selector.get_map() else []
            if not ready:
                self._stop.wait(0.05)
                continue
            for key, _ in ready:
                peer: Peer = key.data
                try:
                    data = peer.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(peer)
                    continue
                try:
                    events = peer.conn.receive_data(data)
                except Exception:  # a protocol error on our side: count it as closed
                    self._drop(peer)
                    continue
                for event in events:
                    if isinstance(event, h2.events.StreamReset):
                        peer.reset.append(event.stream_id)
                    elif isinstance(event, h2.events.ResponseReceived):
                        peer.answered.append(event.stream_id)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        peer.closed = True
                outgoing = peer.conn.data_to_send()
                if outgoing:
                    with contextlib.suppress(OSError):
                        peer.sock.sendall(outgoing)

    def _drop(self, peer: Peer) -> None:
        peer.closed = True
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        with contextlib.suppress(OSError):
            peer.sock.close()

    def open_count(self) -> int:
        return sum(1 for p in self.peers if not p.closed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.sock.close()
        self._selector.close()
