"""The page's way into the daemon: its own gRPC port, as a client like any other.

Every browser request becomes one gRPC call with that browser's bearer token (none before login, or without API
keys) and, with the daemon's per-start proxy secret, the browser's address, so the front door applies its auth,
limits and logs to the person at the browser. Calls go on grpc.aio channels on the daemon's serving loop:

- `control` for every unary call but stops (a connection carries at most 16 calls at once, and watch streams never
  take them);
- `stops` for Stop and StopAll only, so that a STOP ALL never queues behind other calls;
- one channel per watch stream (`SafetyService/WatchEvents`), each its own connection, closed with the stream.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from rover_safety.api import (
    auth_pb2_grpc,
    base_pb2_grpc,
    robot_pb2_grpc,
    safety_pb2_grpc,
)
from rover_safety.client.core import SESSION_KEY
from rover_safety.client.errors import is_session_expired

from .listen import split

CALL_TIMEOUT = 5.0  # seconds for any unary call
Metadata = tuple[tuple[str, str], ...]


def upstream_target(bind_address: str, port: int) -> str:
    """Where the page reaches the daemon's gRPC port: its bind address, loopback for a wildcard one."""
    host = split(bind_address)[0]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def certificate_name(pem: bytes) -> str:
    """A name the certificate is valid for, to check it by (`grpc.ssl_target_name_override`): localhost if it
    names it, else its first DNS name, else its first IP address, else its common name."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [n for n in alt.get_values_for_type(x509.DNSName) if not n.startswith("*")]
        ips = [str(a) for a in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    if "localhost" in dns:
        return "localhost"
    if dns:
        return dns[0]
    if ips:
        return ips[0]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    raise ValueError("the certificate names no host (no subjectAltName, no common name)")


def grpc_peer(address: object) -> str:
    """A browser's socket address as gRPC spells a peer: `ipv4:10.0.0.7:51000`, `ipv6:[fe80::1]:51000`."""
    if not isinstance(address, tuple) or len(address) < 2:
        return "unknown"
    host, port = str(address[0]), address[1]
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return f"unix:{host}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"ipv4:{ip.ipv4_mapped}:{port}"
    return f"ipv6:[{host}]:{port}" if ip.version == 6 else f"ipv4:{host}:{port}"


@dataclass(frozen=True)
class UpstreamSettings:
    """How to reach and be trusted by the daemon's gRPC port."""

    target: str  # host:port
    proxy_secret: str = field(repr=False)
    secret_key: str  # metadata key of the proxy secret
    peer_key: str  # metadata key of the browser's address
    root_certificates: bytes | None = None  # TLS: the only root trusted (the daemon's own certificate)
    server_name: str | None = None  # TLS: the name to check the certificate by


class CallFailed(Exception):
    """A gRPC call the daemon refused or could not answer, as the page reports it."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code  # the gRPC status code's name, or SESSION_EXPIRED
        self.message = message
        self.http_status = http_status

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> CallFailed:
        if is_session_expired(error):
            return cls("SESSION_EXPIRED", "the drive session has ended", 409)
        code = error.code()
        return cls(code.name, error.details() or code.name, HTTP_STATUS.get(code, 502))


HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class Upstream:
    """The channels and stubs to the daemon; create and close it on the serving loop."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.control = self.channel()
        self.stops = self.channel()
        self.auth = auth_pb2_grpc.AuthServiceStub(self.control)
        self.robot = robot_pb2_grpc.RobotServiceStub(self.control)
        self.base = base_pb2_grpc.BaseServiceStub(self.control)
        self.safety = safety_pb2_grpc.SafetyServiceStub(self.control)
        self.robot_stops = robot_pb2_grpc.RobotServiceStub(self.stops)
        self.base_stops = base_pb2_grpc.BaseServiceStub(self.stops)

    def channel(self) -> grpc.aio.Channel:
        """A channel of its own connection (never shared through gRPC's global subchannel pool)."""
        s = self.settings
        options: list[tuple[str, str | int]] = [("grpc.use_local_subchannel_pool", 1),
                                                ("grpc.enable_retries", 0)]
        if s.root_certificates is None:
            return grpc.aio.insecure_channel(s.target, options=options)
        if s.server_name:
            options.append(("grpc.ssl_target_name_override", s.server_name))
        credentials = grpc.ssl_channel_credentials(root_certificates=s.root_certificates)
        return grpc.aio.secure_channel(s.target, credentials, options=options)

    def metadata(self, peer: str, token: str | None = None, session: str | None = None) -> Metadata:
        """The metadata of a call for the browser at `peer`: who it is, and the session it drives in."""
        s = self.settings
        entries: list[tuple[str, str]] = [(s.secret_key, s.proxy_secret), (s.peer_key, peer)]
        if token:
            entries.append(("authorization", f"Bearer {token}"))
        if session:
            entries.append((SESSION_KEY, session))
        return tuple(entries)

    async def close(self) -> None:
        for channel in (self.control, self.stops):
            await channel.close(grace=None)
