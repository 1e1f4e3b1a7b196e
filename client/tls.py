"""TLS for the channels: verified against a CA file or the system's roots, or pinned by a certificate fingerprint.

Pinning (`tls_fingerprint`, the SHA-256 of the server certificate's DER as `rover-safety gen-cert` prints it): the
client fetches the certificate in a TLS handshake of its own, compares its fingerprint in constant time, then gives
gRPC that certificate as the only trusted root, so the channel accepts exactly that certificate (and only with its
private key). If the address is not a name the certificate carries, `grpc.ssl_target_name_override` is set to one
that it does. Pinning is meant for self-signed certificates (what gen-cert makes); use `ca_file` for CA-signed ones.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from .errors import TlsError, TlsMismatch

_HEX = re.compile(r"[0-9a-f]{64}")


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits (accepts colons, spaces, any case, a "sha256:" prefix)."""
    text = value.strip().lower()
    text = text.removeprefix("sha256:").removeprefix("sha256 ")
    text = re.sub(r"[\s:]", "", text)
    if not _HEX.fullmatch(text):
        raise ValueError(f"tls_fingerprint {value!r} is not a SHA-256 fingerprint: expected 64 hex digits "
                         "(colons allowed), as `rover-safety gen-cert` prints")
    return text


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, 64 lower-case hex digits."""
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(hex_digits: str) -> str:
    """AB:CD:... form of a fingerprint, for messages."""
    return ":".join(hex_digits[i:i + 2] for i in range(0, len(hex_digits), 2)).upper()


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def fetch_certificate(host: str, port: int, timeout: float) -> bytes:
    """The server's certificate (DER), from a handshake that verifies nothing (the caller pins it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with _handshake(host, port, context, timeout) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"could not fetch the TLS certificate of {host}:{port}: {exc}; check the address and that "
                       "the daemon serves TLS (or connect with tls=False on loopback)") from exc
    if not der:
        raise TlsError(f"{host}:{port} sent no TLS certificate")
    return der


def certificate_names(host: str, port: int, der: bytes, timeout: float) -> list[tuple[str, str]]:
    """The names a pinned certificate carries, as ("DNS"|"IP Address"|"CN", value) pairs.

    Python decodes only verified certificates, so this is a second handshake that trusts exactly `der`.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.set_alpn_protocols(["h2"])
    context.load_verify_locations(cadata=der)
    try:
        with _handshake(host, port, context, timeout) as tls:
            if tls.getpeercert(binary_form=True) != der:
                raise TlsMismatch(f"{host}:{port} changed its certificate between two handshakes; try again")
            cert = tls.getpeercert() or {}
    except ssl.SSLError as exc:
        raise TlsMismatch(f"{host}:{port} did not present the pinned certificate on a second handshake: {exc}") \
            from exc
    except OSError as exc:
        raise TlsError(f"could not reach {host}:{port} for TLS: {exc}") from exc
    names: list[tuple[str, str]] = [(str(entry[0]), str(entry[1])) for entry in cert.get("subjectAltName", ())]
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                names.append(("CN", str(attribute[1])))
    return names


def _matches(host: str, names: list[tuple[str, str]]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for kind, value in names:
        if ip is not None and kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return True
            except ValueError:
                continue
        if ip is None and kind == "DNS":
            if value.lower() == host.lower():
                return True
            if value.startswith("*.") and host.lower().partition(".")[2] == value[2:].lower():
                return True
    return False


def _override_name(names: list[tuple[str, str]]) -> str | None:
    for wanted in ("DNS", "IP Address", "CN"):
        for kind, value in names:
            if kind == wanted and not value.startswith("*"):
                return value
    return None


@dataclass(frozen=True)
class TlsSetup:
    """What the channels need: credentials (None for plain text) and extra channel options."""

    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, str]] = field(default_factory=list)
    describe: str = "plain text"


def setup_tls(host: str, port: int | None, *, tls: bool, ca_file: str | None, tls_fingerprint: str | None,
              server_name: str | None, timeout: float) -> TlsSetup:
    """The channel credentials for `host:port` from the TLS settings (fetches and checks a pinned certificate)."""
    options: list[tuple[str, str]] = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if not tls:
        if ca_file or tls_fingerprint:
            raise ValueError("ca_file and tls_fingerprint need TLS: drop tls=False")
        return TlsSetup(None, [], "plain text")
    if ca_file and tls_fingerprint:
        raise ValueError("give ca_file or tls_fingerprint, not both")
    if tls_fingerprint:
        if port is None:
            raise ValueError("tls_fingerprint needs a host:port address")
        want = normalize_fingerprint(tls_fingerprint)
        der = fetch_certificate(host, port, timeout)
        got = fingerprint(der)
        if not hmac.compare_digest(want, got):
            raise TlsMismatch(
                f"{host}:{port} presented a certificate with SHA-256 fingerprint {format_fingerprint(got)}, not the "
                f"pinned {format_fingerprint(want)}: this may not be your rover. If its certificate was renewed, "
                "pin the new fingerprint (`rover-safety gen-cert` prints it)")
        if not server_name:
            names = certificate_names(host, port, der, timeout)
            if not _matches(host, names):
                name = _override_name(names)
                if name is None:
                    raise TlsError(f"the pinned certificate of {host}:{port} carries no name; pass server_name=")
                options.append(("grpc.ssl_target_name_override", name))
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        return TlsSetup(grpc.ssl_channel_credentials(root_certificates=pem), options,
                        f"TLS pinned to {format_fingerprint(got)}")
    if ca_file:
        try:
            pem = Path(ca_file).expanduser().read_bytes()
        except OSError as exc:
            raise TlsError(f"cannot read ca_file {ca_file}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise TlsError(f"ca_file {ca_file} holds no PEM certificate")
        return TlsSetup(grpc.ssl_channel_credentials(root_certificates=pem), options, f"TLS verified by {ca_file}")
    return TlsSetup(grpc.ssl_channel_credentials(), options, "TLS verified by the system's roots")
