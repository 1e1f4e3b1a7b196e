"""Where and how to connect: the address, the options `connect()` takes, and the channels made from them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc

from .errors import InsecureCredentials
from .tls import TlsSetup, setup_tls

DEFAULT_PORT = 8080
DEFAULT_WINDOW = 2.0
# A control message is tiny: the daemon accepts at most 64 KiB; a status of 1024 sessions still fits in 4 MiB.
MAX_SEND_BYTES = 64 * 1024
MAX_RECEIVE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Address:
    """A parsed address: the gRPC target, and the host and port (None for a unix socket)."""

    target: str
    host: str
    port: int | None

    @property
    def loopback(self) -> bool:
        """Whether traffic to this address stays on this machine."""
        if self.port is None or self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(address: str) -> Address:
    """"host", "host:port", "[v6]:port" or "unix:/path" -> Address (port 8080 if none)."""
    text = address.strip()
    if not text:
        raise ValueError("no address: pass host:port (or set ROVER_SAFETY_ADDRESS)")
    if text.startswith("unix:"):
        return Address(text, "localhost", None)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"address {address!r}: the port {port_text!r} is not a number") from None
    if not 0 < port < 65536 or not host:
        raise ValueError(f"address {address!r} is not host:port")
    shown = f"[{host}]" if ":" in host else host
    return Address(f"{shown}:{port}", host, port)


@dataclass(frozen=True)
class ConnectOptions:
    """Everything `connect()` takes, checked."""

    address: Address
    api_key: str | None = None
    key_id: str | None = None
    tls: bool = True
    ca_file: str | None = None
    tls_fingerprint: str | None = None
    server_name: str | None = None
    disable_sessions: bool = False
    retry_on_expiry: bool = False
    liveness_timeout: float | None = None
    connect_timeout: float = 5.0
    call_timeout: float | None = 10.0
    close_timeout: float = 2.0
    keepalive_time: float | None = None  # seconds between keepalive pings; None: window / 2; 0: no pings
    handle_sigterm: bool = True

    def __post_init__(self) -> None:
        if (self.api_key is None) != (self.key_id is None):
            raise ValueError("give both api_key and key_id (the key's id), or neither")
        if self.api_key is not None and not self.tls and not self.address.loopback:
            raise InsecureCredentials(
                f"refusing to send an API key in plain text to {self.address.target}: anyone on the network could "
                "read it. Use TLS (ca_file= or tls_fingerprint=), or run the program on the rover (loopback)")
        if self.liveness_timeout is not None and not self.liveness_timeout > 0:
            raise ValueError("liveness_timeout must be a positive number of seconds (or None)")
        if not self.connect_timeout > 0:
            raise ValueError("connect_timeout must be positive")
        if self.keepalive_time is not None and self.keepalive_time < 0:
            raise ValueError("keepalive_time must be >= 0 (0: no keepalive pings)")


def channel_options(opts: ConnectOptions, window: float, tls: TlsSetup) -> list[tuple[str, int | str]]:
    """Channel options fit for control: small messages, keepalive pings that notice a dead link within the window
    (ping every window/2, dead after another window/4), quick reconnects.

    The server must accept such pings (grpc.keepalive_permit_without_calls=1,
    grpc.http2.min_recv_ping_interval_without_data_ms below the ping interval, grpc.http2.max_ping_strikes=0);
    a server with gRPC's defaults answers GOAWAY "too_many_pings" now and then, which costs a reconnect."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ]
    if opts.keepalive_time != 0:
        keepalive_ms = max(100, int((window / 2 if opts.keepalive_time is None else opts.keepalive_time) * 1000))
        options += [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", max(100, keepalive_ms // 2)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return [
        *options,
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        *tls.options,
    ]


def make_tls(opts: ConnectOptions) -> TlsSetup:
    """The TLS set-up for `opts` (for a pinned certificate, this fetches and checks it)."""
    return setup_tls(opts.address.host, opts.address.port, tls=opts.tls, ca_file=opts.ca_file,
                     tls_fingerprint=opts.tls_fingerprint, server_name=opts.server_name,
                     timeout=opts.connect_timeout)


def aio_channel(opts: ConnectOptions, tls: TlsSetup, window: float) -> grpc.aio.Channel:
    """A grpc.aio channel (call from the event loop that will use it)."""
    options = channel_options(opts, window, tls)
    if tls.credentials is None:
        return grpc.aio.insecure_channel(opts.address.target, options=options)
    return grpc.aio.secure_channel(opts.address.target, tls.credentials, options=options)


def sync_channel(opts: ConnectOptions, tls: TlsSetup, window: float) -> grpc.Channel:
    """A blocking channel (the heartbeat thread's own), on a connection of its own: the daemon allows few streams
    per connection, and heartbeats must never wait for one behind long calls."""
    options = [*channel_options(opts, window, tls), ("grpc.use_local_subchannel_pool", 1)]
    if tls.credentials is None:
        return grpc.insecure_channel(opts.address.target, options=options)
    return grpc.secure_channel(opts.address.target, tls.credentials, options=options)
