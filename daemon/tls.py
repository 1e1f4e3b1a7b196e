"""TLS for the daemon: the server's credentials from the configured files, and `gen-cert`'s self-signed
certificate for the rover's names and addresses."""

from __future__ import annotations

import datetime
import grp
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rover_safety.config import TlsFiles

from .errors import StartupError

CERT_DAYS = 3650


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"network.tls.{key}: cannot read {path}: {exc.strerror or exc}") from None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """The server's certificate and key, and with `client_ca_file` the CAs whose client certificates it requires."""
    cert, key = _read(tls.cert_file, "cert_file"), _read(tls.key_file, "key_file")
    try:
        x509.load_pem_x509_certificate(cert)
        serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise StartupError(f"network.tls: {tls.cert_file} / {tls.key_file} is not a PEM certificate and an "
                           f"unencrypted PEM key ({exc})") from None
    roots = _read(tls.client_ca_file, "client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=roots, require_client_auth=roots is not None)


def fingerprint(pem: bytes) -> str:
    """The SHA-256 of a certificate's DER, as `AB:CD:...` (what clients pin with --tls-fingerprint)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def local_names() -> tuple[list[str], list[str]]:
    """This machine's names (host name, NAME.local, localhost) and addresses (loopback and every global one)."""
    host = socket.gethostname().split(".")[0]
    names = sorted({host, f"{host}.local", socket.getfqdn(), "localhost"} - {""})
    addresses = {"127.0.0.1", "::1"}
    try:
        out = subprocess.run(["ip", "-json", "address", "show"], capture_output=True, text=True, timeout=5).stdout
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                if info.get("scope") == "global" and info.get("local"):
                    addresses.add(info["local"])
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return names, sorted(addresses)


def generate(directory: Path, names: list[str], addresses: list[str], days: int = CERT_DAYS,
             group: str | None = None) -> tuple[Path, Path]:
    """Write a self-signed certificate (cert.pem) and its ECDSA P-256 key (key.pem) into `directory`; the key is
    mode 0600, or 0640 readable by `group` (the daemon's user runs in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "rover-safety")])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    if group is not None:
        os.chown(key_path, -1, grp.getgrnam(group).gr_gid)
        key_path.chmod(0o640)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return cert_path, key_path
