"""API keys and TLS certificates for tests: made the way `rover-safety gen-key` and `gen-cert` make them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc
from rover_safety.api import auth_pb2, auth_pb2_grpc
from rover_safety.daemon import tls
from rover_safety.daemon.auth import key_hash


@dataclass(frozen=True)
class Key:
    id: str
    key: str

    @property
    def config_line(self) -> str:
        return f"    - {{id: {self.id}, key_sha256: {key_hash(self.key)}}}\n"


def new_key(name: str) -> Key:
    return Key(name, secrets.token_urlsafe(32))


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    @property
    def pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def fingerprint(self) -> str:
        return tls.fingerprint(self.pem)


def new_certificate(directory: Path, names: tuple[str, ...] = ("localhost",),
                    addresses: tuple[str, ...] = ("127.0.0.1", "::1")) -> Certificate:
    cert, key = tls.generate(directory, list(names), list(addresses))
    key.chmod(0o644)  # tests run the daemon as root or in-process; the unit's user needs the group instead
    return Certificate(cert, key)


def secured(config: str, certificate: Certificate, keys: tuple[Key, ...] = (), extra_auth: str = "") -> str:
    """`config` (the example's text) with TLS and these API keys."""
    tls_line = f"  tls: {{cert_file: {certificate.cert}, key_file: {certificate.key}}}\n"
    config = config.replace("network:\n", "network:\n" + tls_line, 1)
    if keys or extra_auth:
        config += "auth:\n" + extra_auth + ("  api_keys:\n" + "".join(k.config_line for k in keys) if keys else "")
    return config


def tls_channel(port: int, certificate: Certificate, host: str = "localhost") -> grpc.Channel:
    """A channel that trusts exactly this certificate."""
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate.pem)
    return grpc.secure_channel(f"{host}:{port}", credentials)


def token_for(channel: grpc.Channel, key: Key) -> str:
    """Authenticate with the key; the bearer token."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    request = auth_pb2.AuthenticateRequest(entity=key.id, credentials=auth_pb2.Credentials(type="api-key",
                                                                                           payload=key.key))
    return str(stub.Authenticate(request, timeout=5).access_token)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
